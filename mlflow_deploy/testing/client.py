"""What the scoring server answers to a payload, asked from a test.

By default in process: the server's own path (``pipeline.score``) called here, no server. With
``server=True`` (or ``pytest --mlflow-deploy-server``) the payload is posted to a real server
(served.py): gunicorn with the project's config, the model loaded in its master and predicted in
a forked worker, which is what shows a model that fails only after a fork. Either way the answer
is the status, headers and body the server sends, and a surprise becomes an assertion message
that shows that answer. Models are loaded (and servers started) once per URI and kept for the
whole interpreter, so a module with a hundred payloads pays for one load.
"""
import atexit
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Hashable, List, Optional, Tuple, Union

import mlflow

from mlflow_deploy.model import load_model
from mlflow_deploy.scoring import pipeline
from mlflow_deploy.scoring.errors import COERCIONS_HEADER
from mlflow_deploy.scoring.options import ScoringOptions, Validation
from mlflow_deploy.scoring.payload import json_default, to_azure_body
from mlflow_deploy.scoring.scorer import ModelScorer, ScoreRequest
from mlflow_deploy.scoring.predictor import Predictor

from .settings import default_server, default_validation

__all__ = ["score", "assert_valid", "assert_rejected", "Response", "ScoringClient", "PayloadFile",
           "load_predictor", "clear_cache"]

JSON = "application/json"
SHOWN_BODY = 500  # characters of a response body shown in an assertion message


# ---- the model cache ------------------------------------------------------------------

@dataclass
class _Loaded:
    predictor: Predictor
    load_warnings: Tuple[str, ...]


_cache: Dict[Hashable, _Loaded] = {}
_dirs: Dict[Hashable, Path] = {}  # the local folder of each model, downloaded once
_cache_lock = threading.RLock()
_download_root: List[str] = []


def _cache_key(model_uri: str) -> Hashable:
    """A local folder is keyed by its real path; a registry URI also by the store it names."""
    local = os.path.expanduser(model_uri)
    if os.path.isdir(local):
        return ("path", os.path.realpath(local))
    return ("uri", model_uri, mlflow.get_tracking_uri(), mlflow.get_registry_uri())


def _download_dir() -> Path:
    """One temporary folder for the interpreter's downloads, removed when it exits."""
    if not _download_root:
        root = tempfile.mkdtemp(prefix="mlflow-deploy-testing-")
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _download_root.append(root)
    return Path(tempfile.mkdtemp(dir=_download_root[0]))


def _local_dir(model_uri: str) -> Path:
    """The model's local folder: a folder in place, anything else downloaded once."""
    model_uri = os.fspath(model_uri)
    key = _cache_key(model_uri)
    with _cache_lock:
        path = _dirs.get(key)
        if path is None:
            path = _dirs[key] = load_model(model_uri, _download_dir()).path
        return path


def _load(model_uri: str) -> _Loaded:
    model_uri = os.fspath(model_uri)
    key = _cache_key(model_uri)
    with _cache_lock:
        loaded = _cache.get(key)
        if loaded is None:
            path = _local_dir(model_uri)
            # the server prints load-time warnings and serves; a suite's `filterwarnings = error`
            # must not turn them into a failure the server would not have
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                predictor = Predictor.load(str(path))
            loaded = _cache[key] = _Loaded(predictor, _warning_lines(caught))
        return loaded


def load_predictor(model_uri: str) -> Predictor:
    """The loaded model for a URI (a local folder, runs:/, models:/ or azureml:), cached."""
    return _load(model_uri).predictor


def clear_cache() -> None:
    """Forget every loaded model and stop every server started for one (e.g. after a test
    re-logged a model under the same URI)."""
    with _cache_lock:
        _cache.clear()
        _dirs.clear()
    served = sys.modules.get(__package__ + ".served")  # none to stop if it was never imported
    if served is not None:
        served.stop_session_servers()


# ---- the answer -----------------------------------------------------------------------

@dataclass(frozen=True)
class Response:
    """What the scoring server would answer: status, headers and the JSON body, parsed."""

    status: int
    body: Any
    headers: Dict[str, str]
    raw: bytes
    validation: str
    coercions: Tuple[str, ...] = ()
    warnings: Tuple[str, ...] = ()  # warnings the model emitted while scoring (the server logs them)
    log: Tuple[str, ...] = ()  # what the server would log, e.g. the traceback behind a 500
    served: bool = False  # answered by a real server (a forked worker), not in process

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def message(self) -> Optional[str]:
        """The error message of a non-200 answer."""
        if self.status != 200 and isinstance(self.body, dict):
            return self.body.get("message")
        return None

    def describe(self) -> str:
        """The answer as the server would send it, shortened for an assertion message."""
        text = self.raw.decode("utf-8", errors="replace")
        if len(text) > SHOWN_BODY:
            text = text[:SHOWN_BODY] + "... ({} characters)".format(len(text))
        lines = ["HTTP {} {}".format(self.status, text)]
        if self.coercions:
            lines.append(COERCIONS_HEADER + ": " + "; ".join(self.coercions))
        lines.extend(self.log)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


