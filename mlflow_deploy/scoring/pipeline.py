"""The one path from request bytes to response bytes: parse -> enforce -> predict -> render.

Online (/score, /invocations), `mlflow-deploy validate` and batch all come through here.
"""
import http
import logging
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from . import payload, schema
from .errors import (COERCIONS_HEADER, ModelFailed, ModelRejectedInput, ScoringError,
                     ScoringTimeout)

if TYPE_CHECKING:  # predictor imports mlflow, which a scoring-script server must not need
    from .predictor import Predictor

log = logging.getLogger("mlflow_deploy.scoring")

# exceptions by which a model says "this input is wrong": a 400 naming the exception, not a 500
REJECTIONS = (ValueError, TypeError, KeyError, IndexError)
MAX_DETAIL = 300


@dataclass
class Result:
    status: int
    body: bytes
    content_type: str = "application/json"
    coercions: List[str] = field(default_factory=list)
    exec_ms: Optional[float] = None  # time in the model, on success
    # for the server's metrics, on success: the predict call alone, the rows scored, and the
    # kind of each coercion (schema.py's kinds, in the order of ``coercions``)
    predict_s: Optional[float] = None
    rows: Optional[int] = None
    coercion_kinds: List[str] = field(default_factory=list)
    headers: List[Tuple[str, str]] = field(default_factory=list)  # a script's own Response headers
    reason: Optional[str] = None  # an error of ours: what the access log may say of it


def error_body(message: str) -> bytes:
    return payload.dumps({"message": message})


def error_result(exc: ScoringError) -> Result:
    return Result(exc.status, error_body(exc.message), reason=exc.reason)


def check(raw: bytes, content_type: Optional[str], predictor: "Predictor",
          validation: str = "compatible") -> schema.Enforced:
    """Parse and enforce an Azure body without predicting (`mlflow-deploy validate`)."""
    parsed = payload.parse_azure(raw, content_type)
    return schema.enforce(parsed, predictor.signature, validation)


def score(raw: bytes, content_type: Optional[str], predictor: "Predictor", *,
          validation: str = "compatible", error_details: bool = True,
          request_id: str = "") -> Result:
    """Azure's POST /score."""
    return _run(lambda: payload.parse_azure(raw, content_type), payload.render_azure,
                predictor, validation, error_details, request_id)


def score_parsed(parsed: payload.ParsedInput, predictor: "Predictor", *,
                 validation: str = "compatible", error_details: bool = True,
                 request_id: str = "") -> Result:
    """An input already parsed (GET /score's query string, batch files)."""
    return _run(lambda: parsed, payload.render_azure, predictor, validation, error_details,
                request_id)


class Scored(NamedTuple):
    """What enforcing and predicting gave: the predictions, the enforced input (its rows and
    coercions), and the seconds in the model's predict call alone (the server's metric)."""
    predictions: Any
    enforced: schema.Enforced
    predict_s: float


def predict_parsed(parsed: payload.ParsedInput, predictor: "Predictor", *,
                   validation: str = "compatible", error_details: bool = True,
                   request_id: str = "") -> Scored:
    """Enforce and predict without rendering: the step every path shares (the server renders
    the predictions, batch files keep them as objects to write one row each). Raises the
    ScoringError the online path answers with."""
    enforced = schema.enforce(parsed, predictor.signature, validation)
    started = time.perf_counter()
    predictions = predict(predictor, enforced, error_details, request_id)
    return Scored(predictions, enforced, time.perf_counter() - started)


def invocations(raw: bytes, content_type: Optional[str], predictor: "Predictor", *,
                validation: str = "compatible", error_details: bool = True,
                request_id: str = "") -> Result:
    """MLflow's POST /invocations."""
    return _run(lambda: payload.parse_mlflow(raw, content_type), payload.render_mlflow,
                predictor, validation, error_details, request_id)


def _run(parse: Callable[[], payload.ParsedInput], render: Callable[[Any], bytes],
         predictor: "Predictor", validation: str, error_details: bool, request_id: str) -> Result:
    try:
        parsed = parse()
        started = time.perf_counter()
        scored = predict_parsed(parsed, predictor, validation=validation,
                                error_details=error_details, request_id=request_id)
        exec_ms = (time.perf_counter() - started) * 1000.0
        enforced = scored.enforced
        return Result(200, _rendered(render, scored.predictions, request_id),
                      coercions=enforced.coercions, exec_ms=exec_ms, predict_s=scored.predict_s,
                      rows=enforced.rows, coercion_kinds=enforced.coercion_kinds)
    except ScoringTimeout:
        raise  # the server answers 504 and recycles the worker
    except ScoringError as exc:
        return error_result(exc)


