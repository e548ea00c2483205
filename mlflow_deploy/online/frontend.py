"""The gateway's HTTP/1.1 server side, on every port it listens on: each request read whole,
then handed to the gateway (a ``Handler``); its answer is written with a Content-Length.

- On the endpoint's port, connections are kept alive (HTTP/1.1's default; a client's
  ``Connection: close``, an HTTP/1.0 client without keep-alive, or an answer carrying
  ``Connection: close`` ends one), and requests a client pipelines are answered in order.
- On an instance's own port, the connection closes after the first answer, as a sync worker's
  own does (a request pipelined behind it is not answered: the close tells the client to send
  it again).
- On both, answers go no faster than the client reads them, and a request the client's end of
  stream cuts short is a 400 (a whole one before it is still answered).

On a bare asyncio protocol with httptools' parser instead of aiohttp's web server: aiohttp's
request, response, router and middleware machinery was a quarter of the gateway's CPU per
request (0.35 ms with it, 0.26 without, on an instance's port: bench/RESULTS.md), and the gateway
needs none of it on this path. Reading the request whole before an instance sees it is the point
of the gateway: a client that trickles its headers or body holds this process's memory, never a
synchronous worker.
"""
import asyncio
import collections
import json
import logging
import os
from email.utils import formatdate
from http import HTTPStatus
from typing import Awaitable, Callable, Deque, Dict, List, NamedTuple, Optional, Set, Tuple, Union

import httptools

from mlflow_deploy.online.upstream import Headers, header

__all__ = ["Request", "Answer", "Handler", "serve_port", "own_answer", "MAX_HEAD_BYTES",
           "BODY_TOO_LARGE", "IDLE_ENV"]

log = logging.getLogger("mlflow_deploy.gateway")


class Request(NamedTuple):
    """A request read whole. Header names are lowercase (a name sent twice has its values
    joined by ", ", as RFC 9110 allows), decoded as latin-1: every byte as it came, and back to
    the same bytes on the instance's hop."""

    method: str
    target: str
    headers: Dict[str, str]
    body: bytes
    keep_alive: bool  # what the client's request allows (its version and Connection header)


#: an answer: status, headers, body. A ``Connection: close`` among the headers closes the
#: connection after it; any other framing header is replaced by this module's own
Answer = Tuple[int, Headers, bytes]
Handler = Callable[[Request], Awaitable[Answer]]
#: the request line and headers together, at most: past it, a 431 (gunicorn's own limits, 8 KB
#: a header, 100 headers, then apply to what is passed on)
MAX_HEAD_BYTES = 64 * 1024
#: how long a refused request's connection stays open for the rest of what the client sends
#: (read and dropped), after the answer and the end of our side: closed at once, the bytes still
#: coming would have the kernel reset the connection, and the client could lose the answer
LINGER_S = 2.0
#: how long a connection may wait for its next request (aiohttp's keep-alive timeout, which the
#: endpoint's port had before), or for its client to read the answers sent: an idle client holds
#: a socket and some memory, not forever (``IDLE_ENV`` sets another, in seconds: for tests)
IDLE_ENV = "MLFLOW_DEPLOY_GATEWAY_IDLE_S"
IDLE_S = float(os.environ.get(IDLE_ENV) or 75.0)
#: the 413's message, on every port of the gateway
BODY_TOO_LARGE = "The request body is larger than this endpoint accepts ({} bytes)."
#: the 400 of a request the client's end of stream cut short
INCOMPLETE = "The connection closed before the request was complete."
_HEAD_TOO_LARGE = (431, "The request's headers are larger than this endpoint accepts ({} "
                        "bytes).".format(MAX_HEAD_BYTES))
_FRAMING = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})
_PHRASES = {status.value: status.phrase for status in HTTPStatus}


def own_answer(status: int, message: str, *headers: Tuple[str, str]) -> Answer:
    """An answer of the gateway's own, in the JSON shape of its others (with a Date, which an
    instance's answers bring with them)."""
    return (status, [("Content-Type", "application/json"), ("Date", formatdate(usegmt=True)),
                     *headers], json.dumps({"message": message}).encode())