# ---- requests -------------------------------------------------------------------------

@dataclass(frozen=True)
class PayloadFile:
    """A payload file handed to a test by ``@pytest.mark.payloads``; scores its bytes as they are."""

    path: Path
    model_uri: Optional[str] = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def raw(self) -> bytes:
        return self.path.read_bytes()

    @property
    def body(self) -> Any:
        """The parsed JSON (raises ValueError when the file is not JSON)."""
        return json.loads(self.raw)

    def _model(self) -> str:
        if self.model_uri is None:
            raise ValueError("this payload has no model: give the marker model=..., or call "
                             "mlflow_deploy.testing.score(model_uri, payload)")
        return self.model_uri

    def score(self, **options: Any) -> Response:
        return score(self._model(), self, **options)

    def assert_valid(self, **options: Any) -> Response:
        __tracebackhide__ = True
        return assert_valid(self._model(), self, **options)

    def assert_rejected(self, **options: Any) -> Response:
        __tracebackhide__ = True
        return assert_rejected(self._model(), self, **options)


Payload = Union[dict, list, str, bytes, PayloadFile, Path, Any]


def request_bytes(payload: Payload, params: Optional[Dict[str, Any]] = None) -> bytes:
    """The request body for a payload.

    A dict is the whole Azure body ({"input_data": ..., "params": ...}); bytes, str and files are
    sent as they are; a list, numpy array or DataFrame becomes ``input_data`` (a DataFrame in the
    split orientation). ``params`` replaces the body's params.
    """
    if isinstance(payload, PayloadFile):
        raw = payload.raw
    elif isinstance(payload, Path):
        raw = payload.read_bytes()
    elif isinstance(payload, (bytes, bytearray)):
        raw = bytes(payload)
    elif isinstance(payload, str):
        raw = payload.encode("utf-8")
    else:
        body = payload if isinstance(payload, dict) else to_azure_body(payload)
        if params is not None:
            body = dict(body, params=params)
        return _dumps(body)
    if params is None:
        return raw
    body = json.loads(raw)
    if not isinstance(body, dict):
        raise ValueError("params can only be added to a payload that is a JSON object")
    return _dumps(dict(body, params=params))


def _dumps(body: Any) -> bytes:
    """What a client would send: plain JSON (any size of integer, which the server's own orjson
    writer refuses), numpy values as numbers, timestamps as ISO 8601 text."""
    return json.dumps(body, default=json_default).encode("utf-8")


def _warning_lines(caught: List[warnings.WarningMessage]) -> Tuple[str, ...]:
    return tuple("{}: {}".format(w.category.__name__, w.message) for w in caught)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _mode(validation: Optional[str]) -> str:
    return Validation.parse(validation if validation is not None else default_validation()).value


def _served(server: Optional[bool]) -> bool:
    return default_server() if server is None else bool(server)


def score(model_uri: str, payload: Payload, *, params: Optional[Dict[str, Any]] = None,
          validation: Optional[str] = None, error_details: bool = True,
          server: Optional[bool] = None) -> Response:
    """What ``POST /score`` on a server for ``model_uri`` would answer to ``payload``.

    ``validation`` defaults to the suite's mode (``--mlflow-deploy-validation``, else compatible).
    ``server=True`` posts it to a real server for the model (started on first use and kept for
    the session) instead of scoring in process; it defaults to the suite's choice
    (``--mlflow-deploy-server``, else in process). A server that cannot start raises
    ``ServerFailed``, one that gives no answer ``served.NoAnswer`` (both name its log).
    """
    mode = _mode(validation)
    raw = request_bytes(payload, params)
    if _served(server):
        return _score_served(model_uri, raw, mode, error_details)
    predictor = load_predictor(model_uri)
    request_id = str(uuid.uuid4())
    logger = logging.getLogger(pipeline.log.name)
    collect = _Collect()
    logger.addHandler(collect)
    try:
        # the server scores with Python's default warning filters: a model's warning is logged,
        # not raised, whatever the calling suite's filterwarnings say
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scorer = ModelScorer(predictor, ScoringOptions(validation=mode,
                                                           error_details=error_details))
            result = scorer.score(ScoreRequest(body=raw, content_type=JSON,
                                               request_id=request_id))
    finally:
        logger.removeHandler(collect)
    return Response(
        status=result.status,
        body=json.loads(result.body) if result.body else None,
        headers=dict(pipeline.response_headers(result, request_id, request_id),
                     **{"Content-Type": result.content_type}),
        raw=result.body,
        validation=mode,
        coercions=tuple(result.coercions),
        warnings=_warning_lines(caught),
        log=tuple(collect.lines),
    )


def _score_served(model_uri: str, raw: bytes, mode: str, error_details: bool) -> Response:
    from . import served

    model_uri = os.fspath(model_uri)
    options = ScoringOptions(validation=mode, error_details=error_details)
    server = served.session_server((_cache_key(model_uri), mode, error_details),
                                   _local_dir(model_uri), options, model_uri)
    answer = server.post(raw)
    try:
        body = json.loads(answer.body) if answer.body else None
    except ValueError:
        body = answer.body.decode("utf-8", errors="replace")
    coercions = answer.headers.get(COERCIONS_HEADER)
    return Response(status=answer.status, body=body, headers=answer.headers, raw=answer.body,
                    validation=mode, coercions=tuple(coercions.split("; ")) if coercions else (),
                    log=answer.log, served=True)


