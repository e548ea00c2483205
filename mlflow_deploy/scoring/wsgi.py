"""gunicorn's entry: `mlflow_deploy.scoring.wsgi:app`.

Loaded once in the gunicorn master (preload) and forked into the workers, so a worker that is
recycled after a timeout starts serving at once. A model that fails to load is reported in the
ready file, which the control plane waits on.

The master loads the model but never predicts: a prediction may start native thread pools
(OpenMP in LightGBM, XGBoost, scikit-learn's HistGradientBoosting; MKL; torch), and libgomp's
pool does not survive a fork: a worker forked after it blocks forever in its first parallel
region. Each worker warms up (scores the input example once) after the fork, before it takes
traffic.

A deployment with a scoring script (Azure's code_configuration) imports the script here instead of
loading an MLflow model. Azure calls the script's init() once per worker, so each worker runs it
(init_worker, from gunicorn's post_worker_init) before it takes traffic, and the last one to finish
reports the revision ready.
"""
import gc
import json
import multiprocessing
import os
import sys
import threading
import traceback
from typing import Any, Callable, Optional

from . import pipeline
from .app import create_app
from .config import ServerConfig
from .errors import one_line
from .script import ScoringScript, ScriptError, load_script

# gunicorn halts the master when a worker exits with this; Azure's server exits with 3 as well
WORKER_BOOT_ERROR = 3
HEARTBEAT_S = 1.0

_config: Optional[ServerConfig] = None
_script: Optional[ScoringScript] = None
_predictor: Any = None  # the MLflow model, loaded in the master; warmed up in each worker
_inits: Any = None  # workers whose init() succeeded, shared across the fork


def write_ready(config: ServerConfig, ok: bool, error: str = "", pid: Optional[int] = None) -> None:
    """Tell the control plane this revision is serving (or why it is not).

    `pid` is the gunicorn master's: a worker writing on its behalf passes it."""
    if not config.ready_file:
        return
    state = {"revision": config.revision, "pid": pid or os.getpid(), "ok": ok}
    if error:
        state["error"] = error
    tmp = "{}.{}.tmp".format(config.ready_file, os.getpid())  # workers may write at once
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f)
    os.replace(tmp, config.ready_file)


def warm_up(predictor: Any) -> None:
    """Score the model's own input example once, so first requests do not pay lazy set-up.
    Only in a process that will not fork (a worker): see the module's docstring."""
    if predictor.input_example is None:
        return
    body = json.dumps(predictor.input_example).encode("utf-8")
    result = pipeline.score(body, "application/json", predictor, validation="compatible")
    if result.status != 200:
        print("mlflow-deploy: scoring the model's input example answered {}: {}".format(
            result.status, result.body.decode("utf-8", "replace")), flush=True)


def load_model(config: ServerConfig) -> Any:
    from .predictor import Predictor  # mlflow: imported only to serve an MLflow model

    try:
        predictor = Predictor.load(config.model_dir)
    except Exception as exc:
        write_ready(config, ok=False, error="the model could not be loaded: " + one_line(exc))
        raise
    return predictor


def load_scoring_script(config: ServerConfig) -> ScoringScript:
    """Import the script in the master; on failure the ready file says why and the master exits
    (the raised error's traceback, with the script's own, goes to the log)."""
    global _inits
    try:
        script = load_script(config)
    except ScriptError as exc:
        write_ready(config, ok=False, error=str(exc))
        raise
    _inits = multiprocessing.Value("i", 0)
    return script


def init_worker(heartbeat: Callable[[], None], master_pid: int) -> None:
    """In a new worker, before it takes traffic: the model's warm-up, or the scoring script's
    init().

    The heartbeat keeps gunicorn from killing a worker whose init() loads a large model. If init()
    raises: traceback to the log, the ready file says why, and the worker exits with gunicorn's
    boot error, which stops the whole server so the deployment is marked Failed."""
    if _script is None:
        if _predictor is not None:
            warm_up(_predictor)
        return
    done = threading.Event()
    threading.Thread(target=_keep_alive, args=(heartbeat, done), daemon=True).start()
    try:
        _script.init()
    except ScriptError as exc:
        traceback.print_exc()
        write_ready(_config, ok=False, error=str(exc), pid=master_pid)
        sys.exit(WORKER_BOOT_ERROR)
    finally:
        done.set()
    with _inits.get_lock():
        _inits.value += 1
        everyone = _inits.value == max(1, int(_config.workers))
    if everyone:
        write_ready(_config, ok=True, pid=master_pid)


def _keep_alive(heartbeat: Callable[[], None], done: threading.Event) -> None:
    while not done.wait(HEARTBEAT_S):
        heartbeat()


def _unbuffered_output() -> None:
    """print() from the model or the script reaches the deployment log line by line."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)


def load() -> "object":
    global _config, _script, _predictor
    _config = config = ServerConfig.from_env()
    _unbuffered_output()
    if config.scoring_script:
        model = _script = load_scoring_script(config)
    else:
        model = _predictor = load_model(config)
    application = create_app(model, config)
    # the model and the imported libraries are long-lived: keep full collections off them
    # (DESIGN §8: p99 52 -> 5.6 ms with 1000-row requests)
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()
    return application


app = load()
