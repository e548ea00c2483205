"""The one interface every front end scores through, chosen once when the server loads.

A deployment serves either an MLflow model (``ModelScorer``: parse -> enforce -> predict ->
render, pipeline.py) or a user's scoring script (``script.ScoringScript``: Azure's ``init()`` and
``run()``). The Flask app, the gunicorn hooks, the testing helpers and ``mlflow-deploy check`` call
only the ``Scorer`` protocol and never ask which of the two they hold; a request reaches it as a
transport-neutral ``ScoreRequest`` (MLServer's dataplane idea), so the same scorer answers behind
Flask, a test or a gateway.
"""
import json
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

from . import payload, pipeline
from .errors import NotFound, ScoringError, StartupError, one_line
from .options import DEFAULTS, ScoringOptions
from .pipeline import Result

__all__ = ["Scorer", "ScoreRequest", "ModelScorer"]

JSON = "application/json"


@dataclass
class ScoreRequest:
    """One scoring request, whatever carried it. ``native`` is the web framework's own request,
    for the one consumer that wants it: a script whose run() is decorated with Azure's @rawhttp."""

    body: bytes = b""
    content_type: Optional[str] = JSON
    method: str = "POST"
    args: Mapping[str, List[str]] = field(default_factory=dict)  # the query string, per key
    headers: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""
    native: Any = None

    def arg(self, name: str) -> Optional[str]:
        values = self.args.get(name) or []
        return values[0] if values else None


class Scorer:
    """What a server, a batch worker and the testing helpers call (a Protocol by convention: both
    implementations define every method)."""

    def prepare_worker(self, heartbeat: Callable[[], None]) -> None:
        """In each worker after the fork, before it takes traffic (never in a process that will
        fork: a prediction may start native thread pools that do not survive a fork)."""
        raise NotImplementedError

    def score(self, request: ScoreRequest) -> Result:
        """Azure's ``/score`` (POST, or GET with the input in the query string)."""
        raise NotImplementedError

    def invocations(self, request: ScoreRequest) -> Result:
        """MLflow's ``POST /invocations``."""
        raise NotImplementedError

    def swagger(self, version: str, title: str) -> Result:
        """``GET /swagger.json?version=...``."""
        raise NotImplementedError

    def describe(self) -> Dict[str, Any]:
        """What ``/version`` says about what is served."""
        raise NotImplementedError


#: loader modules whose load_model is fork-safe: it starts no native thread pool, so the gunicorn
#: master may load the model once and fork workers that share it. Any other flavor (LightGBM and
#: XGBoost parse the model with OpenMP, TensorFlow starts its runtime's pools, a custom pyfunc may
#: do anything) is loaded by each worker after the fork; the master only imports its loader.
FORK_SAFE_LOADERS = frozenset({"mlflow.sklearn", "mlflow.statsmodels"})


class ModelScorer(Scorer):
    """An MLflow model: every request through pipeline.py, with this deployment's options."""

    def __init__(self, predictor: Any, options: ScoringOptions = DEFAULTS,
                 model_dir: Optional[str] = None):
        self._predictor = predictor  # None: loaded by prepare_worker (or on first use)
        self.model_dir = model_dir or getattr(predictor, "model_dir", None)
        self.options = options
        # what every request passes to the pipeline: made once, not per request
        self._pipeline_options = {"validation": options.validation.value,
                                  "error_details": options.error_details}

    @classmethod
    def load(cls, model_dir: str, options: ScoringOptions = DEFAULTS,
             will_fork: bool = True) -> "ModelScorer":
        """Load the model now, unless this process ``will_fork`` workers and the flavor's load is
        not known to be fork-safe: then only import its loader, and let each worker load it."""
        import importlib

        import mlflow.pyfunc  # noqa: F401  in the master either way: the costly import

        from .predictor import Predictor, loader_module

        loader = loader_module(model_dir)
        if loader in FORK_SAFE_LOADERS or not will_fork:
            return cls(Predictor.load(model_dir), options, model_dir)
        if loader:
            importlib.import_module(loader)
        return cls(None, options, model_dir)

    @property
    def predictor(self) -> Any:
        if self._predictor is None:
            from .predictor import Predictor

            self._predictor = Predictor.load(self.model_dir)
        return self._predictor

    @property
    def signature(self) -> Any:
        return self.predictor.signature

    def prepare_worker(self, heartbeat: Callable[[], None]) -> None:
        """Load the model here if the master did not, then score its own input example once, so
        first requests do not pay lazy set-up (a failed example is only logged: the request that
        meets it gets its own answer)."""
        if self._predictor is None:
            with heartbeating(heartbeat):
                try:
                    self.predictor
                except Exception as exc:  # noqa: BLE001 - mlflow and the flavor may raise anything
                    raise StartupError("the model could not be loaded: " + one_line(exc),
                                       traceback.format_exc()) from exc
        if self.predictor.input_example is None:
            return
        body = json.dumps(self.predictor.input_example).encode("utf-8")
        result = pipeline.score(body, JSON, self.predictor, validation="compatible")
        if result.status != 200:
            print("mlflow-deploy: scoring the model's input example answered {}: {}".format(
                result.status, result.body.decode("utf-8", "replace")), flush=True)

    def score(self, request: ScoreRequest) -> Result:
        if request.method == "POST":
            return pipeline.score(request.body, request.content_type, self.predictor,
                                  request_id=request.request_id, **self._pipeline_options)
        try:
            parsed = payload.parse_azure_query(request.arg("input_data") or "null")
        except ScoringError as exc:
            return pipeline.error_result(exc)
        return pipeline.score_parsed(parsed, self.predictor, request_id=request.request_id,
                                     **self._pipeline_options)

    def invocations(self, request: ScoreRequest) -> Result:
        return pipeline.invocations(request.body, request.content_type, self.predictor,
                                    request_id=request.request_id, **self._pipeline_options)

    def predict_parsed(self, parsed: payload.ParsedInput, request_id: str = ""
                       ) -> pipeline.Scored:
        """Enforce and predict without rendering (batch files keep predictions as objects)."""
        return pipeline.predict_parsed(parsed, self.predictor, request_id=request_id,
                                       **self._pipeline_options)

    def swagger(self, version: str, title: str) -> Result:
        from .swagger import build_swagger  # mlflow.types: loaded on first use

        try:
            doc = build_swagger(version, input_schema=self.predictor.input_schema,
                                output_schema=self.predictor.output_schema,
                                params_schema=self.predictor.params_schema,
                                example=self.predictor.input_example, title=title)
        except NotFound as exc:
            return pipeline.error_result(exc)
        return Result(200, payload.dumps(doc))

    def describe(self) -> Dict[str, Any]:
        return pipeline.describe(self.predictor)


@contextmanager
def heartbeating(heartbeat: Callable[[], None], every_s: float = 1.0) -> Iterator[None]:
    """Call ``heartbeat`` every second while the block runs: gunicorn kills a worker that is
    silent for its timeout, and a worker's preparation (a large model's load) may take longer."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every_s):
            heartbeat()

    threading.Thread(target=beat, daemon=True).start()
    try:
        yield
    finally:
        done.set()
