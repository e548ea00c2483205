"""A user scoring script (Azure's code_configuration), run the way azureml-inference-server-http
runs it: import the script once, call its init() once per worker before the worker takes traffic,
call run() per request and render what it returns.

Azure's sources this follows: azureml_inference_server_http/server/user_script.py (UserScript:
load_script, _analyze_run, invoke_run), input_parsers.py (JsonStringInput, RawRequestInput,
ObjectInput), routes.py (handle_score, wrap_response) and api/aml_response.py (AMLResponse). The
script brings its own models and parsing, so nothing here imports mlflow.

run() is called in one of Azure's three ways, decided once at import:
  text     run(raw_data): the body as a str (GET: the query string as one JSON text)
  request  run(request) under Azure's @rawhttp: the request object itself
  schema   run(a, b, ...) under inference-schema's @input_schema: the body's JSON keys as arguments
and each also gets request_headers (a dict) when run() declares that parameter.
"""
import importlib.util
import inspect
import json
import logging
import os
import sys
import time
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from . import payload
from .errors import (BadRequest, ModelFailed, NotFound, PayloadError, ScoringError,
                     ScoringTimeout, StartupError, one_line)
from .pipeline import Result, error_result
from .scorer import JSON, ScoreRequest, Scorer, heartbeating

log = logging.getLogger("mlflow_deploy.scoring")

ENTRY_MODULE = "entry_module"  # the module name Azure imports the script under
# Azure's body for any exception out of run() (routes.py, handle_score)
RUN_FAILED = "An unexpected error occurred in scoring script. Check the logs for more info."
# where Azure's @rawhttp decorator records that run() wants the request object itself
RAW_HTTP_FLAGS = ("azureml_inference_server_http.api.aml_request",
                  "azureml.contrib.services.aml_request")
SCHEMA_UTIL = "inference_schema.schema_util"  # where inference-schema tells a decorated run()
# a Response's own framing headers: the server sets these from the body it sends
_FRAMING = ("content-type", "content-length", "transfer-encoding")
# the files Azure serves as a scoring script's swagger, by version (server/swagger.py)
SCRIPT_SWAGGER_FILES = {"2": ("swagger.json", "swagger2.json"), "3": ("swagger3.json",),
                        "3.1": ("swagger3.1.json",)}
SWAGGER_ALIASES = {"2.0": "2", "3.0": "3"}


def azure_environment(code_dir: str, script_path: str, azureml_model_dir: Optional[str],
                      extra: Optional[Mapping[str, str]] = None) -> Callable[[], None]:
    """Set what Azure gives a scoring script, online or batch, and return what undoes it.

    AZUREML_MODEL_DIR (the model), AML_APP_ROOT and AZUREML_ENTRY_SCRIPT (the code, as Azure's
    inference server sets them: amlserver.py, config.py), ``extra`` (a batch job's output path,
    a deployment's environment_variables), and the code folder on sys.path, appended as Azure
    does so that the script's helper modules import and the stdlib cannot be shadowed.
    """
    env = dict(extra or {})
    env["AML_APP_ROOT"] = code_dir
    env["AZUREML_ENTRY_SCRIPT"] = script_path
    if azureml_model_dir is not None:
        env["AZUREML_MODEL_DIR"] = os.path.abspath(azureml_model_dir)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    added = [path for path in dict.fromkeys([code_dir, os.path.dirname(script_path)])
             if path not in sys.path]
    sys.path.extend(added)

    def undo() -> None:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for path in added:
            if path in sys.path:
                sys.path.remove(path)

    return undo


