"""Batch jobs: one invocation of a batch endpoint, run by a detached process of its own
(``python -m mlflow_deploy.batch.runjob JOB``), as Azure ML runs a batch scoring job.

``invoke`` checks everything it can before any work (the deployment, the input, the settings,
the output file's absence), records the job ``Queued`` and starts its process. The process
(``run_job``) splits the input files (sorted by path) into mini-batches of ``mini_batch_size``
files and has an executor (executors.py: local processes, or Dask) run
``instance_count x max_concurrency_per_instance`` of them at once; each mini-batch is tried up
to ``1 + retry_settings.max_retries`` times, each try given ``retry_settings.timeout`` seconds.
Files that still fail count against ``error_threshold`` (-1: no limit; otherwise the job fails as
soon as more files than that have failed).

The job's folder (``Store.job_dir``) holds what makes it exactly-once:

    inputs.json        the input files, sorted by path (the mini-batches are cut from it)
    worker.json        the WorkerSpec the job scores with (the deployment's revision at invoke)
    parts/NNNNNN.part  a finished mini-batch's rows, in the output format (append_row), until
                       the job has completed
    done/NNNNNN.json   its done record: counts, messages, whether it has a part
    job.log            one line per mini-batch started, done, retried or failed, and the
                       workers' stderr
    run.lock           flock'ed by the job's process while it runs (one process per job)
    cancel             present once ``job cancel`` asked the job to stop
    assembling         present once the output file is being written (a resumed job may then
                       replace the file its killed process renamed into place)
    outputs/           the default output folder
    metrics.prom       the job's progress as Prometheus text (batch/metrics.py), replaced whole
                       as its counts change

A mini-batch counts as done only once its part and then its done record are on disk (each
written to a temporary file, fsync'ed and renamed), so a job process killed at any point loses
at most the mini-batches in flight, and ``resume_job`` runs exactly the mini-batches without a
done record again, into the same part files. The output file is assembled from the parts in
mini-batch order (files sorted by path, then rows) into a temporary file renamed into place: a
reader never sees a torn file, and every input row is there exactly once.

The job's row (store.JOBS) is written by the job's process while it runs (status, counts,
timings), and by the commands around it (invoke, cancel, resume) each in one transaction that
reads and writes it, so that neither loses the other's change.
"""

import concurrent.futures
import glob
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import (Any, Callable, Deque, Dict, Iterator, List, Mapping, Optional, Sequence,
                    TextIO, Tuple)

from mlflow_deploy import detached, logs, processes
from mlflow_deploy.batch import executors, metrics, output
from mlflow_deploy.batch.computes import get_compute
from mlflow_deploy.batch.deployments import BatchDeploymentSettings, resolve_deployment
from mlflow_deploy.batch.settings import BATCH_PARSERS, RETRY_PARSERS, compute
from mlflow_deploy.batch.worker import WorkerFailed, WorkerSpec, WorkerStartFailed
from mlflow_deploy.errors import DeployError, InvalidParameter, InvalidState, NotFound
from mlflow_deploy.settings import choice, environment_variables, json_object
from mlflow_deploy.store import BATCH_ENDPOINTS, JOBS, Job, Store

__all__ = ["invoke", "parse_overrides", "list_jobs", "show_job", "cancel_job", "resume_job",
           "stream_job", "follow_job", "JobProgress", "clock", "run_job", "describe_job",
           "job_rows", "failures",
           "collect_inputs", "JOB_ENV", "TERMINAL", "OVERRIDE_KEYS"]

#: set in the job process's environment (and so its workers'): tells ours from a reused pid
JOB_ENV = "MLFLOW_DEPLOY_JOB"
TERMINAL = ("Completed", "Failed", "Canceled")
#: a job recorded Queued whose process has not been recorded yet is taken as starting this long
START_GRACE_S = 60.0
#: how long `job cancel` waits for the job's process to stop its workers and end
CANCEL_GRACE_S = 60.0
#: how often a running job writes its counts to its row and metrics file: as often as `job
#: stream` reads them (``follow_job``'s poll). Not at every mini-batch: a transaction and a file
#: each time made the job's one loop the bottleneck of short mini-batches. The done records
#: are the truth the counts are summed from, so a job killed in between loses nothing.
COUNTS_EVERY_S = 0.2
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
_GLOB = re.compile(r"[*?\[]")
_ADDRESS = re.compile(r"^(tcp|tls)://[^\s/]+:[0-9]{1,5}$")
_DIED = ("The job's process ended before the job did; `mlflow-deploy job resume --name {}` "
         "finishes it.")

# for a setting the deployment's config lacks: the deployment's own defaults (Azure's), and
# the job's local ones
_DEFAULTS: Dict[str, Any] = {
    **{key: value for key, value in BatchDeploymentSettings().to_config().items()
       if key in ("mini_batch_size", "instance_count", "max_concurrency_per_instance",
                  "output_action", "output_file_name", "retry_settings", "error_threshold",
                  "logging_level", "environment_variables", "compute")},
    "output_format": output.FORMATS[0], "executor": None, "scheduler_address": None,
}


# ---- overrides ----------------------------------------------------------------------------------

def _executor(value: Any) -> str:
    return choice("executor", tuple(executors.EXECUTORS))(value)


def _address(value: Any) -> Optional[str]:
    text = str(value).strip() if value is not None else ""
    if not text:
        return None
    if not _ADDRESS.match(text):
        raise InvalidParameter("Config 'scheduler_address' must be tcp://HOST:PORT (or tls://).")
    return text


