"""gunicorn's entry: `mlflow_deploy.scoring.wsgi:app`.

Loaded once in the gunicorn master (preload) and forked into the workers, so a worker that is
recycled after a timeout starts serving at once. What is served (an MLflow model or a user's
scoring script) is chosen here once, by load_scorer; nothing below asks which.

The master never predicts, and loads the model only where its flavor loads fork-safely
(scorer.FORK_SAFE_LOADERS): a prediction, or a load (LightGBM and XGBoost parse with OpenMP), may
start native thread pools, and libgomp's pool does not survive a fork: a worker forked after it
blocks forever in its first parallel region. Each worker prepares itself after the fork, before
it takes traffic (Scorer.prepare_worker: the model's load where the master did not, its warm-up on
its input example; a script's init(), which Azure runs once per worker), and the last worker
through writes the ready file the control plane waits on; a model or script that fails to load,
or a script whose init() fails, is reported there instead.
"""
import gc
import json
import multiprocessing
import os
import sys
import time
import traceback
from typing import Any, Callable, Optional

from .app import create_app
from .config import ServerConfig
from .errors import StartupError, one_line
from .metrics import ServerMetrics
from .scorer import ModelScorer, Scorer
from .script import load_script
from .watchdog import Watchdog

# gunicorn halts the master when a worker exits with this; Azure's server exits with 3 as well
WORKER_BOOT_ERROR = 3
# gunicorn's own exit status for an application that does not load
APP_LOAD_ERROR = 4

_config: Optional[ServerConfig] = None
_scorer: Optional[Scorer] = None
watchdog: Optional[Watchdog] = None  # the scoring timeout from outside the workers
metrics: Optional[ServerMetrics] = None
_load_s = 0.0  # the master's share of the model's load time
_prepared: Any = None  # workers through prepare_worker(), shared across the fork


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


def load_scorer(config: ServerConfig) -> Scorer:
    """The config's scorer: its scoring script if it names one, else its MLflow model. Raises
    StartupError for a script that cannot be imported; a model's own load errors pass through."""
    if config.scoring_script:
        return load_script(config)
    return ModelScorer.load(config.model_dir, config.options)


def load_in_master(config: ServerConfig) -> Scorer:
    """The config's scorer; on failure the ready file says why and the master exits (the error's
    traceback, with the script's own, goes to the log)."""
    global _prepared
    try:
        scorer = load_scorer(config)
    except Exception as exc:
        # the traceback reaches the log before the ready file: the control plane stops the
        # server as soon as it reads the file, and the log must already say why
        traceback.print_exc()
        sys.stderr.flush()
        error = str(exc) if isinstance(exc, StartupError) else \
            "the model could not be loaded: " + one_line(exc)
        write_ready(config, ok=False, error=error)
        sys.exit(APP_LOAD_ERROR)  # printed already: gunicorn need not print it again
    _prepared = multiprocessing.Value("i", 0)
    return scorer


def init_worker(heartbeat: Callable[[], None], master_pid: int) -> None:
    """In a new worker, before it takes traffic (gunicorn's post_worker_init).

    The heartbeat keeps gunicorn from killing a worker whose preparation (a script's init()
    loading a large model) takes long. If it fails: traceback to the log, the ready file says
    why, and the worker exits with gunicorn's boot error, which stops the whole server so the
    deployment is marked Failed."""
    started = time.perf_counter()
    try:
        _scorer.prepare_worker(heartbeat)
    except StartupError as exc:
        traceback.print_exc()
        write_ready(_config, ok=False, error=str(exc), pid=master_pid)
        sys.exit(WORKER_BOOT_ERROR)
    metrics.loaded(_load_s + time.perf_counter() - started)
    with _prepared.get_lock():
        _prepared.value += 1
        everyone = _prepared.value == max(1, int(_config.workers))
    if everyone:
        write_ready(_config, ok=True, pid=master_pid)


def _unbuffered_output() -> None:
    """print() from the model or the script reaches the deployment log line by line."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)


def load() -> "object":
    global _config, _scorer, watchdog, metrics, _load_s
    _config = config = ServerConfig.from_env()
    os.environ.update(config.environment_variables)
    _unbuffered_output()
    started = time.perf_counter()
    _scorer = load_in_master(config)
    _load_s = time.perf_counter() - started
    metrics = ServerMetrics()
    metrics.loaded(_load_s)
    watchdog = Watchdog(config.request_timeout_ms, metrics)
    application = create_app(_scorer, config, metrics=metrics, watchdog=watchdog)
    # the model and the imported libraries are long-lived: keep full collections off them
    # (with 1000-row requests, p99 went from 52 to 5.6 ms)
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()
    return application


app = load()
