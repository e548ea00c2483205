"""In-process scoring: the server's own path (``pipeline.score``) called from a test, no server.

A test asks what the scoring server would answer to a payload; this module answers with the
status, headers and body the server would send, and turns a surprise into an assertion message
that shows that answer. Models are loaded once per URI and kept for the whole interpreter, so a
module with a hundred payloads pays for one load.
"""
import atexit
import json
import logging
import os
import re
import shutil
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
from mlflow_deploy.scoring.options import ScoringOptions, Validation
from mlflow_deploy.scoring.payload import json_default, to_azure_body
from mlflow_deploy.scoring.scorer import ModelScorer, ScoreRequest
from mlflow_deploy.scoring.predictor import Predictor

from .settings import default_validation

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
_cache_lock = threading.Lock()
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


def _load(model_uri: str) -> _Loaded:
    model_uri = os.fspath(model_uri)
    key = _cache_key(model_uri)
    with _cache_lock:
        loaded = _cache.get(key)
        if loaded is None:
            info = load_model(model_uri, _download_dir())
            # the server prints load-time warnings and serves; a suite's `filterwarnings = error`
            # must not turn them into a failure the server would not have
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                predictor = Predictor.load(str(info.path))
            loaded = _cache[key] = _Loaded(predictor, _warning_lines(caught))
        return loaded


def load_predictor(model_uri: str) -> Predictor:
    """The loaded model for a URI (a local folder, runs:/, models:/ or azureml:), cached."""
    return _load(model_uri).predictor


def clear_cache() -> None:
    """Forget every loaded model (e.g. after a test re-logged one under the same URI)."""
    with _cache_lock:
        _cache.clear()


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
            lines.append("x-mlflow-deploy-coercions: " + "; ".join(self.coercions))
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


def score(model_uri: str, payload: Payload, *, params: Optional[Dict[str, Any]] = None,
          validation: Optional[str] = None, error_details: bool = True) -> Response:
    """What ``POST /score`` on a server for ``model_uri`` would answer to ``payload``.

    ``validation`` defaults to the suite's mode (``--mlflow-deploy-validation``, else compatible).
    """
    mode = _mode(validation)
    raw = request_bytes(payload, params)
    predictor = load_predictor(model_uri)
    request_id = str(uuid.uuid4())
    logger = logging.getLogger(pipeline.__name__)
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



def assert_valid(model_uri: str, payload: Payload, *, params: Optional[Dict[str, Any]] = None,
                 validation: Optional[str] = None) -> Response:
    """Assert the server would answer 200; returns the Response for further checks."""
    __tracebackhide__ = True
    response = score(model_uri, payload, params=params, validation=validation)
    if response.status != 200:
        raise AssertionError("{} would not score this payload (validation: {}); the server "
                             "would answer:\n{}".format(model_uri, response.validation,
                                                        _indent(response.describe())))
    return response


def assert_rejected(model_uri: str, payload: Payload, *, status: int = 400,
                    match: Optional[str] = None, params: Optional[Dict[str, Any]] = None,
                    validation: Optional[str] = None) -> Response:
    """Assert the server would answer ``status`` and, with ``match``, a message containing it.

    ``match`` is a substring (e.g. ``"column 'age'"``) or a regular expression searched for.
    """
    __tracebackhide__ = True
    response = score(model_uri, payload, params=params, validation=validation)
    if response.status != status:
        raise AssertionError("expected HTTP {} from {} (validation: {}), but the server would "
                             "answer:\n{}".format(status, model_uri, response.validation,
                                                  _indent(response.describe())))
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
    """One model, scored in process: what the ``scoring_client`` fixture hands out."""

    model_uri: str
    validation: Optional[str] = None  # None: the suite's default
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
