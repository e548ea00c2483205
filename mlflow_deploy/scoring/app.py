"""The HTTP face of the scoring pipeline: Azure's routes, MLflow's routes, headers, limits.

Every scoring route hands the body to pipeline.py, or for a deployment with a scoring script to
script.py; this module only does HTTP (DESIGN §7).
"""
import logging
import os
import signal
import threading
import time
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Dict, Iterator, Optional, Union

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .. import __version__
from . import payload, pipeline
from .config import ServerConfig
from .errors import HeaderTooLarge, NotFound, PayloadTooLarge, ScoringError, ScoringTimeout
from .metrics import Metrics
from .script import ScoringScript

if TYPE_CHECKING:  # predictor imports mlflow, which a scoring-script server must not need
    from .predictor import Predictor

log = logging.getLogger("mlflow_deploy.scoring")
MAX_REQUEST_ID = 100
JSON = "application/json"


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


def create_app(model: Union["Predictor", ScoringScript], config: ServerConfig,
               on_timeout: Optional[Callable[[], None]] = None) -> Flask:
    """Build the app for an MLflow model (a Predictor) or a user's scoring script.

    `on_timeout` recycles the worker after a 504 (gunicorn_conf sets it)."""
    script = model if isinstance(model, ScoringScript) else None
    predictor = None if script else model
    app = Flask("mlflow_deploy.scoring")
    app.config["MAX_CONTENT_LENGTH"] = int(config.max_request_mb * 1024 * 1024)
    app.config["ON_TIMEOUT"] = on_timeout
    metrics = Metrics()
    timeout_s = config.request_timeout_ms / 1000.0
    options = {"validation": config.validation, "error_details": config.error_details}
    version = {"mlflow_deploy": __version__, "model_uri": config.model_uri,
               "deployment": config.deployment, "revision": config.revision,
               "validation": config.validation,
               **(script.describe() if script else pipeline.describe(predictor))}

    def ids():
        rid = request.headers.get("x-request-id") or request.headers.get("x-ms-request-id")
        if rid and len(rid) > MAX_REQUEST_ID:
            raise HeaderTooLarge("The x-request-id header is longer than {} characters.".format(
                MAX_REQUEST_ID))
        rid = rid or str(uuid.uuid4())
        return rid, request.headers.get("x-ms-client-request-id") or rid

    def answer(result: pipeline.Result, route: str, rid: str, client_rid: str,
               started: float) -> Response:
        response = Response(result.body, status=result.status, content_type=result.content_type,
                            headers=result.headers)
        response.headers.update(pipeline.response_headers(result, rid, client_rid))
        metrics.observe(route, result.status, time.perf_counter() - started)
        return response

    def run_scoring(route: str, call: Callable[[str], pipeline.Result]) -> Response:
        started = time.perf_counter()
        try:
            rid, client_rid = ids()
        except ScoringError as exc:
            return answer(pipeline.error_result(exc), route, "", "", started)
        try:
            with deadline(timeout_s):
                result = call(rid)
        except ScoringTimeout as exc:
            log.error("request %s: %s; recycling this worker", rid, exc.message)
            if app.config["ON_TIMEOUT"]:
                app.config["ON_TIMEOUT"]()
            result = pipeline.error_result(exc)
        except RequestEntityTooLarge:
            result = pipeline.error_result(PayloadTooLarge(_too_large(config)))
        return answer(result, route, rid, client_rid, started)

    @app.route("/", methods=["GET"])
    def liveness():
        # the app exists only once the model is loaded: answering at all means ready
        return Response("Healthy", status=200, content_type="text/plain")

    @app.route("/score", methods=["POST"])
    def score():
        if script:
            return run_scoring("score", lambda rid: script.score(request, rid))
        return run_scoring("score", lambda rid: pipeline.score(
            request.get_data(cache=False), request.content_type, predictor, request_id=rid,
            **options))

    @app.route("/score", methods=["GET"])
    def score_query():
        if script:
            return run_scoring("score", lambda rid: script.score(request, rid))

        def call(rid):
            try:
                parsed = payload.parse_azure_query(request.args.get("input_data") or "null")
            except ScoringError as exc:
                return pipeline.error_result(exc)
            return pipeline.score_parsed(parsed, predictor, request_id=rid, **options)
        return run_scoring("score", call)

    @app.route("/score", methods=["OPTIONS"])
    def score_options():
        return Response("", status=200, headers={"Allow": "GET, POST, OPTIONS"})

    @app.route("/invocations", methods=["POST"])
    def invocations():
        if script:
            return _json_error(404, "This deployment runs a scoring script: score with POST "
                                    "/score.")
        return run_scoring("invocations", lambda rid: pipeline.invocations(
            request.get_data(cache=False), request.content_type, predictor, request_id=rid,
            **options))

    @app.route("/swagger.json", methods=["GET"])
    def swagger():
        if script:
            return _script_swagger(script, request.args.get("version", "2"))
        from .swagger import build_swagger

        try:
            doc = build_swagger(request.args.get("version", "2"),
                                input_schema=predictor.input_schema,
                                output_schema=predictor.output_schema,
                                params_schema=predictor.params_schema,
                                example=predictor.input_example,
                                title=config.deployment or "mlflow-deploy")
        except NotFound as exc:
            return _json_error(exc.status, exc.message)
        return Response(payload.dumps(doc), status=200, content_type=JSON)

    @app.route("/ping", methods=["GET"])
    @app.route("/health", methods=["GET"])
    def ping():
        return Response("\n", status=200, content_type=JSON)

    @app.route("/version", methods=["GET"])
    def version_info():
        return Response(payload.dumps(version), status=200, content_type=JSON)

    @app.route("/metrics", methods=["GET"])
    def metrics_text():
        return Response(metrics.render(), status=200,
                        content_type="text/plain; version=0.0.4; charset=utf-8")

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc):
        return _json_error(413, _too_large(config))

    @app.errorhandler(HTTPException)
    def http_error(exc):
        if exc.code == 404:
            return _json_error(404, "No route for this path. Scoring is POST /score.")
        if exc.code == 405:
            return _json_error(405, "This method is not allowed for this path.")
        return _json_error(exc.code or 500, exc.name)

    return app


