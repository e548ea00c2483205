"""One HTTP/1.1 exchange between the gateway and a scoring server instance.

Written by hand, on a bare asyncio protocol, because this hop is most of what the gateway costs
and no library fits it: a scoring server's sync gunicorn workers answer one request per
connection and close it, so there is no connection to pool or keep alive, and aiohttp's client
spends its time on machinery this hop never uses (the gateway's CPU per request fell from
0.95-1.71 ms with it to 0.45-1.04 ms with asyncio's streams, and the protocol takes 0.02 ms
less per exchange than the streams: bench/RESULTS.md). The exchange is the simplest HTTP/1.1
has: a request with Content-Length and ``Connection: close``, then the answer, read by its
Content-Length, else to the end of the stream (a chunked body, which Flask uses for a streamed
one, is decoded there).
"""

import asyncio
import os
from typing import Dict, List, Optional, Tuple

__all__ = ["exchange", "Unreachable", "TimedOut", "Headers", "header"]

Headers = List[Tuple[str, str]]
_SUN_PATH = 108  # bytes in a Unix socket address, its final NUL included (Linux)


class Unreachable(ConnectionError):
    """The instance refused the connection: it never saw the request (another may take it)."""


class TimedOut(Exception):
    """The instance's answer did not come in the time the exchange was given."""


class _Exchange(asyncio.Protocol):
    """One connection's answer: complete as soon as its Content-Length is in (then the
    connection is closed at once), else when the instance closes it. A bare protocol rather
    than asyncio's streams, whose reader, writer and their futures cost 0.02 ms more per
    exchange (about 15 % of it).

    A gunicorn sync worker (26 here), its answer written, half-closes and waits up to 2 s for
    this side's end of stream before it takes its next request: this side sends its end right
    after the request (``exchange``) and closes with the answer's last byte. Waiting for the
    worker's close instead left a worker idle a fifth of its time (py-spy, 1 row, 4 clients)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, bodiless: bool):
        self.bodiless = bodiless
        self.chunks: List[bytes] = []
        self.received = 0
        self.head: Optional[Tuple[int, Headers, Optional[int], bool]] = None
        self.head_size = 0
        self.answer: "asyncio.Future[Tuple[int, Headers, bytes]]" = loop.create_future()
        self.transport: Optional[asyncio.BaseTransport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            return  # bytes past the answer's length: not the answer's
        self.chunks.append(data)
        self.received += len(data)
        if self.head is None and not self._read_head():
            return
        _, _, length, chunked = self.head
        if length is not None and not chunked and self.received >= self.head_size + length:
            self._complete()

    def _read_head(self) -> bool:
        data = b"".join(self.chunks)
        self.chunks = [data]
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return False
        try:
            status, headers, length, chunked = _head(data[:end])
        except ConnectionError as exc:
            self._fail(exc)
            return False
        if self.bodiless:  # a HEAD's Content-Length is that of a body not sent
            length, chunked = 0, False
        self.head = status, headers, length, chunked
        self.head_size = end + 4
        return True

    def eof_received(self) -> bool:
        return False  # the answer is complete: the transport closes, connection_lost follows

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.answer.done():
            return
        if exc is not None:
            self.answer.set_exception(exc)
        elif self.head is None and not self._read_head():
            if not self.answer.done():
                self._fail(ConnectionError("the instance closed the connection before its "
                                           "answer's headers"))
        else:
            self._complete()

    def _complete(self) -> None:
        """The answer from what came (the whole of it, or all there will be)."""
        status, headers, length, chunked = self.head
        rest = b"".join(self.chunks)[self.head_size:]
        try:
            if chunked:
                body = _unchunk(rest)
            elif length is not None:
                if len(rest) < length:
                    raise ConnectionError("the instance closed the connection in its answer's "
                                          "body")
                body = rest[:length]
            else:
                body = rest
        except (ConnectionError, ValueError) as exc:  # a chunk size that is no number
            self._fail(exc)
            return
        self.answer.set_result((status, headers, body))
        self.transport.close()  # the instance waits for this close before its next request

    def _fail(self, exc: Exception) -> None:
        self.answer.set_exception(exc)
        self.transport.close()

    def time_out(self) -> None:
        if not self.answer.done():
            self._fail(TimedOut())


async def exchange(address: str, method: str, path: str, headers: Dict[str, str],
                   body: bytes, end_stream: bool = True, timeout_s: Optional[float] = None
                   ) -> Tuple[int, Headers, bytes]:
    """Send one request to ``address`` ("http://HOST:PORT" or "unix:/PATH"); return the status,
    the headers (as sent, in order) and the body. Raises Unreachable when the connection is
    refused, ConnectionError (or OSError) when it breaks before a complete answer, TimedOut
    when the answer is not complete ``timeout_s`` after the connection (None: no limit).
    ``end_stream=False`` for a server that takes the end of the request's stream for the
    client gone (aiohttp's: the gateway's own internal app).

    The limit is a timer of the loop that fails the answer, not ``asyncio.timeout``, whose
    cancellation of the calling task cost a scoring request 3 % of the gateway's CPU; it starts
    once connected, as a connection is made or refused at once on a Unix socket or a local
    port."""
    loop = asyncio.get_running_loop()
    protocol = _Exchange(loop, bodiless=method == "HEAD")
    try:
        if address.startswith("unix:"):
            transport, _ = await _open_unix(loop, protocol, address[len("unix:"):])
        else:
            host, _, port = address[len("http://"):].rstrip("/").rpartition(":")
            transport, _ = await loop.create_connection(lambda: protocol, host, int(port))
    except (ConnectionRefusedError, FileNotFoundError) as exc:
        raise Unreachable(str(exc)) from None
    timer = None if timeout_s is None else loop.call_later(timeout_s, protocol.time_out)
    try:
        head = ["{} {} HTTP/1.1".format(method, path), "Host: localhost",
                "Content-Length: {}".format(len(body)), "Connection: close"]
        head.extend("{}: {}".format(name, value) for name, value in headers.items())
        # not concatenated: a 1000-row body is 200 KB to copy
        transport.writelines([("\r\n".join(head) + "\r\n\r\n").encode("latin-1"), body])
        # nothing more to send: the end of stream is there when the worker, its answer
        # written, waits for it (see _Exchange)
        if end_stream and transport.can_write_eof():
            transport.write_eof()
        return await protocol.answer
    finally:
        # where the answer never came (it timed out, or the caller was cancelled): the
        # connection closed at once, and a late error of it kept from an answer nobody awaits
        protocol.answer.cancel()
        transport.close()
        if timer is not None:
            timer.cancel()


def header(headers: Headers, name: str) -> Optional[str]:
    """The value of header ``name`` (lowercase) among an answer's headers, or None."""
    return next((v for k, v in headers if k.lower() == name), None)