async def serve_port(handler: Handler, host: str, port: int, max_body: Callable[[], int],
                     in_flight: Set[asyncio.Task], keep_alive: Callable[[], bool],
                     refused: Optional[Callable[[int], None]] = None) -> asyncio.AbstractServer:
    """Listen on ``port``; each connection's task answering its requests is in ``in_flight``
    while it runs. ``max_body`` gives the largest body accepted now (the routing table's, which
    a reload changes); ``keep_alive`` whether a connection may now be kept after an answer
    (never on an instance's port; not once the gateway is stopping); ``refused`` is told the
    status of each request this module refuses itself (400, 413, 431), which the handler never
    sees. Raises OSError when the port is taken."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _Connection(handler, max_body, in_flight, keep_alive, refused), host, port,
        reuse_address=True)


class _Refusal(NamedTuple):
    """The gateway's own answer to what cannot be passed on; the connection ends after it."""

    status: int
    message: str


class _Connection(asyncio.Protocol):
    """One client connection: its requests parsed as they come, answered in order by one task
    at a time; reading pauses when more comes while a request is answered, and while answers
    wait for the client to read them, so a client can pile up neither work nor answers here.
    Paused only then, not for every request: a client that waits for each answer (most do)
    costs no pause and resume, two changes of the event loop's polling, a request."""

    def __init__(self, handler: Handler, max_body: Callable[[], int],
                 in_flight: Set[asyncio.Task], keep_alive: Callable[[], bool],
                 refused: Optional[Callable[[int], None]]):
        self.handler, self.in_flight, self.keep_alive = handler, in_flight, keep_alive
        self.refused = refused
        self.max_body_now = max_body
        self.transport: Optional[asyncio.Transport] = None
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.waiting: Deque[Union[Request, _Refusal]] = collections.deque()
        self.answering: Optional[asyncio.Task] = None
        # one timer a connection, not one a request: it closes the connection once it has
        # waited IDLE_S for a request since ``idle_since`` (None while one is read or answered)
        self.idle: Optional[asyncio.TimerHandle] = None
        self.idle_since: Optional[float] = None
        self.ended = False  # nothing more is read: the last request to answer is in waiting
        # set while the client reads slower than it is answered (asyncio's flow control): no
        # more is answered, nor read, until it has caught up
        self.drained: Optional[asyncio.Future] = None
        self._new_request()

    def _new_request(self) -> None:
        self.max_body = self.max_body_now()  # each request's: a reload applies to the next one
        self.target = b""
        self.headers: Dict[str, str] = {}
        self.body: List[bytes] = []
        self.received = self.head_bytes = self.body_bytes = 0
        self.headers_done = self.begun = False
        self.refusal: Optional[_Refusal] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._wait_idle()

    def eof_received(self) -> bool:
        """The client sent its last byte: what it sent whole is still answered (a client may
        half-close after its request), a request cut short gets a 400; the connection closes
        after the last answer."""
        if not self.ended:
            self.ended = True
            if self.begun:
                self.waiting.append(_Refusal(400, INCOMPLETE))
            self._answer_waiting()
        return self.answering is not None  # else asyncio closes the connection

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.ended = True
        if self.idle is not None:
            self.idle.cancel()
        self.resume_writing()

    def pause_writing(self) -> None:
        self.drained = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.drained = None

    def _wait_idle(self) -> None:
        self.idle_since = self.loop.time()
        if self.idle is None:
            self.idle = self.loop.call_later(IDLE_S, self._close_if_idle)

    def _close_if_idle(self) -> None:
        self.idle = None
        if self.idle_since is None:
            return  # busy: idle again, it waits again
        left = self.idle_since + IDLE_S - self.loop.time()
        if left <= 0:
            self.transport.close()
        else:
            self.idle = self.loop.call_later(left, self._close_if_idle)

    def data_received(self, data: bytes) -> None:
        if self.ended:
            return
        self.idle_since = None
        if self.answering is not None and self.transport.is_reading():
            self.transport.pause_reading()
        if not self.headers_done:
            self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # an Upgrade header: no protocol switch here, the request goes on as HTTP
        except httptools.HttpParserCallbackError:
            pass  # a refusal set by a callback below
        except httptools.HttpParserError:
            self.refusal = self.refusal or _Refusal(400, "The request is not valid HTTP/1.1.")
        if self.refusal is None and not self.headers_done and self.received > MAX_HEAD_BYTES:
            self.refusal = _Refusal(*_HEAD_TOO_LARGE)  # a line that never ends: it is buffered
        if self.refusal is not None and not self.ended:
            self.ended = True
            self.waiting.append(self.refusal)
        self._answer_waiting()

    def _answer_waiting(self) -> None:
        if self.waiting and self.answering is None:
            self.answering = self.loop.create_task(self._answer())
            self.in_flight.add(self.answering)
            self.answering.add_done_callback(self.in_flight.discard)

    # httptools' callbacks; once the connection has ended (its last request is read, it was
    # refused, or the client sent its end) they do nothing
    def on_message_begin(self) -> None:
        self.begun = True

    def on_url(self, url: bytes) -> None:
        if self.ended:
            return
        self.target += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.ended:
            return
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = self.headers[key] + ", " + text if key in self.headers else text
        self._count_head(len(name) + len(value) + 4)

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            self._refuse(*_HEAD_TOO_LARGE)

    def on_headers_complete(self) -> None:
        if self.ended:
            return
        self.headers_done = True
        try:
            length = int(self.headers.get("content-length", 0))
        except ValueError:
            length = 0  # the parser refuses a Content-Length that is not a number
        if length > self.max_body:
            self._refuse(*self._body_too_large())
        if self.headers.get("expect", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.ended:
            return
        self.body_bytes += len(body)
        if self.body_bytes > self.max_body:  # chunked: no length to refuse it by beforehand
            self._refuse(*self._body_too_large())
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.ended:
            return
        request = Request(
            self.parser.get_method().decode("latin-1"), self.target.decode("latin-1"),
            self.headers, b"".join(self.body), self.parser.should_keep_alive())
        self.waiting.append(request)
        self.ended = not self._kept_after(request)
        self._new_request()

    def _body_too_large(self) -> Tuple[int, str]:
        return 413, BODY_TOO_LARGE.format(self.max_body)

    def _refuse(self, status: int, message: str) -> None:
        self.refusal = _Refusal(status, message)
        raise ValueError(message)  # stops the parser: feed_data raises HttpParserCallbackError

    async def _answer(self) -> None:
        """Answer what is waiting, in order; then read again, or end the connection."""
        while self.waiting:
            if not await self._caught_up():
                return
            request = self.waiting.popleft()
            if isinstance(request, _Refusal):
                self._write(*own_answer(*request), head_only=False, close=True, linger=True)
                if self.refused is not None:
                    self.refused(request.status)
                return
            try:
                status, headers, body = await self.handler(request)
            except Exception:  # a bug of the gateway's: the client still gets an answer
                log.exception("a request was not answered")
                status, headers, body = own_answer(502, "The gateway could not pass the "
                                                        "request on.")
            close = not self._kept_after(request) or (self.ended and not self.waiting) or \
                (header(headers, "connection") or "").lower() == "close"
            self._write(status, headers, body, request.method == "HEAD", close)
            if close:
                self.ended = True
                return
        if not await self._caught_up():
            return
        self.answering = None
        if not self.transport.is_reading():
            self.transport.resume_reading()
        self._wait_idle()

    def _kept_after(self, request: Request) -> bool:
        """Whether the connection may stay open after this request's answer: the client allows
        it, and the port does now."""
        return request.keep_alive and self.keep_alive()

    async def _caught_up(self) -> bool:
        """Whether the client is still there and has read what it was sent, waiting for it as
        long as for an idle client's next request; one that reads nothing for that long is
        cut off (closed, its answers would wait to be sent forever)."""
        if self.drained is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.drained), IDLE_S)
            except asyncio.TimeoutError:
                self.transport.abort()
        return not self.transport.is_closing()

    def _write(self, status: int, headers: Headers, body: bytes, head_only: bool, close: bool,
               linger: bool = False) -> None:
        if self.transport.is_closing():  # the client left: nobody to answer
            return
        lines = ["HTTP/1.1 {} {}".format(status, _PHRASES.get(status, ""))]
        lines.extend("{}: {}".format(name, value) for name, value in headers
                     if name.lower() not in _FRAMING)
        length = str(len(body))
        if head_only:  # the length of the body a GET would get, and no body
            length = header(headers, "content-length") or length
            body = b""
        lines.append("Content-Length: " + length)
        # said either way: an HTTP/1.0 client keeps a connection only when told it may
        lines.append("Connection: close" if close else "Connection: keep-alive")
        # not concatenated: a 1000-row answer is tens of KB to copy
        self.transport.writelines([("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), body])
        if not close:
            return
        if linger and self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()