# the files Azure serves as a scoring script's swagger, by version (server/swagger.py)
SCRIPT_SWAGGER_FILES = {"2": ("swagger.json", "swagger2.json"), "3": ("swagger3.json",),
                        "3.1": ("swagger3.1.json",)}
SWAGGER_ALIASES = {"2.0": "2", "3.0": "3"}


def _script_swagger(script: ScoringScript, version: str) -> Response:
    """A scoring script's swagger is the file the user put in the code folder, as Azure serves it.
    Azure generates one for inference-schema decorated run() functions; that is not done here."""
    found: Dict[str, str] = {}
    for known, names in SCRIPT_SWAGGER_FILES.items():
        paths = [os.path.join(script.code_dir, name) for name in names]
        paths = [path for path in paths if os.path.isfile(path)]
        if paths:
            found[known] = paths[0]
    supported = ", ".join(sorted(found))
    wanted = SWAGGER_ALIASES.get(version, version)
    if wanted not in SCRIPT_SWAGGER_FILES:
        return _json_error(404, "Swagger version [{}] is not valid. Supported versions: "
                                "[{}].".format(version, supported))
    if wanted not in found:
        return _json_error(404, "Swagger version [{}] is not supported for the scoring script. "
                                "Supported swagger versions: [{}].".format(version, supported))
    with open(found[wanted], "rb") as f:
        return Response(f.read(), status=200, content_type=JSON)


def _too_large(config: ServerConfig) -> str:
    return "The request body is larger than the deployment's limit of {:g} MB.".format(
        config.max_request_mb)


def _json_error(status: int, message: str) -> Response:
    return Response(pipeline.error_body(message), status=status, content_type=JSON)
