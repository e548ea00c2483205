"""Will a model deploy on Azure ML without code, and how is it called? The report behind
``mlflow-deploy check MODEL_URI``.

Users otherwise learn the answer after a 20-minute cloud deployment, as a bare HTTP 500. Each check
is one line (ok, warn, fail or skip); any fail makes the exit code 1. The input example is scored
the way the server scores a request (``scoring.pipeline.score``), so a failing prediction is
reported with the status and message the server would answer. Then (unless ``server=False``) it
is posted to a real server in this interpreter (served.py: gunicorn, the model loaded in the
master and predicted in a forked worker), which shows what in-process scoring cannot: a model
that fails or hangs only after a fork. The report ends with the payload forms the model accepts,
each as a ready ``curl`` command against ``mlflow-deploy serve``.
"""
import json
import logging
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["run_check", "inspect_model", "Finding", "PayloadForm", "Report"]

SCORE_URL = "http://127.0.0.1:5001/score"  # `mlflow-deploy serve` listens here by default
CURL_ROWS = 2  # rows of the input example shown in a curl command
# the request id the input example is scored under: the server's messages for a failed request
# name theirs
REQUEST_ID = "input-example"


@dataclass
class Finding:
    check: str
    status: str  # ok | warn | fail | skip
    message: str


@dataclass
class PayloadForm:
    form: str
    description: str
    body: Dict[str, Any]
    curl: str


@dataclass
class Report:
    model_uri: str
    checks: List[Finding] = field(default_factory=list)
    payload_forms: List[PayloadForm] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(f.status == "fail" for f in self.checks)

    def add(self, check: str, status: str, message: str) -> None:
        self.checks.append(Finding(check, status, message))

    def to_json(self) -> str:
        return json.dumps({"model_uri": self.model_uri, "deployable": not self.failed,
                           "checks": [asdict(f) for f in self.checks],
                           "payload_forms": [asdict(p) for p in self.payload_forms]}, indent=2)

    def to_text(self) -> str:
        width = max(len(f.check) for f in self.checks)
        lines = ["Checking {} for Azure ML no-code deployment".format(self.model_uri)]
        lines += ["  {:5} {:{w}}  {}".format(f.status, f.check, f.message, w=width)
                  for f in self.checks]
        if self.payload_forms:
            lines.append("")
            lines.append("Payload forms this model accepts (POST /score):")
            for p in self.payload_forms:
                lines.append("  {}: {}".format(p.form, p.description))
                lines.append("    " + p.curl)
        counts = {s: sum(f.status == s for f in self.checks) for s in ("fail", "warn")}
        lines.append("")
        lines.append("{}: {} failed, {} warning(s)".format(
            "NOT DEPLOYABLE" if self.failed else "Deployable", counts["fail"], counts["warn"]))
        return "\n".join(lines)


def run_check(model_uri: str, output_format: str = "text",
              server: bool = True) -> Tuple[str, int]:
    """The report as text or JSON, and the exit code (1 when any check fails). ``server``: also
    score the input example through a real server, stopped before this returns."""
    with tempfile.TemporaryDirectory(prefix="mlflow-deploy-check-") as tmp:
        report = inspect_model(model_uri, Path(tmp), server)
    text = report.to_json() if output_format == "json" else report.to_text()
    return text, 1 if report.failed else 0


# ---- the checks -----------------------------------------------------------------------------

def inspect_model(model_uri: str, workdir: Path, server: bool = True) -> Report:
    report = Report(model_uri)
    mlmodel = _mlmodel(model_uri, workdir, report)
    if mlmodel is None:
        return report
    path, model = mlmodel
    if not _pyfunc(model, report):
        return report
    signature = _signature(model, report)
    example = _input_example(path, model, signature, report)
    _environment(path, report)
    scored = _prediction(path, example, report)
    _served(model_uri, path, example, scored, server, report)
    report.payload_forms = payload_forms(model, signature, example)
    return report


