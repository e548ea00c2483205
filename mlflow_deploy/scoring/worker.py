"""gunicorn's sync worker, answering the requests gunicorn refuses itself the way the app answers.

gunicorn reads the request line and the headers before the app sees anything, and refuses what
it cannot take with an HTML page that quotes the offending header name or request line (the
client's own text), without the request ids, and as a 501 for a transfer coding it does not
know. Here such a request gets what every other refusal gets: a 4xx with a JSON message that
names the kind of fault only, and request ids (new ones: the request's own were not read).

No client header sets the WSGI environ's SCRIPT_NAME or PATH_INFO either: gunicorn takes them
from headers (from any peer before gunicorn 22, from local and Unix socket peers since), so a
client could move the app's routes, and one the path does not start with was a 500.

A body framed by Content-Length (every body the gateway passes on) is read from the socket in
as few calls as it takes (``SocketBody``), not through gunicorn's reader.

A worker keeps one connection of its Unix socket (the gateway's hop) open between requests
(``ScoringWorker.handle``): gunicorn's sync worker closes every connection after its answer,
and opening one per request was an eighth of the gateway's CPU. While that one is idle the
worker still takes other connections of the socket, one answer each; a TCP port's connections
are answered as gunicorn answers them, as only the gateway is known to send a kept
connection's next request after the answer and to send again a request its kept connection
lost unread.
"""
import errno
import io
import os
import select
import socket
from typing import Any, Optional

from gunicorn import http, util
from gunicorn.http import errors
from gunicorn.http.body import LengthReader
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.sync import SyncWorker

from . import access, pipeline
from .errors import new_request_id

REQUEST_LINE = "The request line is not valid HTTP/1.1 (a method, a target and the version)."
REQUEST_LINE_TOO_LONG = ("The request line is longer than {} bytes: send the input in a POST "
                         "body.")
HEADERS_TOO_LARGE = "The request's headers are too large or too many."
MALFORMED_HEADER = "The request has a malformed header."
TRANSFER_CODING = ("Transfer-Encoding is not supported but for chunked: send the body with a "
                   "Content-Length or in chunks.")
EXPECTATION = "Expect takes only 100-continue."
NOT_HTTP = "The request is not valid HTTP/1.1."
#: header names (as gunicorn spells them) that gunicorn would turn into the environ's paths
PATH_HEADERS = frozenset({"SCRIPT_NAME", "PATH_INFO"})


def _errors(*names: str) -> tuple:
    """gunicorn's exception classes of these names, where this version has them (20.1 lacks
    the newer ones)."""
    return tuple(getattr(errors, name) for name in names if hasattr(errors, name))


# (gunicorn's exceptions, the status, the message), the first match wins
REFUSALS = (
    (_errors("LimitRequestLine"), 414, REQUEST_LINE_TOO_LONG),
    (_errors("LimitRequestHeaders"), 431, HEADERS_TOO_LARGE),
    (_errors("InvalidRequestLine", "InvalidRequestMethod", "InvalidHTTPVersion"), 400,
     REQUEST_LINE),
    (_errors("InvalidHeader", "InvalidHeaderName", "ObsoleteFolding", "InvalidSchemeHeaders"),
     400, MALFORMED_HEADER),
    (_errors("UnsupportedTransferCoding"), 400, TRANSFER_CODING),
    (_errors("ExpectationFailed"), 417, EXPECTATION),
)


def refusal(exc: BaseException, limit_request_line: int) -> Optional[pipeline.Result]:
    """The answer to a request gunicorn could not parse; None for anything else (a failure of
    the server, which gunicorn answers 500 and logs with its traceback)."""
    if not isinstance(exc, errors.ParseException) or isinstance(
            exc, _errors("ConfigurationProblem")):
        return None
    status, message = 400, NOT_HTTP
    for classes, status_of, message_of in REFUSALS:
        if classes and isinstance(exc, classes):
            status, message = status_of, message_of.format(limit_request_line)
            break
    return pipeline.Result(status, pipeline.error_body(message), reason=message)