def import_script(script_path: str, module_name: str) -> Any:
    """Import a scoring script as ``module_name``; registered in sys.modules so that pickle and
    dataclasses find the script's own classes. Raises StartupError with the script's traceback."""
    spec = importlib.util.spec_from_file_location(module_name, script_path)
    if spec is None or spec.loader is None:
        raise StartupError("the scoring script is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module_name, None)
        raise StartupError("the scoring script could not be imported: " + one_line(exc),
                          traceback.format_exc()) from exc
    return module


class ScoringScript(Scorer):
    """One imported scoring script and how its run() wants to be called."""

    def __init__(self, module: Any, name: str, code_dir: str):
        self.module = module
        self.name = name
        self.code_dir = code_dir
        for function in ("init", "run"):
            if not callable(getattr(module, function, None)):
                raise StartupError("the scoring script has no {}() function".format(function))
        self.run = module.run
        self.inputs, self.takes_headers = _run_parameters(self.run)
        self.input_form = _input_form(self.run)

    @classmethod
    def load(cls, code_dir: str, scoring_script: str, azureml_model_dir: str) -> "ScoringScript":
        """Set up Azure's environment and import the script (in the gunicorn master)."""
        code_dir = os.path.abspath(code_dir)
        path = os.path.join(code_dir, scoring_script)
        if not os.path.isfile(path):
            raise StartupError("the scoring script is not in the code folder")
        azure_environment(code_dir, path, azureml_model_dir)  # for the server's whole life
        with working_dir(code_dir):
            module = import_script(path, ENTRY_MODULE)
        return cls(module, scoring_script, code_dir)

    def prepare_worker(self, heartbeat: Callable[[], None]) -> None:
        """In a worker, before it serves: cwd becomes the code folder, then the script's init(),
        with ``heartbeat`` called every second meanwhile (init() may load a large model)."""
        os.chdir(self.code_dir)
        with heartbeating(heartbeat):
            try:
                self.module.init()
            except (Exception, SystemExit) as exc:
                raise StartupError("the scoring script's init() failed: " + one_line(exc)) \
                    from exc

    def score(self, request: ScoreRequest) -> Result:
        """POST or GET /score: the request -> run() -> the response."""
        request_id = request.request_id
        try:
            arguments = self._arguments(request)
        except ScoringError as exc:
            return error_result(exc)
        started = time.perf_counter()
        try:
            output = self.run(**arguments)
        except ScoringTimeout:
            raise  # the server answers 504 and recycles the worker
        except Exception:  # noqa: BLE001 - the script may raise anything: Azure's generic 500
            log.error("request %s: the scoring script's run() failed\n%s", request_id,
                      traceback.format_exc())
            return error_result(ModelFailed(RUN_FAILED))
        ran = time.perf_counter() - started
        result = render(output, request_id)
        result.exec_ms = ran * 1000.0
        result.predict_s = ran  # run() is a script's predict
        return result

    def invocations(self, request: ScoreRequest) -> Result:
        return error_result(NotFound("This deployment runs a scoring script: score with POST "
                                     "/score."))

    def swagger(self, version: str, title: str) -> Result:
        """The swagger file the user put in the code folder, as Azure serves a script's. (Azure
        generates one for inference-schema decorated run() functions; that is not done here.)"""
        found: Dict[str, str] = {}
        for known, names in SCRIPT_SWAGGER_FILES.items():
            paths = [os.path.join(self.code_dir, name) for name in names]
            paths = [path for path in paths if os.path.isfile(path)]
            if paths:
                found[known] = paths[0]
        supported = ", ".join(sorted(found))
        wanted = SWAGGER_ALIASES.get(version, version)
        if wanted not in SCRIPT_SWAGGER_FILES:
            return error_result(NotFound("Swagger version [{}] is not valid. Supported versions: "
                                         "[{}].".format(version, supported)))
        if wanted not in found:
            return error_result(NotFound(
                "Swagger version [{}] is not supported for the scoring script. Supported "
                "swagger versions: [{}].".format(version, supported)))
        with open(found[wanted], "rb") as f:
            return Result(200, f.read(), JSON)

    def describe(self) -> Dict[str, Any]:
        """What /version reports about the script."""
        return {"scoring_script": self.name, "run_input": self.input_form}

    def _arguments(self, request: ScoreRequest) -> Dict[str, Any]:
        body = request.body
        query = request.method != "POST"
        arguments: Dict[str, Any] = {}
        if self.input_form == "request":  # Azure's RawRequestInput
            arguments[self.inputs[0].name] = request.native
        elif self.input_form == "schema":  # Azure's ObjectInput
            fields = (query_fields(request.args) if query
                      else payload.json_object(body, request.content_type))
            for parameter in self.inputs:
                value = fields.get(parameter.name, parameter.default)
                if value is inspect.Parameter.empty:
                    raise PayloadError("A value is not provided for the '{}' parameter.".format(
                        parameter.name))
                arguments[parameter.name] = value
        else:  # Azure's JsonStringInput
            text = json.dumps(query_fields(request.args)) if query else _text(body)
            arguments[self.inputs[0].name] = text
        if self.takes_headers:
            arguments["request_headers"] = dict(request.headers)
        return arguments


def _run_parameters(run: Any) -> Tuple[List[inspect.Parameter], bool]:
    """(run()'s input parameters, whether it takes request_headers): Azure's _analyze_run."""
    parameters = list(inspect.signature(run).parameters.values())
    if any(p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in parameters):
        raise StartupError("run() cannot accept positional-only arguments, *args, or **kwargs.")
    inputs = [p for p in parameters if p.name != "request_headers"]
    if not inputs:
        raise StartupError("run() needs to accept an argument for input data.")
    return inputs, len(inputs) < len(parameters)


def _input_form(run: Any) -> str:
    """"request" under Azure's @rawhttp, "schema" under @input_schema, else "text"."""
    raw_http = any(getattr(sys.modules.get(name), "_rawHttpRequested", False)
                   for name in RAW_HTTP_FLAGS)
    schema_util = sys.modules.get(SCHEMA_UTIL)
    decorated = schema_util is not None and bool(schema_util.is_schema_decorated(run))
    if raw_http and decorated:
        raise StartupError("run() cannot be decorated with both @rawhttp and @input_schema")
    return "request" if raw_http else "schema" if decorated else "text"


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("Input cannot be decoded as UTF-8 (invalid byte at position {}).".format(
            exc.start)) from None


def query_fields(args: Mapping[str, List[str]]) -> Dict[str, Any]:
    """GET /score?a=1&b=[1,2]: each value parsed as JSON when it is JSON, repeated keys as a list
    (Azure's _parse_get_parameters)."""
    parsed: Dict[str, Any] = {}
    for key, raw in args.items():
        values = [_json_or_text(v) for v in raw]
        parsed[key] = values[0] if len(values) == 1 else values
    return parsed


def _json_or_text(value: str) -> Any:
    """Text nested past payload.MAX_DEPTH stays text, as any other value that is not JSON."""
    try:
        return payload.loads(value)
    except ValueError:
        return value


def render(output: Any, request_id: str = "") -> Result:
    """run()'s return value as Azure answers it (routes.py wrap_response, AMLResponse):
    a Response passes through; None is {}; anything else, a str included, is JSON."""
    if _is_response(output):
        headers: List[Tuple[str, str]] = [(k, v) for k, v in output.headers.items()
                                          if k.lower() not in _FRAMING]
        return Result(output.status_code, output.get_data(),
                      output.headers.get("Content-Type") or "text/plain", headers=headers)
    if output is None:
        return Result(200, b"{}")
    try:
        return Result(200, payload.render_azure(output))
    except (TypeError, ValueError, OverflowError):
        log.error("request %s: run() returned a value that cannot be written as JSON\n%s",
                  request_id, traceback.format_exc())
        return error_result(ModelFailed(
            "The scoring script's run() returned a value of type '{}' that cannot be written "
            "as JSON; return a str, a JSON-serialisable value or a Response.".format(
                type(output).__name__)))


def _is_response(output: Any) -> bool:
    """A flask/werkzeug Response (Azure's AMLResponse is one), without importing flask here."""
    return all(hasattr(output, a) for a in ("status_code", "headers", "get_data"))


@contextmanager
def working_dir(path: str) -> Iterator[None]:
    """cwd = the code folder while the script imports; the gunicorn master keeps its own after."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def load_script(config: Any) -> Optional[ScoringScript]:
    """The config's scoring script, or None when the deployment serves an MLflow model."""
    if not config.scoring_script:
        return None
    code_dir, name = config.code_dir, config.scoring_script
    if not code_dir:  # no code folder: the script's own folder is the app root
        code_dir, name = os.path.split(os.path.abspath(name))
    return ScoringScript.load(code_dir, name, config.azureml_model_dir or config.model_dir)