def _mlmodel(model_uri: str, workdir: Path, report: Report):
    from mlflow.exceptions import MlflowException

    from mlflow_deploy.errors import DeployError
    from mlflow_deploy.model import load_mlmodel, resolve_model_dir

    try:
        path = resolve_model_dir(model_uri, workdir / "model")
    except (DeployError, MlflowException) as exc:  # ours have clear messages; MLflow's too
        report.add("MLmodel", "fail", exc.message)
        return None
    try:
        model = load_mlmodel(path, model_uri)
    except DeployError as exc:
        report.add("MLmodel", "fail", exc.message)
        return None
    report.add("MLmodel", "ok", "readable (logged with mlflow {})".format(
        model.mlflow_version or "of unknown version"))
    return path, model


def _pyfunc(model: Any, report: Report) -> bool:
    pyfunc = model.flavors.get("python_function")
    if pyfunc is None:
        report.add("flavor", "fail", "no python_function flavor: Azure can only deploy it with a "
                   "scoring script (flavors: {})".format(", ".join(sorted(model.flavors))))
        return False
    report.add("flavor", "ok", "python_function (loader {})".format(
        pyfunc.get("loader_module", "unknown")))
    return True


def _signature(model: Any, report: Report):
    from mlflow_deploy.scoring.schema import Signature

    params = model.get_params_schema() if hasattr(model, "get_params_schema") else None
    sig = Signature.from_mlflow(model.get_input_schema(), params)
    if sig.kind == "none":
        report.add("signature", "warn", "absent: Azure guesses the payload form (list -> ndarray, "
                   "split dict -> DataFrame, other dict -> dict of arrays) and checks nothing; "
                   "log the model with a signature")
        return sig
    if sig.kind == "columns":
        required = sum(c.required for c in sig.columns)
        what = "columns: {} ({} required)".format(len(sig.columns), required)
    else:
        what = ("tensor: " if sig.kind == "tensor" else "named tensors: ") + ", ".join(
            "{}{} {}".format("'{}' ".format(t.name) if t.name else "", t.dtype.name,
                             tuple(t.shape)) for t in sig.tensors)
    given = ", ".join("'{}' ({})".format(p.name, p.type) for p in sig.params or ())
    report.add("signature", "ok", "{}; params: {}".format(what, given or "none"))
    return sig


def _input_example(path: Path, model: Any, sig: Any, report: Report) -> Optional[Dict[str, Any]]:
    from mlflow_deploy.scoring import payload, schema
    from mlflow_deploy.scoring.errors import ScoringError
    from mlflow_deploy.scoring.predictor import azure_example

    example = azure_example(str(path), model)
    if example is None:
        report.add("input example", "warn", "absent: the Swagger page has no example and "
                   "nothing can be predicted here; log the model with input_example=...")
        return None
    raw = payload.dumps(example)
    try:
        enforced = schema.enforce(payload.parse_azure(raw, "application/json"), sig, "strict")
        report.add("input example", "ok", "accepted by the signature ({})".format(
            enforced.summary()))
    except ScoringError as strict_error:
        try:
            enforced = schema.enforce(payload.parse_azure(raw, "application/json"), sig)
        except ScoringError as exc:
            report.add("input example", "fail", "rejected by the signature: " + exc.message)
            return None
        report.add("input example", "warn", "accepted only with validation: compatible ({})"
                   .format(strict_error.message))
    return example


# ---- environment --------------------------------------------------------------------------

def _environment(path: Path, report: Report) -> None:
    """The environment builder's own first steps (envs/): find the Python the model asks for and
    resolve its pins plus the scoring server's packages into a lock, without installing."""
    from mlflow_deploy.envs import EnvError, PythonNotFound, RequirementsError, lock_requirements
    from mlflow_deploy.envs.pythons import PythonVersionWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PythonVersionWarning)
            locked = lock_requirements(path)
    except PythonNotFound as exc:
        report.add("python", "fail", exc.message)
        return
    except RequirementsError as exc:
        report.add("requirements", "fail", exc.message)
        return
    except EnvError as exc:
        report.add("python", "ok", "requested Python found")
        report.add("requirements", "fail", "not installable: " + _first_lines(exc.message))
        return
    asked = "{}.{}".format(*locked.model.python) if locked.model.python else "any"
    report.add("python", "ok", "{} requested ({}); found {}".format(
        asked, locked.model.source, locked.interpreter.path))
    pinned = sum(1 for line in locked.lock.text.splitlines() if "==" in line)
    report.add("requirements", "ok", "{} requirement(s) and the scoring server's resolve to {} "
               "locked package(s) for Python {}".format(
                   len(locked.model.requirements), pinned, locked.interpreter.version))