def misframed(headers: Any) -> Optional[str]:
    """Why a request's body cannot be read as framed, if it cannot.

    A Transfer-Encoding other than chunked alone, the one coding gunicorn decodes: where the
    last coding is not chunked the body's length cannot be known (RFC 9112 6.3: a 400), and
    gunicorn reads the body by its Content-Length, undecoded (a body sent as gzip was scored as
    plain JSON); gunicorn before 22 also took "gzip, chunked" for no coding at all. Chunked
    with a Content-Length as well: gunicorn 22 refuses it (two framings a proxy may read apart),
    gunicorn before 22 read the body as chunked, and a body that was not waited for its chunks
    until the scoring timeout."""
    codings = [coding.strip().lower() for name, value in headers
               if name == "TRANSFER-ENCODING" for coding in value.split(",")]
    if not codings:
        return None
    if codings != ["chunked"]:
        return TRANSFER_CODING
    if any(name == "CONTENT-LENGTH" for name, _ in headers):
        return MALFORMED_HEADER
    return None


class SocketBody(io.RawIOBase):
    """A request body of ``length`` bytes, read from the client's socket in as few ``recv``
    calls as it takes, after what gunicorn read of it with the headers (held by ``unreader``).

    gunicorn's own body hands the app 1 KB per read of its reader, and copies its 8 KB buffer
    for each: 0.25-0.30 ms of a worker's CPU for a 1000-row body (110 KB) here, 0.03-0.04 ms
    this way; the app reads every body whole. Bytes past the body (a pipelined request) stay
    with ``unreader``."""

    def __init__(self, client: socket.socket, unreader: SocketUnreader, length: int):
        super().__init__()
        self.client, self.unreader, self.left = client, unreader, length
        self.held: Optional[bytes] = None  # body bytes read ahead, not yet handed out

    def readable(self) -> bool:
        return True

    def read(self, size: Optional[int] = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        return self._take(size)

    def readall(self) -> bytes:
        pieces = []
        while self.left:
            piece = self._take(self.left)
            if not piece:
                break
            pieces.append(piece)
        return b"".join(pieces)

    def readinto(self, buffer: Any) -> int:
        data = self._take(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def _take(self, size: int) -> bytes:
        size = min(size, self.left)
        if size <= 0:
            return b""
        if self.held is None:  # gunicorn's read-ahead (or, where it has none, a first recv)
            self.held = self.unreader.read()
        if self.held:
            data, rest = self.held[:size], self.held[size:]
            self.held = b""
            if len(data) == self.left and rest:
                self.unreader.unread(rest)  # the next request's: not this body's
            else:
                self.held = rest
        else:
            data = self.client.recv(size)
            if not data:  # the client left mid-body: a short body, as gunicorn's reader gives
                self.left = 0
        self.left -= len(data)
        return data


def socket_body(req: Any, client: Any) -> Optional[SocketBody]:
    """A SocketBody for the request, where gunicorn reads its body by Content-Length from a
    socket that nothing has read yet; None otherwise (a chunked body keeps gunicorn's reader)."""
    reader = getattr(req.body, "reader", None)
    unreader = getattr(req, "unreader", None)
    if not isinstance(reader, LengthReader) or not isinstance(unreader, SocketUnreader):
        return None
    return SocketBody(client, unreader, reader.length)


class ScoringWorker(SyncWorker):
    kept: Optional[socket.socket] = None  # the connection kept open between requests
    keeping = False  # whether the request being answered came on the kept connection
    response: Any = None  # gunicorn's Response to that request (None: refused by the worker)
    read_whole = True  # whether the last request was read to its end (its body, all of it)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app = self.wsgi

        def wsgi(environ: Any, start_response: Any) -> Any:
            # gunicorn's sync worker has just marked the response to close its connection
            # (Response.force_close, 20.1-27); on the kept connection HTTP/1.1's own rule
            # decides instead (kept unless the request said close)
            self.response = start_response.__self__
            if self.keeping:
                self.response.must_close = False
            return app(environ, start_response)

        self.wsgi = wsgi

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        """Answer a connection of the Unix socket: the first while none is kept becomes the
        kept one and is answered request after request; another, while one is kept, gets one
        answer. A TCP port's connections are answered as gunicorn answers them."""
        if listener.FAMILY != socket.AF_UNIX:
            super().handle(listener, client, addr)
            return
        keep = self.kept is None
        if keep:
            self.kept = client
        try:
            parser = http.RequestParser(self.cfg, client, addr)
            while self._answer(listener, client, addr, parser, keep) and \
                    self._await_next(client):
                pass
        finally:
            if keep:
                self.kept = None
            if self.read_whole:
                util.close(client)  # nothing of the client's is left to read
            else:
                # a request answered before its body was read (an early refusal): gunicorn's
                # graceful close (26+) reads the rest for up to 2 s, so the client can send it
                # all and read the answer rather than fail writing to a closed socket
                getattr(util, "close_graceful", util.close)(client)

    def _answer(self, listener: Any, client: Any, addr: Any, parser: Any, keep: bool) -> bool:
        """Answer the connection's next request; whether the connection stays open for another
        (the failures are those of gunicorn's own handle, and close it)."""
        req = None
        self.keeping, self.response, self.read_whole = keep, None, False
        try:
            req = next(parser)
            self.handle_request(listener, req, client, addr)
            self.read_whole = isinstance(req.body, SocketBody) and not req.body.left
        except (errors.NoMoreData, StopIteration):  # the gateway closed it, or gunicorn ended it
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
            return False
        except BaseException as exc:  # noqa: BLE001 - as gunicorn's handle: answered, then closed
            self.handle_error(req, client, addr, exc)
            return False
        finally:
            self.keeping = False
        return keep and self.alive and self.response is not None and \
            not self.response.should_close()

    def _await_next(self, client: socket.socket) -> bool:
        """Wait for the kept connection's next request (True) while taking other connections
        one request each; False when this worker is to stop. Between requests a worker waits
        here rather than in gunicorn's loop, so it beats its heartbeat and wakes on signals
        the same way."""
        fds = [client] + list(self.wait_fds)
        while self.alive and self.is_parent_alive():
            self.notify()
            try:
                ready = select.select(fds, [], [], self.timeout)[0]
            except OSError as exc:
                if exc.errno == errno.EBADF:  # a listener closed under a stopping worker
                    return False
                raise
            if client in ready:
                return True
            for fd in ready:
                if fd == self.PIPE[0]:
                    os.read(fd, 1)
                    continue
                try:
                    self.accept(fd)
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                        raise
        return False

    def handle_request(self, listener: Any, req: Any, client: Any, addr: Any) -> Any:
        why = misframed(req.headers)
        if why is not None:
            self.refuse(client, pipeline.Result(400, pipeline.error_body(why), reason=why))
            return None
        if any(name in PATH_HEADERS for name, _ in req.headers):
            req.headers = [(name, value) for name, value in req.headers
                           if name not in PATH_HEADERS]
        body = socket_body(req, client)
        if body is not None:
            req.body = body
        return super().handle_request(listener, req, client, addr)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        answer = refusal(exc, self.cfg.limit_request_line)
        if answer is None:
            super().handle_error(req, client, addr, exc)
            return
        # the log keeps gunicorn's own words (they may quote the client's text: the log may)
        self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        self.refuse(client, answer)

    def refuse(self, client: Any, answer: pipeline.Result) -> None:
        """Answer on the client's socket directly, with new request ids (the request's own were
        not read, or not trusted)."""
        rid = new_request_id()
        try:
            util.write_nonblock(client, pipeline.raw_answer(answer, rid, rid))
        except Exception:  # noqa: BLE001 - the client may be gone: nothing is left to answer
            self.log.debug("Failed to send the refusal.")
        # nothing of the request was read or trusted: no method, no route, no start to time from
        access.write(rid, "-", "-", answer.status, answer.reason, None)
