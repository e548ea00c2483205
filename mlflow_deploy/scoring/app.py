"""The HTTP face of the scoring pipeline: Azure's routes, MLflow's routes, headers, limits.

Every scoring route hands the request to the deployment's Scorer (scorer.py: an MLflow model
through pipeline.py, or a user's scoring script); this module only does HTTP.
"""
import ctypes
import io
import logging
import re
import signal
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Tuple

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wsgi import get_input_stream

from .. import __version__
from . import access, payload, pipeline
from .config import ServerConfig
from .errors import (MAX_REQUEST_ID, MS_IDS_TOO_LONG, REQUEST_ID_TOO_LONG, REVISION_HEADER,
                     BadRequest, HeaderTooLarge, PayloadTooLarge, ScoringError, ScoringTimeout,
                     ServerFailed, UnsupportedMediaType, new_request_id)
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import ServerMetrics
from .scorer import ScoreRequest, Scorer
from .watchdog import Watchdog

log = logging.getLogger("mlflow_deploy.scoring")
JSON = "application/json"
METHOD_NOT_ALLOWED = "The method is not allowed for the requested URL."
# Azure's server decodes no Content-Encoding, and nothing shows its front end does: a body
# accepted here encoded could fail there
ENCODED = "Content-Encoding is not supported: send the body unencoded (identity)."
BODY_UNREADABLE = ("The request body could not be read: its chunked encoding is broken or the "
                   "connection closed before its end.")
# a swagger version is echoed in the answer only when it is this plain
SWAGGER_VERSION = re.compile(r"[A-Za-z0-9._-]{0,16}")
BAD_SWAGGER_VERSION = ("The swagger version must be one of 2, 3 or 3.1 (at most 16 letters, "
                       "digits, '.', '_' or '-').")
QUERY_NOT_UTF8 = "The query string is not valid UTF-8: percent-encode its values as UTF-8."
SERVER_FAILED = ("The server failed on this request; the deployment log has the traceback for "
                 "request id {}")
