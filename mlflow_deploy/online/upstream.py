"""HTTP/1.1 exchanges between the gateway and a scoring server instance.

Written by hand, on a bare asyncio protocol, because this hop is most of what the gateway costs
and no library fits it: aiohttp's client spent its time on machinery this hop never uses (the
gateway's CPU per request fell from 0.95-1.71 ms with it to 0.45-1.04 ms with asyncio's streams,
and the protocol takes 0.02 ms less per exchange than the streams: bench/RESULTS.md). A request
has a Content-Length; its answer is read by its Content-Length or its chunks (Flask's framing of
a streamed body), else to the end of the stream.

Scoring goes through an instance's ``Pool``: each of the instance's workers keeps one connection
open between requests (scoring/worker.py), and a request goes on one of those that is idle
where there is one and no request is in flight on a new connection (opening a connection for
each request was an eighth of the gateway's CPU). Probes, the metrics scrape and the gateway's
own page use ``exchange``: one connection a request.
"""

import asyncio
import os
from typing import Dict, List, Optional, Tuple

__all__ = ["exchange", "Pool", "Unreachable", "Unanswered", "TimedOut", "Headers", "header"]

Headers = List[Tuple[str, str]]
_SUN_PATH = 108  # bytes in a Unix socket address, its final NUL included (Linux)


class Unreachable(ConnectionError):
    """The instance refused the connection: it never saw the request (another may take it)."""


class TimedOut(Exception):
    """The instance's answer did not come in the time the exchange was given."""


