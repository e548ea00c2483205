"""An instance's own port in the endpoint's gateway: each request read whole, then handed to the
gateway (``Answer``), which passes it to that instance; the answer goes back as the instance
gave it, and the connection closes after it, as a sync worker's own does.

On a bare asyncio protocol with httptools' parser instead of aiohttp's web server: this path
routes nothing and rewrites no answer, and aiohttp's request, response and handler machinery
was a quarter of the gateway's CPU per request on it (0.35 ms, 0.26 without: bench/RESULTS.md).
Reading the request whole before the instance sees it is the point of this hop: a client that
trickles its headers or body holds this process's memory, never a synchronous worker.
"""
import asyncio
import json
import logging
from email.utils import formatdate
from http import HTTPStatus
from typing import Awaitable, Callable, Dict, List, Optional, Set, Tuple

import httptools

from mlflow_deploy.online.upstream import Headers

__all__ = ["Answer", "serve_port", "own_answer", "MAX_HEAD_BYTES", "BODY_TOO_LARGE"]

log = logging.getLogger("mlflow_deploy.gateway")

#: the gateway's answer to one request read whole: (port, method, target, headers by lowercase
#: name, body) -> (status, headers, body)
Answer = Callable[[int, str, str, Dict[str, str], bytes], Awaitable[Tuple[int, Headers, bytes]]]
#: the request line and headers together, at most: past it, a 431 (gunicorn's own limits, 8 KB
#: a header, 100 headers, then apply to what is passed on)
MAX_HEAD_BYTES = 64 * 1024
#: how long a refused request's connection stays open for the rest of what the client sends
#: (read and dropped), after the answer and the end of our side: closed at once, the bytes still
#: coming would have the kernel reset the connection, and the client could lose the answer
LINGER_S = 2.0
#: the 413's message, on every port of the gateway
BODY_TOO_LARGE = "The request body is larger than this endpoint accepts ({} bytes)."
_HEAD_TOO_LARGE = (431, "The request's headers are larger than this endpoint accepts ({} "
                        "bytes).".format(MAX_HEAD_BYTES))
# the answer's framing is this hop's own: the body goes whole with its length, and the
# connection closes after it
_FRAMING = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})
_PHRASES = {status.value: status.phrase for status in HTTPStatus}


def own_answer(status: int, message: str, *headers: Tuple[str, str]
               ) -> Tuple[int, Headers, bytes]:
    """An answer of the gateway's own, in the JSON shape of its others (with a Date, which an
    instance's answers bring with them)."""
    return (status, [("Content-Type", "application/json"), ("Date", formatdate(usegmt=True)),
                     *headers], json.dumps({"message": message}).encode())


async def serve_port(answer: Answer, host: str, port: int, max_body: Callable[[], int],
                     in_flight: Set[asyncio.Task]) -> asyncio.AbstractServer:
    """Listen on ``port``; each complete request's task is in ``in_flight`` until answered.
    ``max_body`` gives the largest body accepted now (the routing table's, which a reload
    changes). Raises OSError when the port is taken."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Connection(answer, port, max_body, in_flight),
                                    host, port, reuse_address=True)


class _Connection(asyncio.Protocol):
    """One client connection: one request, its answer, then the connection closes (a request
    after the first, pipelined, is not answered)."""

    def __init__(self, answer: Answer, port: int, max_body: Callable[[], int],
                 in_flight: Set[asyncio.Task]):
        self.answer, self.port, self.in_flight = answer, port, in_flight
        self.max_body = max_body()
        self.transport: Optional[asyncio.Transport] = None
        self.parser = httptools.HttpRequestParser(self)
        self.method = self.target = b""
        self.headers: Dict[str, str] = {}
        self.body: List[bytes] = []
        self.received = self.head_bytes = self.body_bytes = 0
        self.headers_done = self.complete = self.answered = False
        self.refusal: Optional[Tuple[int, str]] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.complete or self.answered:
            return
        if not self.headers_done:
            self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # an Upgrade header: no protocol switch here, the request goes on as HTTP
        except httptools.HttpParserCallbackError:
            pass  # a refusal set by a callback below
        except httptools.HttpParserError:
            self.refusal = self.refusal or (400, "The request is not valid HTTP/1.1.")
        if self.refusal is None and not self.headers_done and self.received > MAX_HEAD_BYTES:
            self.refusal = _HEAD_TOO_LARGE  # a line that never ends: the parser buffers it
        if self.refusal is not None:
            self._write(*own_answer(*self.refusal), linger=True)
        elif self.complete:
            self.transport.pause_reading()
            task = asyncio.get_running_loop().create_task(self._pass())
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    # httptools' callbacks; past the first request's end (a client that pipelines) they do
    # nothing: only the first is answered, and the connection's close tells the client to send
    # the others again
    def on_url(self, url: bytes) -> None:
        if self.complete:
            return
        self.target += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:
            return
        # latin-1: every byte as it came, and back to the same bytes on the instance's hop
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self._count_head(len(name) + len(value) + 4)

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            self._refuse(*_HEAD_TOO_LARGE)

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        self.headers_done = True
        self.method = self.parser.get_method()  # the parser's is the last request's
        try:
            length = int(self.headers.get("content-length", 0))
        except ValueError:
            length = 0  # the parser refuses a Content-Length that is not a number
        if length > self.max_body:
            self._refuse(*self._body_too_large())
        if self.headers.get("expect", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.body_bytes += len(body)
        if self.body_bytes > self.max_body:  # chunked: no length to refuse it by beforehand
            self._refuse(*self._body_too_large())
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    def _body_too_large(self) -> Tuple[int, str]:
        return 413, BODY_TOO_LARGE.format(self.max_body)

    def _refuse(self, status: int, message: str) -> None:
        self.refusal = (status, message)
        raise ValueError(message)  # stops the parser: feed_data raises HttpParserCallbackError

    async def _pass(self) -> None:
        try:
            status, headers, body = await self.answer(
                self.port, self.method.decode("latin-1"),
                self.target.decode("latin-1"), self.headers, b"".join(self.body))
        except Exception:  # a bug of the gateway's: the client still gets an answer
            log.exception("port %d: the request was not passed on", self.port)
            status, headers, body = own_answer(502, "The gateway could not pass the request "
                                                    "on.")
        self._write(status, headers, body)

    def _write(self, status: int, headers: Headers, body: bytes, linger: bool = False) -> None:
        self.answered = True
        lines = ["HTTP/1.1 {} {}".format(status, _PHRASES.get(status, ""))]
        lines.extend("{}: {}".format(name, value) for name, value in headers
                     if name.lower() not in _FRAMING)
        length = str(len(body))
        if self.method == b"HEAD":  # the length of the body a GET would get, and no body
            length = next((v for k, v in headers if k.lower() == "content-length"), length)
            body = b""
        lines.append("Content-Length: " + length)
        lines.append("Connection: close")
        self.transport.writelines([("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), body])
        if linger and self.transport.can_write_eof():
            self.transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()