def _first_lines(text: str, count: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[:count] if line.strip())


# ---- prediction and Azure's serialisation -------------------------------------------------

def _prediction(path: Path, example: Optional[Dict[str, Any]], report: Report) -> bool:
    """Whether the input example scored (200) in process."""
    if example is None:
        report.add("prediction", "skip", "no usable input example to predict on")
        report.add("output", "skip", "no prediction to serialise")
        return False
    from mlflow_deploy.scoring import payload, pipeline
    from mlflow_deploy.scoring.predictor import Predictor

    here = "{}.{}".format(*sys.version_info[:2])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predictor = Predictor.load(str(path))
    except ImportError as exc:
        report.add("prediction", "warn", "the model cannot be loaded in this Python ({}): {}: {}; "
                   "install its requirements here to check its predictions".format(
                       here, type(exc).__name__, _first_line(exc)))
        report.add("output", "skip", "no prediction to serialise")
        return False
    except Exception as exc:  # noqa: BLE001 - whatever the flavor's loader raises
        report.add("prediction", "fail", "the model could not be loaded: {}: {}".format(
            type(exc).__name__, _first_line(exc)))
        report.add("output", "skip", "no prediction to serialise")
        return False
    model = _Recorded(predictor)
    # what the server would log for a failed request is summed up in the report, not printed
    quiet = logging.NullHandler()
    pipeline.log.addHandler(quiet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = pipeline.score(payload.dumps(example), "application/json", model,
                                    request_id=REQUEST_ID)
    finally:
        pipeline.log.removeHandler(quiet)
    if result.status != 200:
        report.add("prediction", "fail", "the server would answer {}: {}".format(
            result.status, _server_message(result.body, model.error)))
        report.add("output", "skip", "no prediction to serialise")
        return False
    predictions = model.predictions
    report.add("prediction", "ok", "the input example scores (in Python {}): {}".format(
        here, describe_output(predictions)))
    problem = azure_serialisation_problem(predictions)
    if problem is None:
        report.add("output", "ok", "serialises to JSON the way Azure's server would")
    else:
        status, message = problem
        report.add("output", status, message)
    return True


# ---- the input example through a real server --------------------------------------------------

SERVER = "a real server (gunicorn, a forked worker)"


def _served(model_uri: str, path: Path, example: Optional[Dict[str, Any]], scored: bool,
            server: bool, report: Report) -> None:
    """Post the input example to a real server for the model, as the start-up self-test of a
    deployment does (it must answer 200), and stop the server. Its files are removed, except
    when it did not start or answer: the message then names its log, which is kept to be read."""
    if not server:
        report.add("server", "skip", "not tried (--no-server)")
        return
    if not scored:
        report.add("server", "skip", "not tried: the input example did not score in process")
        return
    from mlflow_deploy.errors import ServerFailed
    from mlflow_deploy.scoring import payload

    from .served import NoAnswer, Server

    started = Server(path, model_uri=model_uri)
    keep = False
    try:
        started.start()
    except ServerFailed as exc:
        report.add("server", "fail", "{} did not start: {}".format(SERVER, exc.message))
        return
    try:
        answer = started.post(payload.dumps(example), headers={"x-request-id": REQUEST_ID})
    except NoAnswer as exc:
        keep = True
        report.add("server", "fail", "{}: {}".format(SERVER, exc.message))
        return
    finally:
        started.stop(keep_files=keep)
    if answer.status == 200:
        report.add("server", "ok", "{} answered 200 to the input example in {:.0f} ms".format(
            SERVER, answer.ms))
        return
    message = answer.message or "HTTP {}".format(answer.status)
    logged = answer.telling_log_line
    if logged and logged not in message:
        message += " (logged: {})".format(logged)
    report.add("server", "fail", "{} answered {}, where the in-process prediction did not: {}"
               .format(SERVER, answer.status, message))


class _Recorded:
    """The loaded model as the scoring pipeline calls it, keeping what its predict returned or
    raised: the Azure serialisation check needs the predictions themselves (the pipeline hands back
    only their rendering), and the server's answer to a failure points at its log instead of
    naming the error."""

    def __init__(self, predictor: Any):
        self._predictor = predictor
        self.signature = predictor.signature
        self.predictions: Any = None
        self.error: Optional[BaseException] = None

    def predict(self, model_input: Any, params: Optional[Dict[str, Any]] = None) -> Any:
        try:
            self.predictions = self._predictor.predict(model_input, params)
        except Exception as exc:
            self.error = exc
            raise
        return self.predictions


def _server_message(body: bytes, error: Optional[BaseException]) -> str:
    """The server's message, and what its log would say about the model's error when the message
    does not (a failure or MLflow's own enforcement: the message only names the request id)."""
    message = json.loads(body)["message"]
    if error is None:
        return message
    logged = "{}: {}".format(type(error).__name__, _mlflow_reason(error) or _first_line(error))
    return message if logged in message else "{} (logged: {})".format(message, logged)


def _mlflow_reason(error: BaseException) -> Optional[str]:
    """The reason in MLflow's enforcement message, which otherwise starts with the data itself
    ("Failed to enforce schema of data '...' with schema '...'. Error: <reason>")."""
    if type(error).__name__ != "MlflowException":
        return None
    text = str(error)
    at = text.rfind("Error: ")
    return _first_line(text[at + len("Error: "):]) if at >= 0 else None


def _first_line(exc: Any) -> str:
    """The first line of an exception (or a text), cut like the server cuts a model's rejection
    message."""
    from mlflow_deploy.scoring.pipeline import MAX_DETAIL

    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return first[:MAX_DETAIL] + ("..." if len(first) > MAX_DETAIL else "")


def describe_output(predictions: Any) -> str:
    import numpy as np
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        return "a DataFrame of {} row(s)".format(len(predictions))
    if isinstance(predictions, pd.Series):
        return "a Series of {} value(s)".format(len(predictions))
    if isinstance(predictions, np.ndarray):
        return "an array of shape {}".format(tuple(predictions.shape))
    return "a {}".format(type(predictions).__name__)


def azure_jsonable(predictions: Any) -> Any:
    """What Azure's MLflow scoring script hands to json.dumps (MLflow's _get_jsonable_obj)."""
    import numpy as np
    import pandas as pd

    if isinstance(predictions, np.ndarray):
        return predictions.tolist()
    if isinstance(predictions, pd.DataFrame):
        return predictions.to_dict(orient="records")
    if isinstance(predictions, pd.Series):
        return pd.DataFrame(predictions).to_dict(orient="records")
    return predictions


def azure_serialisation_problem(predictions: Any) -> Optional[Tuple[str, str]]:
    """(status, message) when Azure's server would fail on or garble this output, else None."""
    jsonable = azure_jsonable(predictions)
    try:
        json.dumps(jsonable)
    except (TypeError, ValueError, OverflowError):
        return "fail", ("Azure's server would answer 500: the output holds {}, which its JSON "
                        "encoder cannot write (mlflow-deploy serves it); return a DataFrame, "
                        "an array or a list of plain values".format(_unserialisable(jsonable)))
    try:
        json.dumps(jsonable, allow_nan=False)
    except ValueError:
        return "warn", ("the output has NaN or infinity: Azure writes them as NaN/Infinity, "
                        "which is not valid JSON for most clients (mlflow-deploy writes null)")
    return None


def _unserialisable(value: Any, depth: int = 0) -> str:
    """Name the first value plain json.dumps cannot write."""
    import datetime

    import numpy as np

    if isinstance(value, dict):
        if any(isinstance(v, np.ndarray) for v in value.values()):
            return "a dict of arrays"
        for v in value.values():
            found = _unserialisable(v, depth + 1)
            if found:
                return found
        return "" if depth else "values of an unsupported type"
    if isinstance(value, (list, tuple)):
        for v in value:
            found = _unserialisable(v, depth + 1)
            if found:
                return found
        return "" if depth else "values of an unsupported type"
    if isinstance(value, np.ndarray):
        return "numpy arrays"
    if isinstance(value, np.generic):
        return "numpy scalars ({})".format(type(value).__name__)
    if isinstance(value, (datetime.date, datetime.datetime, np.datetime64)):
        return "timestamps"
    if value is None or isinstance(value, (str, int, float, bool)):
        return ""
    return "values of type {}".format(type(value).__name__)


# ---- payload forms ----------------------------------------------------------------------

PLACEHOLDERS = {"double": 0.0, "float": 0.0, "long": 0, "integer": 0, "boolean": False,
                "string": "text", "binary": "", "datetime": "2024-01-01T00:00:00", "array": [],
                "object": {}, "map": {}}


def payload_forms(model: Any, sig: Any, example: Optional[Dict[str, Any]]) -> List[PayloadForm]:
    """Each form the server accepts for this signature, with a body from the input example."""
    params = _example_params(sig, example)
    if sig.kind == "columns":
        split = _split_body(sig, example)
        # the only form: Azure's server fails a list of rows or of records
        forms = [("split", "columns in any order, 'index' optional, extra columns dropped",
                  split)]
    elif sig.kind == "tensor":
        data = example["input_data"][:CURL_ROWS] if example else _placeholder(sig.tensors[0])
        forms = [("tensor", "a nested list of shape {} (-1: any size)".format(
            tuple(sig.tensors[0].shape)), data)]
    elif sig.kind == "named":
        data = ({k: v[:CURL_ROWS] for k, v in example["input_data"].items()} if example else
                {t.name: _placeholder(t) for t in sig.tensors})
        forms = [("named", "an object with every named tensor", data)]
    else:
        forms = [
            ("list", "no signature: a (nested) list becomes a numpy array", [[0.0, 0.0]]),
            ("split", "no signature: columns/index/data becomes a DataFrame",
             {"columns": ["a", "b"], "index": [0], "data": [[0.0, 0.0]]}),
            ("dict", "no signature: any other object becomes a dict of arrays",
             {"a": [0.0], "b": [0.0]}),
        ]
    out = []
    for form, description, data in forms:
        body = {"input_data": data}
        if params:
            body["params"] = params
        if sig.params:
            description += "; params optional: " + ", ".join(p.name for p in sig.params)
        out.append(PayloadForm(form, description, body, curl(body)))
    return out


def _example_params(sig: Any, example: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if example and example.get("params"):
        return example["params"]
    if sig.params:
        return {p.name: p.default for p in sig.params if p.default is not None} or None
    return None


def _split_body(sig: Any, example: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    data = example.get("input_data") if example else None
    if isinstance(data, dict) and "columns" in data and "data" in data:
        rows = data["data"][:CURL_ROWS]
        body = {"columns": data["columns"], "index": list(range(len(rows))), "data": rows}
        return body
    columns = [c for c in sig.columns if c.required]
    return {"columns": [c.name for c in columns], "index": [0],
            "data": [[PLACEHOLDERS.get(c.type) for c in columns]]}


def _placeholder(tensor: Any) -> Any:
    value: Any = PLACEHOLDERS.get({"f": "double", "i": "long", "u": "long", "b": "boolean"}
                                  .get(tensor.dtype.kind, "string"))
    for d in reversed(tuple(tensor.shape) or (1,)):
        value = [value] * (1 if d == -1 else d)
    return value


def curl(body: Dict[str, Any]) -> str:
    text = json.dumps(body, separators=(",", ":")).replace("'", "'\\''")
    return ("curl -X POST {} -H 'Content-Type: application/json' -d '{}'".format(SCORE_URL, text))