async def _open_unix(loop: asyncio.AbstractEventLoop, protocol: _Exchange, path: str):
    if len(path.encode()) < _SUN_PATH:
        return await loop.create_unix_connection(lambda: protocol, path)
    # a deep home makes a longer path than a Unix socket address holds: go through the folder
    folder = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
    try:
        return await loop.create_unix_connection(
            lambda: protocol, "/proc/self/fd/{}/{}".format(folder, os.path.basename(path)))
    finally:
        os.close(folder)


def _head(head: bytes) -> Tuple[int, Headers, Optional[int], bool]:
    """The status, the headers (as sent, in order), the Content-Length (None without one) and
    whether the body is chunked, of an answer's head (its bytes before the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise ConnectionError("the instance's answer has no status line") from None
    headers: Headers = []
    length, chunked = None, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        lowered = name.lower()
        if lowered == "content-length":
            try:
                length = int(value)
            except ValueError:
                raise ConnectionError("the instance's answer has a malformed Content-Length") \
                    from None
        elif lowered == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        headers.append((name, value))
    if status in (204, 304):
        length, chunked = 0, False
    return status, headers, length, chunked


def _unchunk(data: bytes) -> bytes:
    out, position = [], 0
    while True:
        end = data.find(b"\r\n", position)
        if end < 0:
            raise ConnectionError("the instance closed the connection in a chunked body")
        size = int(data[position:end].split(b";", 1)[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        position = end + 2 + size + 2