def _rendered(render: Callable[[Any], bytes], predictions: Any, request_id: str) -> bytes:
    """The predictions as the response body; an output no JSON encoding is known for (a
    Timedelta, an arbitrary object) is the model's failure, a 500 naming the type."""
    try:
        return render(predictions)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        log.error("request %s: the model's output could not be serialised\n%s", request_id,
                  traceback.format_exc())
        type_name = payload.unserialisable_type(exc) or type(predictions).__name__
        raise ModelFailed("The model's output could not be serialised (type {}); the deployment "
                          "log has the details for request id {}".format(type_name, request_id))


def predict(predictor: "Predictor", enforced: schema.Enforced, error_details: bool = True,
            request_id: str = "") -> Any:
    """Call the model; sort its failures into 'rejected the input' (400) and 'failed' (500).
    Either error carries the model's traceback for the caller's log."""
    try:
        return predictor.predict(enforced.model_input, enforced.params)
    except ScoringTimeout:
        raise
    except REJECTIONS as exc:
        error: ScoringError = _rejected(exc, error_details)
        error.traceback = traceback.format_exc()
    except Exception as exc:  # noqa: BLE001 - the model may raise anything; the caller gets 500
        if _is_mlflow_input_error(exc):
            # MLflow's own enforcement inside predict: its text starts with a repr of the data
            log.error("request %s: MLflow's signature enforcement rejected the input: %s",
                      request_id, exc)
            error = ModelRejectedInput(
                "The input passed mlflow-deploy's checks but MLflow's own signature enforcement "
                "rejected it; the deployment log has its message for request id " + request_id)
        else:
            log.error("request %s: the model failed\n%s", request_id, traceback.format_exc())
            error = ModelFailed("The model failed while scoring; the deployment log has the "
                                "traceback for request id " + request_id)
        error.traceback = traceback.format_exc()
    raise error


def _is_mlflow_input_error(exc: Exception) -> bool:
    """MLflow's MlflowException with an input error code, or raised by MLflow's signature
    enforcement itself. mlflow is not imported for it: where mlflow.exceptions was never
    imported (a scoring script's server), nothing raised one."""
    module = sys.modules.get("mlflow.exceptions")
    base = getattr(module, "MlflowException", None)
    if base is None or not isinstance(exc, base):
        return False
    return getattr(exc, "error_code", None) in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST") or \
        _raised_by_enforcement(exc)


def _raised_by_enforcement(exc: BaseException) -> bool:
    """Whether MLflow's own signature enforcement (mlflow.models.utils' _enforce_* functions)
    raised ``exc``: mlflow 2.x raises some of its input errors there with no error code (a
    CSV body without a named tensor's column: "Model is missing inputs"), where 3.x re-raises
    them with one."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    return frame.f_globals.get("__name__") == "mlflow.models.utils" and \
        frame.f_code.co_name.startswith("_enforce")


def _rejected(exc: BaseException, error_details: bool) -> ModelRejectedInput:
    if not error_details:
        return ModelRejectedInput("The model rejected the input (details are hidden: "
                                  "error_details is false).")
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > MAX_DETAIL:
        first = first[:MAX_DETAIL] + "..."
    return ModelRejectedInput("The model rejected the input: {}: {}".format(
        type(exc).__name__, first), reason="The model rejected the input: " + type(exc).__name__)


def response_headers(result: Result, request_id: str, client_request_id: str) -> Dict[str, str]:
    """Azure's scoring headers (azureml-inference-server-http's), plus the coercions compatible
    mode applied."""
    headers = {"x-ms-request-id": request_id, "x-request-id": request_id,
               "x-ms-client-request-id": client_request_id,
               "x-ms-run-function-failed": "False" if result.status < 400 else "True"}
    if result.exec_ms is not None:
        headers["x-ms-run-fn-exec-ms"] = "{:.3f}".format(result.exec_ms)
    if result.coercions:
        headers[COERCIONS_HEADER] = "; ".join(result.coercions)
    return headers


def raw_answer(result: Result, request_id: str, client_request_id: str) -> bytes:
    """A whole HTTP/1.1 answer written straight to a client's socket, for a request the app
    does not answer itself (gunicorn refused it, or the watchdog answers for a stuck worker):
    the app's body and headers, the connection closed after it."""
    lines = ["HTTP/1.1 {} {}".format(result.status, http.HTTPStatus(result.status).phrase),
             "Content-Type: " + result.content_type,
             "Content-Length: {}".format(len(result.body)), "Connection: close"]
    lines += ["{}: {}".format(name, value) for name, value in
              response_headers(result, request_id, client_request_id).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + result.body


def describe(predictor: "Predictor") -> Dict[str, Any]:
    """What /version reports about the loaded model."""
    return {"signature": predictor.signature.kind, "flavors": predictor.flavors,
            "model_mlflow_version": predictor.mlflow_version}