READ_PIECE = 1 << 16
# after a request whose body was larger than this, the worker hands the memory it freed back to
# the system (release_memory); below it, what was freed is too little to matter
RELEASE_AFTER_BYTES = 1 << 20
SCORING_ROUTES = ("score", "invocations")  # each view's name is its route's name in the metrics


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise ScoringTimeout in the request's thread once `seconds` pass.

    A signal is the one way to interrupt a running predict in a sync worker; it only works in the
    main thread, so elsewhere (tests' threaded servers) the request simply runs to the end. Code
    that swallows the ScoringTimeout (a script's `except Exception`) still ends in a 504.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    message = "Scoring timeout after {} ms".format(int(seconds * 1000))
    expired = []

    def expire(signum, frame):
        expired.append(True)
        raise ScoringTimeout(message)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if expired:
        raise ScoringTimeout(message)


def create_app(scorer: Scorer, config: ServerConfig,
               on_timeout: Optional[Callable[[], None]] = None,
               metrics: Optional[ServerMetrics] = None,
               watchdog: Optional[Watchdog] = None) -> Flask:
    """Build the app around a scorer (an MLflow model or a user's scoring script: the app does
    not ask which). `on_timeout` recycles the worker after a 504 (gunicorn_conf sets it);
    `watchdog` learns when each request starts and ends, to answer and kill a worker whose
    request outlives the timeout stuck where the in-worker deadline cannot reach."""
    options = config.options
    app = Flask("mlflow_deploy.scoring")
    log_requests(app)  # first: its clock starts before any hook that may refuse the request
    app.config["MAX_CONTENT_LENGTH"] = options.max_request_bytes
    app.config["ON_TIMEOUT"] = on_timeout
    metrics = metrics or ServerMetrics()
    too_large_text = _too_large(config)
    version = {"mlflow_deploy": __version__, "model_uri": config.model_uri,
               "deployment": config.deployment, "revision": config.revision,
               "validation": options.validation.value}

    def ids() -> Tuple[str, str]:
        """(request id, client request id): the client's, else a new one; HeaderTooLarge
        for one over Azure's limit, which is never echoed."""
        rid = request.headers.get("x-request-id")
        if rid and len(rid) > MAX_REQUEST_ID:
            raise HeaderTooLarge(REQUEST_ID_TOO_LONG)
        ms_rid = request.headers.get("x-ms-request-id")
        client_rid = request.headers.get("x-ms-client-request-id")
        if any(value and len(value) > MAX_REQUEST_ID for value in (ms_rid, client_rid)):
            raise HeaderTooLarge(MS_IDS_TOO_LONG)
        rid = rid or ms_rid or new_request_id()
        return rid, client_rid or rid

    @app.before_request
    def take_ids():
        try:
            g.ids = ids()
        except HeaderTooLarge as exc:
            fresh = new_request_id()
            g.ids = (fresh, fresh)
            return refuse(exc)
        try:
            request.args  # noqa: B018 - werkzeug >= 3 decodes the query string strictly, here
        except UnicodeDecodeError:
            return refuse(BadRequest(QUERY_NOT_UTF8))
        return None

    def refuse(exc: ScoringError) -> Response:
        """A request refused before its route runs: a scoring route's answer has Azure's
        scoring headers and is counted in the metrics."""
        if request.endpoint in SCORING_ROUTES:
            return answer(pipeline.error_result(exc), request.endpoint, time.perf_counter())
        return _json_error(exc.status, exc.message)

    @app.after_request
    def with_ids(response: Response) -> Response:
        """Every answer, errors and 500s included, carries the request ids."""
        rid, client_rid = getattr(g, "ids", None) or (new_request_id(),) * 2
        for name, value in (("x-ms-request-id", rid), ("x-request-id", rid),
                            ("x-ms-client-request-id", client_rid)):
            if name not in response.headers:
                response.headers[name] = value
        return response

    def answer(result: pipeline.Result, route: str, started: float) -> Response:
        rid, client_rid = g.ids
        response = Response(result.body, status=result.status, content_type=result.content_type,
                            headers=result.headers)
        response.headers.update(pipeline.response_headers(result, rid, client_rid))
        if result.reason:
            g.access_reason = result.reason
        metrics.observe(route, result.status, time.perf_counter() - started, result,
                        g.get("body_bytes"))
        return response

    def run_scoring(route: str, call: Callable[[ScoreRequest], pipeline.Result]) -> Response:
        started = time.perf_counter()
        rid = g.ids[0]
        client = request.environ.get("gunicorn.socket")
        if watchdog is not None and client is not None:
            watchdog.begin(route, client.fileno(), *g.ids)
        metrics.in_flight.inc()
        try:
            with deadline(options.timeout_s):
                result = call(score_request(rid, options.max_request_bytes, too_large_text))
        except ScoringTimeout as exc:
            log.error("request %s: %s; recycling this worker", rid, exc.message)
            if app.config["ON_TIMEOUT"]:
                app.config["ON_TIMEOUT"]()
            result = pipeline.error_result(exc)
        except ScoringError as exc:
            result = pipeline.error_result(exc)
        except HTTPException:
            raise  # werkzeug's own answer (a client that left mid-body), through http_error
        except Exception:  # noqa: BLE001 - a bug of ours or a script's: 500, never a bare one
            log.exception("request %s: the server failed", rid)
            result = pipeline.error_result(ServerFailed(SERVER_FAILED.format(rid)))
        finally:
            metrics.in_flight.dec()
            if watchdog is not None:
                watchdog.end()
        response = answer(result, route, started)
        if g.get("body_bytes", 0) > RELEASE_AFTER_BYTES:
            response.call_on_close(release_memory)  # once the answer is sent and dropped
        return response

    @app.route("/", methods=["GET"])
    def liveness():
        # the app exists only once the model is loaded: answering at all means ready
        return Response("Healthy", status=200, content_type="text/plain")

    @app.route("/score", methods=["GET", "POST"])
    def score():
        wanted = request.headers.get(REVISION_HEADER)
        if wanted is not None and wanted != str(config.revision):
            return _json_error(421, "This is another revision of the deployment.")
        return run_scoring("score", scorer.score)

    @app.route("/score", methods=["OPTIONS"])
    def score_options():
        return Response("", status=200, headers={"Allow": "GET, POST, OPTIONS"})

    @app.route("/invocations", methods=["POST"])
    def invocations():
        return run_scoring("invocations", scorer.invocations)

    @app.route("/swagger.json", methods=["GET"])
    def swagger():
        version = request.args.get("version", "2")
        if not SWAGGER_VERSION.fullmatch(version):
            return _json_error(400, BAD_SWAGGER_VERSION)
        result = scorer.swagger(version, title=config.deployment or "mlflow-deploy")
        return Response(result.body, status=result.status, content_type=result.content_type)

    @app.route("/ping", methods=["GET"])
    @app.route("/health", methods=["GET"])
    def ping():
        return Response("\n", status=200, content_type=JSON)

    @app.route("/version", methods=["GET"])
    def version_info():
        # asked here, in a worker: a model may be loaded only there
        return Response(payload.dumps(dict(version, **scorer.describe())), status=200,
                        content_type=JSON)

    @app.route("/metrics", methods=["GET"])
    def metrics_text():
        return Response(metrics.render(), status=200, content_type=METRICS_CONTENT_TYPE)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc):
        return _json_error(413, too_large_text)

    @app.errorhandler(HTTPException)
    def http_error(exc):
        if exc.code == 404:
            return _json_error(404, "No route for this path. Scoring is POST /score.")
        if exc.code == 405:
            return _json_error(405, METHOD_NOT_ALLOWED)
        return _json_error(exc.code or 500, exc.name)

    @app.errorhandler(Exception)
    def server_failed(exc):
        rid = (getattr(g, "ids", None) or ("",))[0]
        log.error("request %s: the server failed", rid, exc_info=exc)
        return _json_error(500, SERVER_FAILED.format(rid))

    return app


def log_requests(app: Flask) -> None:
    """A line per request in the server's log, once its answer is sent (access.py), with the
    reason our own error answers note in ``g.access_reason``. Installed before any other
    before_request hook: one that answers (a refusal) skips those after it."""

    @app.before_request
    def start_clock():
        g.access_started = time.perf_counter()

    @app.after_request
    def log_when_sent(response: Response) -> Response:
        # after_request hooks run last-registered first: this one sees the final headers
        status = response.status_code
        rule = request.url_rule.rule if request.url_rule is not None else "-"
        if rule in access.UNLOGGED and status == 200:
            return response
        line = (response.headers.get("x-request-id", "-"), request.method, rule, status,
                g.get("access_reason") if status >= 400 else None)
        started = g.get("access_started") or time.perf_counter()
        response.call_on_close(
            lambda: access.write(*line, (time.perf_counter() - started) * 1000.0))
        return response


def score_request(request_id: str, max_bytes: int, too_large: str) -> ScoreRequest:
    """Flask's current request as the scorer's transport-neutral one (the body is read here,
    inside the deadline)."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(ENCODED)
    return ScoreRequest(body=read_body(max_bytes, too_large), content_type=request.content_type,
                        method=request.method,
                        # the query string carries a GET's input; a POST's is never read
                        args=request.args.to_dict(flat=False) if request.method != "POST" else {},
                        headers=request.headers, request_id=request_id, native=request)


def read_body(max_bytes: int, too_large: str) -> bytes:
    """The request's body; PayloadTooLarge (saying ``too_large``) past ``max_bytes``, whatever
    the transfer encoding.

    Werkzeug's limit stops reading a chunked body at the limit without an error (and before
    werkzeug 2.3 did not limit one at all), so the rest would be cut off silently: the body is
    read here in pieces, and one byte past the limit is the 413. The body read is put back as
    the request's stream, for a script that reads the request itself (Azure's @rawhttp)."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(too_large)
    stream = get_input_stream(request.environ)  # bounded by Content-Length, or the server's
    pieces, size = [], 0
    try:
        while True:
            piece = stream.read(min(READ_PIECE, max_bytes + 1 - size))
            if not piece:
                break
            pieces.append(piece)
            size += len(piece)
            if size > max_bytes:
                raise PayloadTooLarge(too_large)
    except OSError:  # gunicorn's errors for a broken chunked body are OSErrors
        raise BadRequest(BODY_UNREADABLE) from None
    body = b"".join(pieces)
    request.environ["wsgi.input"] = io.BytesIO(body)
    g.body_bytes = size
    return body


def _malloc_trim() -> Optional[Callable[[int], int]]:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc's; musl and macOS have none
    except (OSError, AttributeError, TypeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_memory() -> None:
    """Give the heap's free memory back to the system, after a large request.

    Decoding a large body makes millions of small objects (the stdlib decoder: a list and a float
    per value), and the arrays, frames and answer built from them; all are freed at the end of
    the request, but glibc keeps freed heap memory for the process's next allocations unless it
    lies at the heap's top. After a 10^6-row request a worker stayed up to 23 % larger than
    before it (in half of the runs: it depends on where the last allocations landed), for as long
    as it lives. ``malloc_trim`` hands back the free pages of every arena: the worker then comes
    back to 2 % above its size before, every time (measured). It runs after the answer is sent,
    costs 0.7 ms after a 10^6-row body, and only requests over RELEASE_AFTER_BYTES pay it. Where
    there is no glibc it does nothing."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _too_large(config: ServerConfig) -> str:
    return "The request body is larger than the deployment's limit of {:g} MB.".format(
        config.max_request_mb)


def _json_error(status: int, message: str) -> Response:
    g.access_reason = message
    return Response(pipeline.error_body(message), status=status, content_type=JSON)