# in the order the message of an unknown --set key lists them
_PARSERS: Dict[str, Callable[[Any], Any]] = {
    **{key: BATCH_PARSERS[key] for key in ("mini_batch_size", "instance_count",
                                           "max_concurrency_per_instance", "error_threshold",
                                           "output_action", "output_file_name")},
    "output_format": choice("output_format", output.FORMATS),
    "logging_level": BATCH_PARSERS["logging_level"],
    "executor": _executor,
    "scheduler_address": _address,
    "compute": compute,
}
_RETRY = RETRY_PARSERS
# other spellings: Azure's SDK overrides compute.instance_count, the YAML has settings.* and
# resources.instance_count
_ALIASES = {"compute.instance_count": "instance_count",
            "resources.instance_count": "instance_count",
            **{"settings." + key: key for key in _PARSERS},
            **{"settings.retry_settings." + key: "retry_settings." + key for key in _RETRY},
            **{key: "retry_settings." + key for key in _RETRY}}
#: what a job may override (``--set KEY=VALUE``), besides ``environment_variables.NAME``
OVERRIDE_KEYS = tuple(_PARSERS) + tuple("retry_settings." + key for key in _RETRY) + (
    "environment_variables",)


def parse_overrides(set_values: Sequence[str] = (), **flags: Any) -> Dict[str, Any]:
    """``--set KEY=VALUE`` items, then the named flags (``mini_batch_size=20``, ``timeout=5``,
    ``max_retries=0``...; None = not given), checked, as the job's overrides: ``retry_settings``
    and ``environment_variables`` hold only the entries they change."""
    items: List[Tuple[str, Any]] = []
    for number, item in enumerate(set_values, 1):
        key, equals, value = str(item).partition("=")
        key = key.strip()
        if not equals or not key:
            raise InvalidParameter(f"Override {number}: expected KEY=VALUE.",
                                   argument="set_values")
        items.append((key, value))
    items += [(key, value) for key, value in flags.items() if value is not None]
    return _parse_items(items)


def _parse_items(items: Sequence[Tuple[str, Any]]) -> Dict[str, Any]:
    overrides: Dict[str, Any] = {}
    for key, value in items:
        key = _ALIASES.get(key, key)
        if key.startswith("retry_settings."):
            name = key[len("retry_settings."):]
            if name not in _RETRY:
                raise _unknown(key)
            overrides.setdefault("retry_settings", {})[name] = _RETRY[name](value)
        elif key == "retry_settings":
            raise InvalidParameter("Config 'retry_settings': set retry_settings.max_retries or "
                                   "retry_settings.timeout.")
        elif key == "environment_variables" or key.startswith("environment_variables."):
            name = key[len("environment_variables."):] if "." in key else None
            given = environment_variables({name: value} if name else value,
                                          "environment_variables")
            overrides.setdefault("environment_variables", {}).update(given)
        elif key in _PARSERS:
            overrides[key] = _PARSERS[key](value)
        else:
            raise _unknown(key)
    return overrides


def _flattened(overrides: Mapping[str, Any]) -> List[Tuple[str, Any]]:
    """Overrides as parse_overrides returns them (or as the plugin's config gives them) as
    items again: the mappings of retry_settings and environment_variables entry by entry."""
    items: List[Tuple[str, Any]] = []
    for key, value in dict(overrides).items():
        if key in ("retry_settings", "environment_variables"):
            value = json_object(key, value, "names to values")  # a mapping, or its JSON
            items += [("{}.{}".format(key, name), entry) for name, entry in value.items()]
        else:
            items.append((key, value))
    return items


def _unknown(key: str) -> InvalidParameter:
    return InvalidParameter(f"--set: unknown key '{key}'. A job can override: "
                            + ", ".join(OVERRIDE_KEYS) + ", environment_variables.NAME.")


def effective_settings(config: Mapping[str, Any], overrides: Mapping[str, Any],
                       store: Store) -> Dict[str, Any]:
    """The deployment's settings, then the job's overrides; the executor and scheduler from
    the overrides, else from the compute (a registered compute of type dask), else local."""
    settings = {key: config.get(key, default) for key, default in _DEFAULTS.items()}
    settings["retry_settings"] = {**_DEFAULTS["retry_settings"],
                                  **(config.get("retry_settings") or {})}
    settings["environment_variables"] = dict(config.get("environment_variables") or {})
    for key, value in overrides.items():
        if key in ("retry_settings", "environment_variables"):
            settings[key] = {**settings[key], **value}
        else:
            settings[key] = value
    registered = None
    if settings.get("compute"):
        registered = get_compute(store, settings["compute"], "compute")
    executor = overrides.get("executor")
    address = overrides.get("scheduler_address")
    if executor is None:
        if address:
            executor = "dask"
        elif registered is not None:
            executor = registered.type if registered.type in executors.EXECUTORS else "local"
        else:
            executor = "local"
    if executor == "dask" and not address and registered is not None \
            and registered.type == "dask":
        address = registered.scheduler_address
    if address and executor != "dask":
        raise InvalidParameter("Config 'scheduler_address' goes with executor dask.")
    settings["executor"], settings["scheduler_address"] = executor, address or None
    return settings


# ---- inputs -------------------------------------------------------------------------------------

