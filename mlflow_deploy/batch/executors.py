"""Where a job's mini-batches run: the engines behind one small interface, ``Executor``.

The job (jobs.py) hands an executor one try of one mini-batch at a time and gets a
``concurrent.futures.Future`` back; it never learns which engine runs it. Retries, the error
threshold and the output stay in the job: an executor only runs a try, within its timeout, in a
batch worker (worker.py) that loads the model once and is kept for the next tries, and writes
the try's rows to the part file the job names, from the batch worker itself (so the rows do not
travel back through the job's process, and the writes of concurrent tries overlap); a batch
worker that cannot see the job's folder (a Dask worker on another machine) returns them instead,
and the job writes them.

- ``local`` (the default): threads of the job process, as many as the job runs mini-batches at
  once, each using one batch worker process at a time.
- ``dask``: each try is a task on a Dask cluster (``distributed``, the optional extra
  ``mlflow-deploy[dask]``): the scheduler at ``scheduler_address``, else a ``LocalCluster`` of
  ``instance_count`` worker processes of ``max_concurrency_per_instance`` threads each, bound to
  127.0.0.1 and without a dashboard. A task hands its mini-batch to a batch worker kept in the
  Dask worker's process, one per WorkerSpec and thread (module-level, so the model loads once
  per Dask worker and spec, and a long-lived cluster keeps it across jobs of the same spec). Dask
  cannot stop a running task; it need not: the batch worker kills its own hung scorer when the
  try's timeout passes, and the task then ends with WorkerTimedOut. On a cluster of its own
  (``scheduler_address``) a worker may be another machine: the job scatters the revision's files
  and its env's lock once (remote.py), every task names them (so Dask copies them to each worker
  once, before its first task), and a worker that lacks the paths unpacks them and builds the env
  from the lock before its first try.

Another engine is a class here and a line in ``EXECUTORS``.
"""
import concurrent.futures
import json
import logging
import os
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Set

from mlflow_deploy.errors import InvalidParameter
from mlflow_deploy.batch import remote
from mlflow_deploy.batch.worker import BatchWorker, MiniBatchOutcome, WorkerDied, WorkerSpec

__all__ = ["Executor", "LocalExecutor", "DaskExecutor", "EXECUTORS", "open_executor",
           "require_engine"]


class Executor(Protocol):
    """Runs tries of mini-batches, ``slots`` of them at once."""

    #: how many tries run at once (instance_count x max_concurrency_per_instance); the job keeps
    #: more submitted, which wait for a slot
    slots: int

    def submit(self, files: Sequence[str], timeout: float, part: Optional[str] = None
               ) -> "concurrent.futures.Future[MiniBatchOutcome]":
        """One try of one mini-batch. The future gives its outcome, or raises a WorkerFailed
        (WorkerTimedOut, WorkerDied, WorkerStartFailed). ``part``: where its rows go; the
        outcome says whether they were ``written`` there or come back as its ``data``."""

    def close(self, abort: bool = False) -> None:
        """Release the workers. ``abort``: end the tries still running now (their futures raise
        WorkerDied) instead of letting them finish."""


# ---- local processes --------------------------------------------------------------------------

class LocalExecutor:
    """Threads of the job process, each try in one of at most ``slots`` batch workers."""

    def __init__(self, spec: WorkerSpec, slots: int, log_path: Optional[str] = None):
        self.slots = slots
        self._pool = _WorkerPool(spec, log_path)
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=slots, thread_name_prefix="mini-batch")

    def submit(self, files: Sequence[str], timeout: float, part: Optional[str] = None
               ) -> "concurrent.futures.Future[MiniBatchOutcome]":
        return self._threads.submit(self._pool.run, list(files), timeout, part)

    def close(self, abort: bool = False) -> None:
        if abort:
            self._pool.kill_busy()
        self._threads.shutdown(wait=True, cancel_futures=True)
        self._pool.close()