class _Connection(asyncio.Protocol):
    """One connection to an instance and the answer it is waiting for: complete as soon as its
    framing says so. A bare protocol rather than asyncio's streams, whose reader, writer and
    their futures cost 0.02 ms more per exchange (about 15 % of it).

    A connection used once (``exchange``) says ``Connection: close`` and sends its end of
    stream after the request: gunicorn's sync worker, its answer written, waits up to 2 s for
    that end before it takes its next request (waiting for the worker's close instead left a
    worker idle a fifth of its time); it closes with the answer's last byte. A kept one
    (``Pool``) stays open after an answer that allows it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.transport: Optional[asyncio.Transport] = None
        self.answer: "Optional[asyncio.Future[Tuple[int, Headers, bytes]]]" = None
        self.keeps = False  # the last answer allows the next request on this connection

    def expect(self, bodiless: bool) -> "asyncio.Future[Tuple[int, Headers, bytes]]":
        """Start waiting for the answer to the request about to be sent."""
        self.bodiless = bodiless
        self.chunks: List[bytes] = []
        self.received = 0
        self.head: Optional[Tuple[int, Headers, Optional[int], bool, bool]] = None
        self.head_size = 0
        self.keeps = False
        self.answer = self.loop.create_future()
        return self.answer

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.answer is None or self.answer.done():
            # bytes no request asked for: nothing more on this connection can be trusted
            self.transport.close()
            return
        self.chunks.append(data)
        self.received += len(data)
        if self.head is None and not self._read_head():
            return
        _, _, length, chunked, _ = self.head
        if chunked or length is not None and self.received >= self.head_size + length:
            self._complete()

    def _read_head(self) -> bool:
        data = b"".join(self.chunks)
        self.chunks = [data]
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return False
        try:
            status, headers, length, chunked, closes = _head(data[:end])
        except ConnectionError as exc:
            self._fail(exc)
            return False
        if self.bodiless:  # a HEAD's Content-Length is that of a body not sent
            length, chunked = 0, False
        self.head = status, headers, length, chunked, closes
        self.head_size = end + 4
        return True

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost completes or fails the answer

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.answer is None or self.answer.done():
            return
        if self.received == 0:  # closed, or reset (a request left unread resets a Unix socket)
            self.answer.set_exception(Unanswered(
                "the instance closed the connection before any byte of its answer"))
        elif exc is not None:
            self.answer.set_exception(exc)
        elif self.head is None and not self._read_head():
            if not self.answer.done():
                self._fail(ConnectionError("the instance closed the connection before its "
                                           "answer's headers"))
        else:
            self._complete(at_end=True)

    def _complete(self, at_end: bool = False) -> None:
        """The answer from what came, once it is whole (by its framing, or at the end of the
        stream: ``at_end``)."""
        status, headers, length, chunked, closes = self.head
        data = b"".join(self.chunks)
        self.chunks = [data]
        rest = data[self.head_size:]
        try:
            if chunked:
                unchunked = _unchunk(rest)
                if unchunked is None:
                    if not at_end:
                        return  # more chunks to come
                    raise ConnectionError("the instance closed the connection in a chunked "
                                          "body")
                body, taken = unchunked
            elif length is not None:
                if len(rest) < length:
                    raise ConnectionError("the instance closed the connection in its answer's "
                                          "body")
                body, taken = rest[:length], length
            else:
                body, taken = rest, len(rest)
        except (ConnectionError, ValueError) as exc:  # a chunk size that is no number
            self._fail(exc)
            return
        self.chunks = []
        # framed, and nothing came past the answer: the connection can take another request
        self.keeps = not (closes or at_end or len(rest) > taken)
        self.answer.set_result((status, headers, body))
        if not self.keeps:
            self.transport.close()  # a sync worker waits for this close before its next request

    def _fail(self, exc: Exception) -> None:
        self.answer.set_exception(exc)
        self.transport.close()

    def time_out(self) -> None:
        if self.answer is not None and not self.answer.done():
            self._fail(TimedOut())

    def send(self, method: str, path: str, headers: Dict[str, str], body: bytes,
             once: bool) -> None:
        head = ["{} {} HTTP/1.1".format(method, path), "Host: localhost",
                "Content-Length: {}".format(len(body))]
        if once:
            head.append("Connection: close")
        head.extend("{}: {}".format(name, value) for name, value in headers.items())
        # not concatenated: a 1000-row body is 200 KB to copy
        self.transport.writelines([("\r\n".join(head) + "\r\n\r\n").encode("latin-1"), body])


class Unanswered(ConnectionError):
    """The connection closed before any byte of the answer: where it was a kept connection, the
    worker closed it idle (it stops, or was recycled) as the request was sent, and never read
    it."""


async def exchange(address: str, method: str, path: str, headers: Dict[str, str],
                   body: bytes, end_stream: bool = True, timeout_s: Optional[float] = None
                   ) -> Tuple[int, Headers, bytes]:
    """Send one request to ``address`` ("http://HOST:PORT" or "unix:/PATH") on a connection of
    its own; return the status, the headers (as sent, in order) and the body. Raises Unreachable
    when the connection is refused, ConnectionError (or OSError) when it breaks before a
    complete answer, TimedOut when the answer is not complete ``timeout_s`` after the connection
    (None: no limit). ``end_stream=False`` for a server that takes the end of the request's
    stream for the client gone (aiohttp's: the gateway's own internal app).

    The limit is a timer of the loop that fails the answer, not ``asyncio.timeout``, whose
    cancellation of the calling task cost a scoring request 3 % of the gateway's CPU; it starts
    once connected, as a connection is made or refused at once on a Unix socket or a local
    port."""
    connection = await _connect(asyncio.get_running_loop(), address)
    try:
        return await _ask(connection, method, path, headers, body, timeout_s, once=True,
                          end_stream=end_stream)
    finally:
        connection.transport.close()


async def _ask(connection: _Connection, method: str, path: str, headers: Dict[str, str],
               body: bytes, timeout_s: Optional[float], once: bool, end_stream: bool = True
               ) -> Tuple[int, Headers, bytes]:
    """One request on ``connection`` and its answer. Where the answer never comes (it timed
    out, or the caller was cancelled) the connection is closed at once, and a late error of it
    kept from an answer nobody awaits."""
    answer = connection.expect(bodiless=method == "HEAD")
    timer = None if timeout_s is None else connection.loop.call_later(timeout_s,
                                                                      connection.time_out)
    try:
        connection.send(method, path, headers, body, once)
        # a connection used once has nothing more to send: its end of stream is there when the
        # worker, its answer written, waits for it (see _Connection)
        if once and end_stream and connection.transport.can_write_eof():
            connection.transport.write_eof()
        return await answer
    finally:
        if not answer.done():
            answer.cancel()
            connection.transport.close()
        connection.answer = None
        if timer is not None:
            timer.cancel()


class Pool:
    """The connections kept open to one instance: a request goes on the one idle last, else on
    a new connection, which its worker keeps if it keeps none yet (scoring/worker.py).

    A kept connection is bound to its worker, which may be busy with a new connection's request
    while another worker is free: so none is used while such a request is in flight (see
    ``Pool.exchange``). Measured against using any idle one (bench/RESULTS.md, 2 workers): beside
    requests of 300 ms, short ones' p99 fell from 25-27 to 15-16 ms and their longest wait
    from up to 307 to 20-24 ms; with all requests short, the gateway's CPU per request rose
    3-6 % at 8 clients and 9-14 % at 32 (its connections' saving there mostly given up). Holding
    requests in the gateway until a worker's kept connection was free instead cost 11 % of
    requests/s at 8 clients (each worker then waited for the gateway between its requests)."""

    def __init__(self, address: str):
        self.address = address
        self.idle: List[_Connection] = []
        self.closed = False
        self.opened = 0  # requests in flight on connections opened for them

    async def exchange(self, method: str, path: str, headers: Dict[str, str], body: bytes,
                       timeout_s: Optional[float] = None) -> Tuple[int, Headers, bytes]:
        """As ``exchange``, on this instance's connections. A request whose kept connection
        closes before any byte of its answer is sent again on a new connection: the worker
        closed it idle (it stops, or was recycled) and never read the request.

        No kept connection is used while a request is in flight on a new one: a worker may be
        answering that one while its kept connection waits here, idle, and a request sent there
        would wait behind it even where another worker is free; a new connection waits in the
        socket's queue for whichever worker is free first."""
        connection = None if self.opened else self._kept()
        if connection is not None:
            try:
                return await self._send(connection, method, path, headers, body, timeout_s)
            except Unanswered:
                pass
        self.opened += 1
        try:
            # the running loop asked only here: on Python 3.11 each asking is a getpid() call
            connection = await _connect(asyncio.get_running_loop(), self.address)
            return await self._send(connection, method, path, headers, body, timeout_s)
        finally:
            self.opened -= 1

    async def _send(self, connection: _Connection, method: str, path: str,
                    headers: Dict[str, str], body: bytes, timeout_s: Optional[float]
                    ) -> Tuple[int, Headers, bytes]:
        result = await _ask(connection, method, path, headers, body, timeout_s, once=False)
        if connection.keeps and connection.is_open and not self.closed:
            self.idle.append(connection)
        else:
            connection.transport.close()
        return result

    def _kept(self) -> Optional[_Connection]:
        """The connection idle last that is still open (a worker closes its own when it
        stops), or None."""
        while self.idle:
            connection = self.idle.pop()
            if connection.is_open:
                return connection
        return None

    def close(self) -> None:
        """Close the idle connections, and each busy one once answered: the instance is no
        longer routed to."""
        self.closed = True
        for connection in self.idle:
            connection.transport.close()
        self.idle = []


async def _connect(loop: asyncio.AbstractEventLoop, address: str) -> _Connection:
    connection = _Connection(loop)
    try:
        if address.startswith("unix:"):
            await _open_unix(loop, connection, address[len("unix:"):])
        else:
            host, _, port = address[len("http://"):].rstrip("/").rpartition(":")
            await loop.create_connection(lambda: connection, host, int(port))
    except (ConnectionRefusedError, FileNotFoundError) as exc:
        raise Unreachable(str(exc)) from None
    return connection


def header(headers: Headers, name: str) -> Optional[str]:
    """The value of header ``name`` (lowercase) among an answer's headers, or None."""
    return next((v for k, v in headers if k.lower() == name), None)


async def _open_unix(loop: asyncio.AbstractEventLoop, protocol: _Connection, path: str):
    if len(path.encode()) < _SUN_PATH:
        return await loop.create_unix_connection(lambda: protocol, path)
    # a deep home makes a longer path than a Unix socket address holds: go through the folder
    folder = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
    try:
        return await loop.create_unix_connection(
            lambda: protocol, "/proc/self/fd/{}/{}".format(folder, os.path.basename(path)))
    finally:
        os.close(folder)


def _head(head: bytes) -> Tuple[int, Headers, Optional[int], bool, bool]:
    """The status, the headers (as sent, in order), the Content-Length (None without one),
    whether the body is chunked and whether the connection closes after it, of an answer's
    head (its bytes before the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise ConnectionError("the instance's answer has no status line") from None
    headers: Headers = []
    length, chunked = None, False
    connection = "keep-alive" if lines[0].startswith("HTTP/1.1") else "close"
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
        elif lowered == "connection":
            connection = value.lower()
        headers.append((name, value))
    if status in (204, 304):
        length, chunked = 0, False
    return status, headers, length, chunked, "close" in connection


def _unchunk(data: bytes) -> Optional[Tuple[bytes, int]]:
    """The body of a chunked answer's ``data`` and the bytes it took, or None while it is not
    whole; ValueError for a chunk size that is no number."""
    out, position = [], 0
    while True:
        end = data.find(b"\r\n", position)
        if end < 0:
            return None
        size = int(data[position:end].split(b";", 1)[0], 16)
        if size == 0:  # the last chunk, then trailer fields (none, usually) and a blank line
            finish = data.find(b"\r\n\r\n", end)
            return None if finish < 0 else (b"".join(out), finish + 4)
        if len(data) < end + 2 + size + 2:
            return None
        out.append(data[end + 2:end + 2 + size])
        position = end + 2 + size + 2