def collect_inputs(input: str, input_type: Optional[str] = None) -> Tuple[List[str], int]:
    """The files of ``input`` (a file, a folder or a glob), absolute and sorted by path, and the
    count of files in nested folders, which are not explored (as on Azure)."""
    if input_type not in (None, "uri_file", "uri_folder"):
        raise InvalidParameter("input_type must be uri_file or uri_folder.",
                               argument="input_type")
    text = str(input).strip()
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", text) or text.startswith("azureml:"):
        raise InvalidParameter("The input must be a local file, folder or glob: remote data "
                               "and registered data assets are not supported locally.",
                               argument="input")
    path = Path(text).expanduser()
    if path.exists():
        if input_type == "uri_file" and not path.is_file():
            raise InvalidParameter("The input must be a file when its type is uri_file.",
                                   argument="input")
        if input_type == "uri_folder" and not path.is_dir():
            raise InvalidParameter("The input must be a folder when its type is uri_folder.",
                                   argument="input")
        entries = sorted(path.iterdir()) if path.is_dir() else [path]
    elif _GLOB.search(text):
        entries = [Path(match) for match in glob.glob(os.path.expanduser(text))]
    else:
        raise NotFound("The input does not exist.", argument="input")
    files, skipped = [], 0
    for entry in entries:
        if entry.is_dir():
            skipped += sum(len(names) for _, _, names in os.walk(entry))
        elif entry.is_file():
            files.append(str(entry.resolve()))
    if not files:
        raise InvalidParameter("The input has no files to score; nested folders are not "
                               "explored.", argument="input")
    return sorted(files), skipped


def _batches(files: Sequence[str], size: int) -> List[List[str]]:
    return [list(files[i:i + size]) for i in range(0, len(files), size)]


# ---- the job's row ------------------------------------------------------------------------------

def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise NotFound("No job with this name.", argument="name")
    return name


def _get(store: Store, name: str) -> Job:
    job = store.find(JOBS, _check_name(name))
    if job is None:
        raise NotFound("No job with this name.", argument="name")
    return job


def _update(store: Store, name: str, change: Callable[[Job], Any]) -> Job:
    """Read the row, ``change`` it and write it in one transaction: the job's process and the
    commands around it never lose each other's writes. ``change`` returning False writes
    nothing."""
    with store.transaction():
        job = _get(store, name)
        if change(job) is not False:
            store.save(JOBS, job)
    return job


def _alive(job: Job) -> bool:
    """The job's process runs (not a zombie, and is ours: a pid reused by another program is
    not)."""
    if not job.pid:
        return False
    detached.reap(job.pid)
    if not processes.is_running(job.pid):
        return False
    env = processes.environ(job.pid)
    return env is None or env.get(JOB_ENV) == job.name


def _starting(job: Job) -> bool:
    return job.status == "Queued" and job.pid is None and time.time() - job.updated < START_GRACE_S


def _checked(store: Store, job: Job) -> Job:
    """The row, with a job whose process died before it ended recorded as Failed (resumable)."""
    if job.status in TERMINAL or _alive(job) or _starting(job):
        return job
    try:  # its row's counts may lag its done records by COUNTS_EVERY_S
        counts = _Run(store, job, logging.getLogger(__name__), threading.Event()).counts()
    except (OSError, ValueError):  # its folder is gone: the row's counts are all there is
        counts = job.counts

    def died(current: Job) -> bool:
        if current.status in TERMINAL or current.pid != job.pid:
            return False  # it ended, or was resumed, meanwhile
        current.status, current.error = "Failed", _DIED.format(current.name)
        current.finished, current.counts = time.time(), counts
        return True

    return _update(store, job.name, died)


def _iso(when: Optional[float]) -> Optional[str]:
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def describe_job(job: Job) -> Dict[str, Any]:
    """What ``job show`` prints: status, counts, where the output is, timings, the error."""
    settings = job.settings
    output_file = (str(Path(job.output_path) / settings["output_file_name"])
                   if settings.get("output_action") == "append_row" else None)
    end = job.finished or (time.time() if job.started and job.status not in TERMINAL else None)
    return {
        "name": job.name,
        "type": "batch",
        "endpoint_name": job.endpoint,
        "deployment_name": job.deployment,
        "status": job.status,
        "input": job.input,
        "output_path": job.output_path,
        "output_file": output_file,
        "counts": dict(job.counts),
        "error": job.error,
        "settings": dict(settings),
        "log_path": job.log_path,
        "created": _iso(job.created),
        "started": _iso(job.started),
        "finished": _iso(job.finished),
        "duration_s": round(end - job.started, 3) if end and job.started else None,
        # the same counts, as Prometheus text for a scraper: its path, never read back here
        "metrics_file": str(Path(job.dir) / metrics.FILE),
    }


# ---- the commands -------------------------------------------------------------------------------

def _worker_spec(deployment, settings: Mapping[str, Any]) -> WorkerSpec:
    files, environment = deployment.files, deployment.environment
    python = environment.get("python")
    if not python:
        raise InvalidState("The deployment has no environment to score in.")
    return WorkerSpec(
        python=python,
        model_dir=files.get("model_dir"),
        code_dir=files.get("code_dir"),
        scoring_script=files.get("scoring_script"),
        azureml_model_dir=files.get("azureml_model_dir"),
        output_format=(settings["output_format"] if settings["output_action"] == "append_row"
                       else "none"),
        environment_variables=dict(settings["environment_variables"]),
        logging_level=settings["logging_level"],
        env_lock=environment.get("lock"), env_manager=environment.get("manager"),
        python_version=environment.get("python_version"))