def _score_or_fail(model_uri: str, payload: Payload, params: Optional[Dict[str, Any]],
                   validation: Optional[str], server: Optional[bool]) -> Response:
    """score(), with a real server's missing answer (a crashed worker) as an assertion failure."""
    __tracebackhide__ = True
    if not _served(server):
        return score(model_uri, payload, params=params, validation=validation, server=False)
    from .served import NoAnswer

    try:
        return score(model_uri, payload, params=params, validation=validation, server=True)
    except NoAnswer as exc:
        raise AssertionError("{} gave no answer to this payload through a real server: {}"
                             .format(model_uri, exc.message)) from None


def _where(response: Response) -> Tuple[str, str]:
    """How the answer was got, for an assertion message: the in-process wording is the older."""
    if response.served:
        return "(validation: {}, a real server)".format(response.validation), "answered"
    return "(validation: {})".format(response.validation), "would answer"


def assert_valid(model_uri: str, payload: Payload, *, params: Optional[Dict[str, Any]] = None,
                 validation: Optional[str] = None, server: Optional[bool] = None) -> Response:
    """Assert the server would answer 200; returns the Response for further checks.

    ``server=True``: as answered by a real server (see ``score``)."""
    __tracebackhide__ = True
    response = _score_or_fail(model_uri, payload, params, validation, server)
    if response.status != 200:
        how, answers = _where(response)
        raise AssertionError("{} would not score this payload {}; the server {}:\n{}".format(
            model_uri, how, answers, _indent(response.describe())))
    return response


def assert_rejected(model_uri: str, payload: Payload, *, status: int = 400,
                    match: Optional[str] = None, params: Optional[Dict[str, Any]] = None,
                    validation: Optional[str] = None, server: Optional[bool] = None) -> Response:
    """Assert the server would answer ``status`` and, with ``match``, a message containing it.

    ``match`` is a substring (e.g. ``"column 'age'"``) or a regular expression searched for.
    ``server=True``: as answered by a real server (see ``score``).
    """
    __tracebackhide__ = True
    response = _score_or_fail(model_uri, payload, params, validation, server)
    if response.status != status:
        how, answers = _where(response)
        raise AssertionError("expected HTTP {} from {} {}, but the server {}:\n{}".format(
            status, model_uri, how, answers, _indent(response.describe())))
    if match is not None and not _matches(match, response.message or ""):
        raise AssertionError("{} answered HTTP {} as expected, but its message does not match "
                             "{!r}:\n{}".format(model_uri, status, match,
                                                _indent(response.describe())))
    return response


def _matches(pattern: str, message: str) -> bool:
    if pattern in message:
        return True
    try:
        return re.search(pattern, message) is not None
    except re.error:
        return False


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


# ---- a client per model ---------------------------------------------------------------

@dataclass
class ScoringClient:
    """One model, scored in process or by a real server: what the ``scoring_client`` fixture
    hands out."""

    model_uri: str
    validation: Optional[str] = None  # None: the suite's default
    server: Optional[bool] = None  # None: the suite's default
    _loaded: Optional[_Loaded] = field(default=None, repr=False)

    @property
    def predictor(self) -> Predictor:
        if self._loaded is None:
            self._loaded = _load(self.model_uri)
        return self._loaded.predictor

    @property
    def signature(self):
        """MLflow's ``ModelSignature`` of the model (None when it was logged without one)."""
        return self.predictor.model.metadata.signature

    @property
    def input_example(self) -> Optional[Dict[str, Any]]:
        """The model's saved input example as an Azure request body."""
        return self.predictor.input_example

    @property
    def load_warnings(self) -> Tuple[str, ...]:
        self.predictor  # noqa: B018 - loads the model
        return self._loaded.load_warnings if self._loaded else ()

    def _options(self, options: Dict[str, Any]) -> Dict[str, Any]:
        if options.get("validation") is None:
            options["validation"] = self.validation
        if options.get("server") is None:
            options["server"] = self.server
        return options

    def score(self, payload: Payload, **options: Any) -> Response:
        return score(self.model_uri, payload, **self._options(options))

    def assert_valid(self, payload: Payload, **options: Any) -> Response:
        __tracebackhide__ = True
        return assert_valid(self.model_uri, payload, **self._options(options))

    def assert_rejected(self, payload: Payload, **options: Any) -> Response:
        __tracebackhide__ = True
        return assert_rejected(self.model_uri, payload, **self._options(options))

    def swagger(self, version: str = "2") -> Dict[str, Any]:
        """The document ``GET /swagger.json?version=...`` would answer."""
        from mlflow_deploy.scoring.swagger import build_swagger

        p = self.predictor
        return build_swagger(version, input_schema=p.input_schema, output_schema=p.output_schema,
                             params_schema=p.params_schema, example=p.input_example)