class _WorkerPool:
    """Batch workers of one spec: a try takes an idle one (or starts one) and gives it back.
    Never more workers than tries running at once, so each keeps its loaded model."""

    def __init__(self, spec: WorkerSpec, log_path: Optional[str],
                 base_env: Optional[Mapping[str, str]] = None):
        self.spec, self.log_path, self.base_env = spec, log_path, base_env
        self._lock = threading.Lock()
        self._idle: List[BatchWorker] = []
        self._busy: Set[BatchWorker] = set()
        self._closed = False

    def run(self, files: List[str], timeout: float, part: Optional[str] = None
            ) -> MiniBatchOutcome:
        with self._lock:
            if self._closed:
                raise WorkerDied("the job is stopping; the mini-batch was not run")
            if self._idle:
                worker = self._idle.pop()
                worker.log_path = self.log_path
            else:
                worker = BatchWorker(self.spec, self.log_path, base_env=self.base_env)
            self._busy.add(worker)
        try:
            return worker.run(files, timeout, part)
        finally:
            with self._lock:
                self._busy.discard(worker)
                closed = self._closed
                if not closed:
                    self._idle.append(worker)
            if closed:
                worker.close()

    def kill_busy(self) -> None:
        """SIGKILL the process group of every worker in a try: the try ends with WorkerDied, and
        no try starts after."""
        with self._lock:
            self._closed = True
            busy = list(self._busy)
        for worker in busy:
            worker.abort()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        # each close waits for its process to end (a script's shutdown()): all at once
        closing = [threading.Thread(target=worker.close) for worker in idle]
        for thread in closing:
            thread.start()
        for thread in closing:
            thread.join()


# ---- Dask ---------------------------------------------------------------------------------------

_MISSING_DASK = ("executor 'dask' needs the optional package distributed: install "
                 "mlflow-deploy[dask]")


def _distributed():
    try:
        import distributed
    except ImportError:
        raise InvalidParameter(_MISSING_DASK) from None
    return distributed


#: the job's own LocalCluster, which runs nothing but its tries: no statistical profiler sampling
#: every thread's stack each 10 ms in every worker (it is for the dashboard, which is off), no
#: work stealing (a worker holds at most its next try, and the tries are alike)
_QUIET_CLUSTER = {"distributed.worker.profile.enabled": False,
                  "distributed.scheduler.work-stealing": False}


class DaskExecutor:
    """Each try is a Dask task that runs the mini-batch in a batch worker of the Dask worker's
    process (``_run_in_dask_worker``)."""

    def __init__(self, spec: WorkerSpec, slots: int, log_path: Optional[str] = None, *,
                 scheduler_address: Optional[str] = None, instance_count: int = 1,
                 max_concurrency_per_instance: int = 1):
        distributed = _distributed()
        import dask.config

        self.slots = slots
        self._spec = spec.to_dict()
        self._key = _spec_key(self._spec)
        self._log_path = log_path
        self._cluster = None
        self._shipment = None
        if scheduler_address:
            self._client = distributed.Client(scheduler_address, timeout=30,
                                              set_as_default=False)
            # held until close: Dask keeps scattered data while a future of it exists
            self._shipment = self._client.scatter(remote.pack(spec), hash=False)
        else:
            # bound to loopback only; Dask's own lines below errors stay out of the job log;
            # the workers' scratch space is the job's folder
            with dask.config.set(_QUIET_CLUSTER):
                self._cluster = distributed.LocalCluster(
                    processes=True, host="127.0.0.1", dashboard_address=None,
                    n_workers=instance_count, threads_per_worker=max_concurrency_per_instance,
                    silence_logs=logging.ERROR,
                    local_directory=os.path.join(os.path.dirname(log_path), "dask")
                    if log_path else None)
            self._client = distributed.Client(self._cluster, set_as_default=False)
        # Dask forgets a task whose future nobody holds: keep each until it has ended
        self._running: Dict[Any, concurrent.futures.Future] = {}
        self._lock = threading.Lock()

    def submit(self, files: Sequence[str], timeout: float, part: Optional[str] = None
               ) -> "concurrent.futures.Future[MiniBatchOutcome]":
        result: concurrent.futures.Future = concurrent.futures.Future()
        result.set_running_or_notify_cancel()
        task = self._client.submit(_run_in_dask_worker, self._spec, list(files), timeout,
                                   self._log_path, self._shipment, part, pure=False)
        with self._lock:
            self._running[task] = result
        task.add_done_callback(self._ended)
        return result

    def _ended(self, task) -> None:
        with self._lock:
            result = self._running.pop(task, None)
        if result is None:
            return
        try:
            if task.status == "finished":
                result.set_result(task.result())
            elif task.status == "cancelled":
                result.set_exception(WorkerDied("the Dask task was cancelled"))
            else:
                error = task.exception()
                if not isinstance(error, Exception):
                    error = WorkerDied("the Dask task failed")
                result.set_exception(error)
        except Exception as exc:  # the scheduler went away while the result was fetched
            if not result.done():
                result.set_exception(WorkerDied("the Dask task's result was lost ({})".format(
                    type(exc).__name__)))

    def close(self, abort: bool = False) -> None:
        try:
            if abort:
                with self._lock:
                    tasks = list(self._running)
                self._client.cancel(tasks)  # those not started yet
                # those running: their batch workers are killed, and the tasks end at once
                self._client.run(_kill_busy_in_dask_worker, self._key)
            if self._cluster is not None:
                # the cluster goes with the job: its workers' model processes go first
                self._client.run(_close_in_dask_worker)
        finally:
            self._client.close()
            if self._cluster is not None:
                self._cluster.close()
        with self._lock:
            left, self._running = list(self._running.values()), {}
        for result in left:
            if not result.done():
                result.set_exception(WorkerDied("the job stopped its Dask tasks"))