def _output_file(job: Job) -> Optional[Path]:
    if job.settings.get("output_action") != "append_row":
        return None
    return Path(job.output_path) / job.settings["output_file_name"]


def _exists_error() -> InvalidState:
    return InvalidState("The output file already exists: give another output path or "
                        "output_file_name (a job never overwrites an output).")


def _append_log(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as log:
        log.write("{} WARNING {}\n".format(_iso(time.time()), line))


def invoke(endpoint: str, input: str, *, deployment: Optional[str] = None,
           input_type: Optional[str] = None, output_path: Optional[str] = None,
           overrides: Mapping[str, Any] = (), store: Optional[Store] = None) -> Dict[str, Any]:
    """Start a job of the endpoint's deployment (``deployment``, else its default) over
    ``input``: everything is checked first (the deployment, the input's files, the overrides,
    that the output file does not exist yet), then the job is recorded Queued and its process
    started. Returns describe_job, with ``warnings`` (nested folders skipped) when any."""
    store = store or Store()
    overrides = _parse_items(_flattened(overrides or {}))
    target = resolve_deployment(store, endpoint, deployment)
    settings = effective_settings(target.config, overrides, store)
    executors.require_engine(settings["executor"])
    spec = _worker_spec(target, settings)
    files, skipped = collect_inputs(input, input_type)
    name = "batchjob-" + str(uuid.uuid4())
    folder = store.job_dir(name)
    out = Path(output_path).expanduser().resolve() if output_path else folder / "outputs"
    if out.exists() and not out.is_dir():
        raise InvalidParameter("The output path must be a folder.", argument="output_path")
    if settings["output_action"] == "append_row" and (out / settings["output_file_name"]).exists():
        raise _exists_error()
    warnings = []
    if skipped:
        warnings.append("{} file{} in nested folders of the input {} skipped: nested folders "
                        "are not explored".format(skipped, "" if skipped == 1 else "s",
                                                  "was" if skipped == 1 else "were"))
    folder.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    output.write_part(folder / "inputs.json", json.dumps(files, indent=0).encode("utf-8"))
    output.write_part(folder / "worker.json", json.dumps(spec.to_dict(), indent=2).encode())
    log_path = folder / "job.log"
    for warning in warnings:
        _append_log(log_path, warning)
    batches = len(_batches(files, settings["mini_batch_size"]))
    job = Job(name=name, endpoint=target.endpoint, deployment=target.name, status="Queued",
              input=str(input), output_path=str(out), dir=str(folder), log_path=str(log_path),
              settings=settings, counts=_zero_counts(len(files), batches))
    store.add(JOBS, job, "A job with this name already exists.")
    job = _start_process(store, job)
    described = describe_job(job)
    if warnings:
        described["warnings"] = warnings
    return described


def _zero_counts(files: int, batches: int) -> Dict[str, int]:
    return {"files": files, "files_done": 0, "files_failed": 0, "mini_batches": batches,
            "mini_batches_done": 0, "mini_batches_failed": 0, "retries": 0, "rows": 0}


def _start_process(store: Store, job: Job) -> Job:
    env = dict(os.environ)
    env[JOB_ENV] = job.name
    env.setdefault("PYTHONUNBUFFERED", "1")
    command = [sys.executable, "-m", "mlflow_deploy.batch.runjob", job.name,
               "--home", str(store.home)]
    try:
        proc = detached.start(command, job.log_path, env=env, cwd=job.dir)
    except OSError as exc:
        _update(store, job.name, lambda j: _finish(j, "Failed", "The job's process could not "
                                                   "start ({}).".format(type(exc).__name__)))
        raise InvalidState("The job's process could not start.") from None

    def started(current: Job) -> bool:
        if current.pid is not None and current.pid != proc.pid:
            return False
        current.pid = proc.pid
        return True

    return _update(store, job.name, started)


def _finish(job: Job, status: str, error: Optional[str] = None) -> None:
    job.status, job.error, job.finished = status, error, time.time()


def list_jobs(endpoint: Optional[str] = None, store: Optional[Store] = None
              ) -> List[Dict[str, Any]]:
    """Every job (of ``endpoint``'s deployments when given), oldest first."""
    store = store or Store()
    if endpoint is not None:
        if not isinstance(endpoint, str) or store.find(BATCH_ENDPOINTS, endpoint) is None:
            raise NotFound("No batch endpoint with this name.", argument="endpoint")
    return [describe_job(job) for job in job_rows(store, endpoint)]


def job_rows(store: Store, endpoint: Optional[str] = None) -> List[Job]:
    """Every job's row (of ``endpoint``'s when given, the endpoint deleted or not), oldest
    first, a job whose process died before it ended recorded as Failed: for a caller that
    needs more than ``describe_job`` (its progress, its failures)."""
    rows = store.select(JOBS, endpoint=endpoint) if endpoint is not None else store.select(JOBS)
    return [_checked(store, job) for job in rows]


def show_job(name: str, store: Optional[Store] = None) -> Dict[str, Any]:
    store = store or Store()
    return describe_job(_checked(store, _get(store, name)))


def cancel_job(name: str, store: Optional[Store] = None) -> Dict[str, Any]:
    """Stop the job: its process ends its workers (the mini-batches in flight are lost, the
    finished ones and their parts stay) and records it Canceled. A job whose process is gone is
    recorded Canceled at once."""
    store = store or Store()
    job = _get(store, name)
    with store.lock_row(JOBS, job.name):
        job = _get(store, name)
        if job.status in TERMINAL:
            raise InvalidState("The job has ended already (status {}).".format(job.status))
        # a process that has not installed its handler yet reads this before any work
        (Path(job.dir) / "cancel").touch()
        deadline = time.monotonic() + CANCEL_GRACE_S
        while _starting(job) and time.monotonic() < deadline:
            time.sleep(0.05)
            job = _get(store, name)
        if _alive(job):
            try:
                os.kill(job.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            while _alive(job) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(job):
                try:
                    os.killpg(job.pid, signal.SIGKILL)  # its own session: pgid == pid
                except (ProcessLookupError, PermissionError):
                    pass

        def canceled(current: Job) -> bool:
            if current.status in TERMINAL:
                return False
            _finish(current, "Canceled", "Canceled by `job cancel`.")
            return True

        job = _update(store, name, canceled)
    return describe_job(job)


def resume_job(name: str, store: Optional[Store] = None) -> Dict[str, Any]:
    """Start a job whose process ended before it did (killed, canceled, the machine
    restarted) again: the mini-batches with a done record are kept, the others run."""
    store = store or Store()
    job = _get(store, name)
    with store.lock_row(JOBS, job.name):
        job = _get(store, name)
        if job.status == "Completed":
            raise InvalidState("The job has completed: there is nothing to resume.")
        if _alive(job) or _starting(job):
            raise InvalidState("The job is still running.")
        (Path(job.dir) / "cancel").unlink(missing_ok=True)

        def queued(current: Job) -> None:
            current.status, current.error, current.finished, current.pid = (
                "Queued", None, None, None)

        job = _start_process(store, _update(store, name, queued))
    return describe_job(job)


@dataclass(frozen=True)
class JobProgress:
    """Where a job is, as ``job stream`` shows it: mini-batches ended (done or failed) of all,
    files, rows, and the rate and time left from the job's own start (a stream attached to a
    running job sees its true rate) to now, or to its end once it has ended (a page open long
    after shows the rate it ran at). Everything derives from the job's counts and times."""

    name: str
    status: str
    error: Optional[str]
    counts: Mapping[str, int]  # the job's counts, as the job recorded them
    elapsed: Optional[float]  # seconds from the job's start to now or its end; None before

    @classmethod
    def of(cls, job: Job, now: float) -> "JobProgress":
        end = job.finished if job.finished and job.status in TERMINAL else now
        return cls(name=job.name, status=job.status, error=job.error, counts=dict(job.counts),
                   elapsed=max(end - job.started, 1e-6) if job.started else None)

    @property
    def mini_batches(self) -> int:
        return self.counts.get("mini_batches", 0)

    @property
    def ended(self) -> int:
        return self.counts.get("mini_batches_done", 0) + self.counts.get("mini_batches_failed", 0)

    @property
    def files(self) -> int:
        return self.counts.get("files", 0)

    @property
    def files_done(self) -> int:
        return self.counts.get("files_done", 0)

    @property
    def files_failed(self) -> int:
        return self.counts.get("files_failed", 0)

    @property
    def rows(self) -> int:
        return self.counts.get("rows", 0)

    @property
    def eta(self) -> Optional[float]:
        """Seconds left; None while unknown."""
        if self.elapsed and 0 < self.ended < self.mini_batches:
            return self.elapsed / self.ended * (self.mini_batches - self.ended)
        if self.mini_batches and self.ended >= self.mini_batches:
            return 0.0
        return None

    @property
    def over(self) -> bool:
        return self.status in TERMINAL

    @property
    def rate(self) -> float:
        """Rows per second since the job started."""
        return self.rows / self.elapsed if self.elapsed else 0.0

    @property
    def eta_text(self) -> str:
        return clock(self.eta) if self.eta is not None else "-"

    def line(self) -> str:
        """The progress as one plain line, with a text bar."""
        width = 20
        filled = int(width * self.ended / self.mini_batches) if self.mini_batches else width
        return ("[{}{}] {}/{} mini-batches, files {}/{} ({} failed), {} rows, {:.0f} rows/s, "
                "ETA {}".format("#" * filled, "." * (width - filled), self.ended,
                                self.mini_batches, self.files_done, self.files,
                                self.files_failed, self.rows, self.rate, self.eta_text))

    def final_line(self) -> str:
        """How the job ended, in one line."""
        return "job {}: {}{}".format(self.name, self.status,
                                     ": " + self.error if self.error else "")


def clock(seconds: float) -> str:
    """A duration as H:MM:SS."""
    seconds = int(round(seconds))
    return "{}:{:02d}:{:02d}".format(seconds // 3600, seconds // 60 % 60, seconds % 60)


def follow_job(name: str, store: Optional[Store] = None,
               poll: float = 0.2) -> Iterator[Tuple[List[str], JobProgress]]:
    """The job's new log lines and its progress, every ``poll`` seconds until it ends (the last
    pair has every line left and the job's final status). A front end draws them its own way:
    ``stream_job`` as plain lines, the CLI as a bar on a terminal."""
    store = store or Store()
    job = _get(store, name)
    follower = logs.Follower(job.log_path, 0)
    while True:
        job = _checked(store, _get(store, job.name))
        lines = follower.read()
        progress = JobProgress.of(job, time.time())
        if progress.over:
            lines += follower.rest()
        yield lines, progress
        if progress.over:
            return
        time.sleep(poll)


def stream_job(name: str, store: Optional[Store] = None, out: Optional[TextIO] = None,
               poll: float = 0.2) -> Dict[str, Any]:
    """Print the job's log lines as they come and a progress line (rows/s, ETA) whenever its
    status or counts change, until the job ends; returns describe_job then."""
    store = store or Store()
    out = out if out is not None else sys.stderr
    last = None
    for lines, progress in follow_job(name, store, poll):
        for line in lines:
            out.write(line + "\n")
        seen = (progress.status, progress.counts)
        if seen != last:
            out.write(progress.line() + "\n")
        last = seen
        if progress.over:
            out.write(progress.final_line() + "\n")
        out.flush()
    return show_job(name, store)


# ---- the run (in the job's own process) --------------------------------------------------------

@dataclass
class _Done:
    """A finished mini-batch, as its done record has it."""
    index: int
    files: int
    files_failed: int
    rows: int
    tries: int
    failed: bool  # failed as a whole, after every try
    part: bool
    messages: List[str]

    @classmethod
    def read(cls, path: Path) -> Optional["_Done"]:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None  # never written whole: write_part renames it into place


def failures(job: Job, limit: int) -> List[Dict[str, Any]]:
    """The job's mini-batches that failed, or had files that failed, in order (at most
    ``limit``), each with its files and one line per failure as the job log has it: what the
    mini-batch's done record says, so a resumed job's earlier failures show as well. Reads
    nothing while the counts show no failure."""
    counts = job.counts
    if not (counts.get("files_failed") or counts.get("mini_batches_failed")):
        return []
    folder = Path(job.dir)
    try:
        names = sorted(name for name in os.listdir(folder / "done") if name.endswith(".json"))
        inputs: List[str] = json.loads((folder / "inputs.json").read_text("utf-8"))
    except (OSError, ValueError):
        return []
    size = job.settings["mini_batch_size"]
    found: List[Dict[str, Any]] = []
    for name in names:
        record = _Done.read(folder / "done" / name)
        if record is None or not (record.failed or record.files_failed):
            continue
        found.append({"mini_batch": record.index + 1,
                      "files": inputs[record.index * size:(record.index + 1) * size],
                      "failed": record.failed, "files_failed": record.files_failed,
                      "tries": record.tries, "reasons": list(record.messages)})
        if len(found) >= limit:
            break
    return found


class _Run:
    """One run of a job by its process: from the mini-batches without a done record to the
    assembled output."""

    def __init__(self, store: Store, job: Job, log: logging.Logger, stop: threading.Event):
        self.store, self.job, self.log, self.stop = store, job, log, stop
        self.folder = Path(job.dir)
        settings = self.settings = job.settings
        self.files: List[str] = json.loads((self.folder / "inputs.json").read_text("utf-8"))
        self.batches = _batches(self.files, settings["mini_batch_size"])
        self.retry = settings["retry_settings"]
        self.threshold = settings["error_threshold"]
        self.append = settings["output_action"] == "append_row"
        self.done: Dict[int, _Done] = {}
        # the done records' sums, kept as records are added: a job of many small mini-batches
        # must not add them all up again after each one
        self.sums = {"files": 0, "files_failed": 0, "ok": 0, "failed": 0, "rows": 0}
        self.retries = 0
        for index in range(len(self.batches)):
            record = _Done.read(self._done_path(index))
            if record is not None:
                self._add(record)
                self.retries += record.tries - 1
        self.tries: Dict[int, int] = {}
        # the counts as last written to the row, and when (time.monotonic())
        self.saved: Optional[Dict[str, int]] = None
        self.saved_at = 0.0

    def _add(self, record: _Done, sign: int = 1) -> None:
        """Count ``record`` among the done ones (``sign`` -1: no longer)."""
        if sign > 0:
            if record.index in self.done:
                self._add(self.done[record.index], -1)
            self.done[record.index] = record
        else:
            del self.done[record.index]
        for key, value in (("files", record.files), ("files_failed", record.files_failed),
                           ("ok", not record.failed), ("failed", record.failed),
                           ("rows", record.rows)):
            self.sums[key] += sign * int(value)

    def _done_path(self, index: int) -> Path:
        return self.folder / "done" / "{:06d}.json".format(index)

    def _part_path(self, index: int) -> Path:
        return self.folder / "parts" / "{:06d}.part".format(index)

    def counts(self) -> Dict[str, int]:
        sums = self.sums
        return {"files": len(self.files),
                "files_done": sums["files"] - sums["files_failed"],
                "files_failed": sums["files_failed"],
                "mini_batches": len(self.batches),
                "mini_batches_done": sums["ok"],
                "mini_batches_failed": sums["failed"],
                "retries": self.retries,
                "rows": sums["rows"]}

    def _owed(self) -> bool:
        """Whether the counts have changed since they were last written."""
        return self.counts() != self.saved

    def _save_counts(self, now: bool = False) -> None:
        """Record the counts if ``now`` or COUNTS_EVERY_S have passed since the last time;
        else they stay owed (``_run_batches`` pays within that time, ``run`` before the output
        is assembled, and ``_end`` records them anyway)."""
        if not now and time.monotonic() - self.saved_at < COUNTS_EVERY_S:
            return
        counts = self.counts()
        self.saved, self.saved_at = counts, time.monotonic()

        def change(job: Job) -> None:
            job.counts = counts

        self.job = _update(self.store, self.job.name, change)
        self._publish()

    def _publish(self) -> None:
        """The job's metrics file, from its counts as just recorded."""
        job = self.job
        metrics.write(self.folder, job.name, job.counts, JobProgress.of(job, time.time()).rate)

    def _over_threshold(self) -> bool:
        return self.threshold >= 0 and self.sums["files_failed"] > self.threshold

    def _threshold_error(self) -> str:
        return ("More input files failed than error_threshold allows ({} failed); the job "
                "stopped. The job log names each file and why.".format(
                    self.sums["files_failed"]))

    # the run

    def run(self) -> str:
        """Run what is left; returns the status the job ended with."""
        job = self.job
        first = job.started is None
        now = time.time()

        def running(current: Job) -> None:
            current.status, current.pid, current.error = "Running", os.getpid(), None
            current.started = current.started or now
            current.finished = None
            current.counts = self.counts()

        self.job = _update(self.store, job.name, running)
        self.saved = self.job.counts
        self._publish()
        target = _output_file(self.job)
        if first and target is not None and target.exists():
            return self._end("Failed", str(_exists_error()))
        if (self.folder / "cancel").exists():
            return self._end("Canceled", "Canceled by `job cancel`.")
        left = [i for i in range(len(self.batches)) if i not in self.done]
        self.log.info("job %s %s: %d files in %d mini-batches of up to %d, %d to run; "
                      "executor %s, %d at once", job.name, "started" if first else "resumed",
                      len(self.files), len(self.batches), self.settings["mini_batch_size"],
                      len(left), self.settings["executor"], self._slots())
        if self._over_threshold():
            return self._end("Failed", self._threshold_error())
        if left:
            status, error = self._run_batches(deque(left))
            if status is not None:
                return self._end(status, error)
        if self._owed():  # every mini-batch counted while a large output is assembled
            self._save_counts(now=True)
        return self._assemble()

    def _slots(self) -> int:
        return self.settings["instance_count"] * self.settings["max_concurrency_per_instance"]

    def _spec(self) -> WorkerSpec:
        """The revision the job was invoked with; if its files are gone (the deployment was
        updated while the job's process was dead), the deployment's current one."""
        spec = WorkerSpec.from_dict(json.loads((self.folder / "worker.json").read_text("utf-8")))
        paths = [spec.python, spec.model_dir, spec.code_dir, spec.azureml_model_dir]
        if all(path is None or os.path.exists(path) for path in paths):
            return spec
        current = resolve_deployment(self.store, self.job.endpoint, self.job.deployment)
        spec = _worker_spec(current, self.settings)
        self.log.warning("the deployment's revision the job was invoked with is gone; the "
                         "mini-batches left run with its current revision")
        output.write_part(self.folder / "worker.json",
                          json.dumps(spec.to_dict(), indent=2).encode("utf-8"))
        return spec

    def _run_batches(self, pending: Deque[int]) -> Tuple[Optional[str], Optional[str]]:
        """Until every mini-batch has a done record; (status, error) when the job must end
        before (Failed, Canceled), else (None, None)."""
        if self.append:  # where the executors write the rows
            self._part_path(0).parent.mkdir(exist_ok=True)
        try:
            executor = executors.open_executor(self._spec(), self.settings,
                                               str(self.folder / "job.log"))
        except DeployError as exc:
            return "Failed", exc.message
        except Exception as exc:  # a Dask scheduler that cannot be reached, ...
            self.log.exception("the executor did not start")
            return "Failed", "The {} executor did not start ({}).".format(
                self.settings["executor"], type(exc).__name__)
        running: Dict[concurrent.futures.Future, int] = {}
        ending: Tuple[Optional[str], Optional[str]] = (None, None)
        try:
            while pending or running:
                if self.stop.is_set():
                    ending = ("Canceled", "Canceled by `job cancel`.")
                    break
                if pending and len(running) <= executor.depth - executor.batch:
                    indexes = [pending.popleft() for _ in
                               range(min(len(pending), executor.depth - len(running)))]
                    for index in indexes:
                        self.tries[index] = self.tries.get(index, 0) + 1
                        self.log.info("mini-batch %d/%d submitted (%d files, try %d)",
                                      index + 1, len(self.batches), len(self.batches[index]),
                                      self.tries[index])
                        self.log.debug("mini-batch %d files: %s", index + 1,
                                       ", ".join(self.batches[index]))
                    submitted = executor.submit(
                        [(self.batches[index], str(self._part_path(index)))
                         for index in indexes], self.retry["timeout"])
                    running.update(zip(submitted, indexes))
                finished, _ = concurrent.futures.wait(
                    list(running), timeout=COUNTS_EVERY_S,
                    return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    ending = self._settle(running.pop(future), future, pending)
                    if ending[0] is not None:
                        break
                if ending[0] is not None:
                    break
                if self._owed():
                    self._save_counts()
        finally:
            stopping = ending[0] is not None or bool(running) or bool(pending)
            executor.close(abort=stopping)
            # tries that ended well before the workers were stopped are kept: no work lost
            for future, index in running.items():
                if future.done() and not future.cancelled() and future.exception() is None:
                    outcome = future.result()
                    if outcome.error is None:
                        self._record(index, outcome)
        return ending

    def _settle(self, index: int, future: concurrent.futures.Future, pending: Deque[int]
                ) -> Tuple[Optional[str], Optional[str]]:
        number, tries = index + 1, self.tries[index]
        try:
            outcome = future.result()
        except WorkerStartFailed as exc:
            self.log.error("mini-batch %d: the batch worker did not start: %s%s", number,
                           exc.message, "\n" + exc.traceback if exc.traceback else "")
            return "Failed", "The batch worker did not start: {}".format(exc.message)
        except WorkerFailed as exc:
            failure, trace = exc.message, exc.traceback
            outcome = None
        except concurrent.futures.CancelledError:
            failure, trace, outcome = "the try was cancelled", None, None
        except Exception as exc:  # an executor's own failure (a Dask worker lost, ...)
            failure, trace, outcome = "the executor failed ({})".format(type(exc).__name__), \
                None, None
        else:
            failure, trace = outcome.error, outcome.traceback
        if failure is not None:
            if trace:
                self.log.debug("mini-batch %d: %s", number, trace.rstrip())
            if tries <= self.retry["max_retries"]:
                self.retries += 1
                self.log.warning("mini-batch %d/%d failed (%s); retry %d of %d", number,
                                 len(self.batches), failure, tries, self.retry["max_retries"])
                pending.appendleft(index)
                self._save_counts()
                return None, None
            self.log.error("mini-batch %d/%d failed after %d tr%s: %s; its %d files count as "
                           "failed", number, len(self.batches), tries,
                           "y" if tries == 1 else "ies", failure, len(self.batches[index]))
            self._write_done(_Done(index, len(self.batches[index]), len(self.batches[index]),
                                   0, tries, True, False, [failure]))
        else:
            self._record(index, outcome)
        self._save_counts()
        if self._over_threshold():
            return "Failed", self._threshold_error()
        return None, None

    def _record(self, index: int, outcome) -> None:
        """The part first, then the done record: a mini-batch counts as done only once both are
        on disk."""
        part = self.append and (outcome.written or bool(outcome.data))
        if outcome.written:  # by the batch worker, unsynced
            output.make_durable(self._part_path(index))
        elif part:  # the worker could not see the job's folder: its rows came back
            output.write_part(self._part_path(index), outcome.data)
        messages = outcome.messages()
        self._write_done(_Done(index, len(outcome.files), outcome.failed, outcome.rows,
                               self.tries.get(index, 1), False, part, messages))
        for message in messages:
            self.log.warning("mini-batch %d: %s", index + 1, message)
        self.log.info("mini-batch %d/%d done: %d rows, %d of %d files failed", index + 1,
                      len(self.batches), outcome.rows, outcome.failed, len(outcome.files))

    def _write_done(self, record: _Done) -> None:
        output.write_part(self._done_path(record.index),
                          json.dumps(record.__dict__).encode("utf-8"))
        self._add(record)

    def _assemble(self) -> str:
        target = _output_file(self.job)
        if target is not None:
            # another job may have written the same file meanwhile; only a rename of our own,
            # by a process of this job killed just after it, may be overwritten
            marker = self.folder / "assembling"
            if target.exists() and not marker.exists():
                return self._end("Failed", str(_exists_error()))
            output.write_part(marker, b"")
            parts = [self._part_path(i) for i in sorted(self.done) if self.done[i].part]
            try:
                size = output.assemble(parts, target, self.settings["output_format"])
            except (ValueError, RuntimeError, OSError) as exc:
                self.log.exception("the output could not be assembled")
                return self._end("Failed", "The output could not be assembled: {}".format(
                    exc if isinstance(exc, (ValueError, RuntimeError)) else type(exc).__name__))
            self.log.info("output written: %s (%d bytes)", target, size)
        status = self._end("Completed", None)
        # the output file holds the parts now, and a completed job is never resumed: kept, they
        # would double the disk a job takes, for as long as the job is on record
        shutil.rmtree(self.folder / "parts", ignore_errors=True)
        return status

    def _end(self, status: str, error: Optional[str]) -> str:
        counts = self.counts()

        def ended(job: Job) -> None:
            job.counts = counts
            _finish(job, status, error)

        self.job = _update(self.store, self.job.name, ended)
        self._publish()
        log = self.log.info if status == "Completed" else self.log.error
        log("job %s: %s%s", self.job.name, status, ": " + error if error else "")
        return status


def _logger(job: Job) -> logging.Logger:
    log = logging.getLogger("mlflow_deploy.batch.job." + job.name)
    log.setLevel(getattr(logging, str(job.settings.get("logging_level", "info")).upper(),
                         logging.INFO))
    log.propagate = False
    handler = logging.FileHandler(job.log_path, encoding="utf-8")
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                  "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    log.handlers[:] = [handler]
    return log


def run_job(name: str, store: Optional[Store] = None, *,
            install_signals: bool = False) -> Optional[str]:
    """Run the job in this process (the job's own, started by invoke or resume); returns the
    status it ended with, or None when another process runs it already. With
    ``install_signals``, SIGTERM and SIGINT stop it: it ends its workers and ends Canceled."""
    import fcntl

    store = store or Store()
    job = _get(store, name)
    # one process per job, however it was started: the lock goes with the process, even killed
    lock = open(Path(job.dir) / "run.lock", "a")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return None
    try:
        job = _get(store, name)  # as it is now that no other process runs it
        if job.status in TERMINAL:
            return None  # canceled before its process started
        stop = threading.Event()
        if install_signals:
            signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
            signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
        log = _logger(job)
        try:
            return _Run(store, job, log, stop).run()
        except Exception as exc:
            log.exception("the job's process failed")
            error = ("The job's process failed ({}); the job log has the traceback.".format(
                type(exc).__name__))
            _update(store, name, lambda current: _finish(current, "Failed", error))
            return "Failed"
    finally:
        lock.close()
