"""One HTTP/1.1 exchange between the gateway and a scoring server instance.

Written by hand, on a bare asyncio protocol, because this hop is most of what the gateway costs
and no library fits it: a scoring server's sync gunicorn workers answer one request per
connection and close it, so there is no connection to pool or keep alive, and aiohttp's client
spends its time on machinery this hop never uses (the gateway's CPU per request fell from
0.95-1.71 ms with it to 0.45-1.04 ms with asyncio's streams, and the protocol takes 0.02 ms
less per exchange than the streams: bench/RESULTS.md). The exchange is the simplest HTTP/1.1
has: a request with Content-Length and ``Connection: close``, then the answer read to the end
of the stream. The answer's framing is still honoured (Content-Length, or chunked, which Flask
uses for a streamed body).
"""

import asyncio
import os
from typing import Dict, List, Optional, Tuple

__all__ = ["exchange", "Unreachable"]

Headers = List[Tuple[str, str]]
_SUN_PATH = 108  # bytes in a Unix socket address, its final NUL included (Linux)


class Unreachable(ConnectionError):
    """The instance refused the connection: it never saw the request (another may take it)."""


class _Exchange(asyncio.Protocol):
    """One connection's answer, gathered until the instance closes it: a bare protocol rather
    than asyncio's streams, whose reader, writer and their futures cost 0.02 ms more per
    exchange (about 15 % of it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.chunks: List[bytes] = []
        self.answer: "asyncio.Future[bytes]" = loop.create_future()

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def eof_received(self) -> bool:
        return False  # the answer is complete: the transport closes, connection_lost follows

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.answer.done():
            return
        if exc is None:
            self.answer.set_result(b"".join(self.chunks))
        else:
            self.answer.set_exception(exc)


async def exchange(address: str, method: str, path: str, headers: Dict[str, str],
                   body: bytes) -> Tuple[int, Headers, bytes]:
    """Send one request to ``address`` ("http://HOST:PORT" or "unix:/PATH"); return the status,
    the headers (as sent, in order) and the body. Raises Unreachable when the connection is
    refused, ConnectionError (or OSError) when it breaks before a complete answer."""
    loop = asyncio.get_running_loop()
    protocol = _Exchange(loop)
    try:
        if address.startswith("unix:"):
            transport, _ = await _open_unix(loop, protocol, address[len("unix:"):])
        else:
            host, _, port = address[len("http://"):].rstrip("/").rpartition(":")
            transport, _ = await loop.create_connection(lambda: protocol, host, int(port))
    except (ConnectionRefusedError, FileNotFoundError) as exc:
        raise Unreachable(str(exc)) from None
    try:
        head = ["{} {} HTTP/1.1".format(method, path), "Host: localhost",
                "Content-Length: {}".format(len(body)), "Connection: close"]
        head.extend("{}: {}".format(name, value) for name, value in headers.items())
        # not concatenated: a 1000-row body is 200 KB to copy
        transport.writelines([("\r\n".join(head) + "\r\n\r\n").encode("latin-1"), body])
        answer = await protocol.answer  # to the end: the worker closes after its answer
    finally:
        # where the answer never came (a timeout cancelled this): the connection closed at
        # once, and a late error of it kept from an answer nobody awaits
        protocol.answer.cancel()
        transport.close()
    return _parse(answer, bodiless=method == "HEAD")


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


def _parse(answer: bytes, bodiless: bool = False) -> Tuple[int, Headers, bytes]:
    """(status, headers, body) of a whole answer; ``bodiless`` for the answer to a HEAD, whose
    Content-Length is the length of a body that is not sent."""
    head, separator, rest = answer.partition(b"\r\n\r\n")
    if not separator:
        raise ConnectionError("the instance closed the connection before its answer's headers")
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
            length = int(value)
        elif lowered == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        headers.append((name, value))
    if bodiless or status in (204, 304):
        return status, headers, b""
    if chunked:
        return status, headers, _unchunk(rest)
    if length is not None:
        if len(rest) < length:
            raise ConnectionError("the instance closed the connection in its answer's body")
        return status, headers, rest[:length]
    return status, headers, rest


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