# the batch workers of this Dask worker process, by spec: module-level, so they outlive the task
# that started them and serve the next tasks of the same spec (the model loads once)
_DASK_POOLS: Dict[str, _WorkerPool] = {}
_DASK_LOCK = threading.Lock()


def _spec_key(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)


def _run_in_dask_worker(spec: Dict[str, Any], files: List[str], timeout: float,
                        log_path: Optional[str], shipment: Optional["remote.Shipment"],
                        part: Optional[str]) -> MiniBatchOutcome:
    key = _spec_key(spec)
    with _DASK_LOCK:
        pool = _DASK_POOLS.get(key)
        if pool is None or pool._closed:
            # a Dask worker on another machine may not have the job's folder: no log there
            if log_path and not os.path.isdir(os.path.dirname(log_path)):
                log_path = None
            local = WorkerSpec.from_dict(spec)
            if shipment is not None:  # under the lock: the other threads need it too
                local = remote.localize(local, shipment)
            pool = _DASK_POOLS[key] = _WorkerPool(local, log_path, _without_dask_tuning())
        elif log_path and os.path.isdir(os.path.dirname(log_path)):
            pool.log_path = log_path  # a worker started from now on logs to this job's log
    return pool.run(files, timeout, part)


def _without_dask_tuning() -> Dict[str, str]:
    """This Dask worker's environment without what Dask's nanny set for the worker process
    itself (``distributed.nanny.pre-spawn-environ`` and ``.environ``): a batch worker starts
    from the environment it would have under the local executor. MALLOC_TRIM_THRESHOLD_=65536,
    among them, has glibc give every freed frame back to the kernel and fault it in again for
    the next file; the batch worker measured up to 1.4x slower with it."""
    import dask.config

    env = dict(os.environ)
    for section in ("distributed.nanny.pre-spawn-environ", "distributed.nanny.environ"):
        for name in dask.config.get(section, default=None) or {}:
            env.pop(str(name), None)
    return env


def _kill_busy_in_dask_worker(key: str) -> None:
    with _DASK_LOCK:
        pool = _DASK_POOLS.pop(key, None)
    if pool is not None:
        pool.kill_busy()
        pool.close()


def _close_in_dask_worker() -> None:
    with _DASK_LOCK:
        pools = list(_DASK_POOLS.values())
        _DASK_POOLS.clear()
    for pool in pools:
        pool.close()


# ---- choosing one -------------------------------------------------------------------------------

def _local(spec: WorkerSpec, settings: Mapping[str, Any], log_path: Optional[str]) -> Executor:
    return LocalExecutor(spec, _slots(settings), log_path)


def _dask(spec: WorkerSpec, settings: Mapping[str, Any], log_path: Optional[str]) -> Executor:
    return DaskExecutor(spec, _slots(settings), log_path,
                        scheduler_address=settings.get("scheduler_address"),
                        instance_count=int(settings["instance_count"]),
                        max_concurrency_per_instance=int(
                            settings["max_concurrency_per_instance"]))


def _slots(settings: Mapping[str, Any]) -> int:
    return int(settings["instance_count"]) * int(settings["max_concurrency_per_instance"])


#: the engines by the name the ``executor`` setting gives, each with the check that it can run
#: here (raising InvalidParameter), done when the job is submitted
EXECUTORS: Dict[str, Callable[[WorkerSpec, Mapping[str, Any], Optional[str]], Executor]] = {
    "local": _local,
    "dask": _dask,
}
_REQUIREMENTS: Dict[str, Callable[[], Any]] = {"dask": _distributed}


def require_engine(name: str) -> None:
    """Raise InvalidParameter if executor ``name`` is unknown or cannot run here."""
    if name not in EXECUTORS:
        raise InvalidParameter("Config 'executor' must be one of: {}.".format(
            ", ".join(EXECUTORS)))
    check = _REQUIREMENTS.get(name)
    if check is not None:
        check()


def open_executor(spec: WorkerSpec, settings: Mapping[str, Any],
                  log_path: Optional[str] = None) -> Executor:
    """The executor ``settings["executor"]`` names (local when none), sized by the job's
    ``instance_count`` and ``max_concurrency_per_instance``."""
    name = settings.get("executor") or "local"
    require_engine(name)
    return EXECUTORS[name](spec, settings, log_path)
