"""Where a job's mini-batches run: the engines behind one small interface, ``Executor``.

The job (jobs.py) hands an executor tries of mini-batches, a few at a time, and gets a
``concurrent.futures.Future`` back for each; it never learns which engine runs them. Retries,
the error threshold and the output stay in the job: an executor only runs a try, within its
timeout, in a batch worker (worker.py) that loads the model once and is kept for the next
tries, and writes the try's rows to the part file the job names, from the batch worker itself
(so the rows do not travel back through the job's process, and the writes of concurrent tries
overlap); a batch worker that cannot see the job's folder (a Dask worker on another machine)
returns them instead, and the job writes them.

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
from dataclasses import asdict
from typing import (Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Set,
                    Tuple)

from mlflow_deploy.errors import InvalidParameter
from mlflow_deploy.batch import remote
from mlflow_deploy.batch.worker import BatchWorker, MiniBatchOutcome, WorkerDied, WorkerSpec

__all__ = ["Executor", "Try", "LocalExecutor", "DaskExecutor", "EXECUTORS", "open_executor",
           "require_engine"]


#: one try of one mini-batch: its files, and the part file its rows go to
Try = Tuple[Sequence[str], Optional[str]]


class Executor(Protocol):
    """Runs tries of mini-batches, ``slots`` of them at once."""

    #: how many tries run at once (instance_count x max_concurrency_per_instance)
    slots: int
    #: how many the job keeps submitted, more than ``slots``: the next try starts where one
    #: ends, without waiting for the job to record the last (its done record and the job's row,
    #: each fsync'ed)
    depth: int
    #: the job tops its tries up once this many have ended, all in one ``submit``
    batch: int

    def submit(self, tries: Sequence[Try], timeout: float
               ) -> "List[concurrent.futures.Future[MiniBatchOutcome]]":
        """A future per try, in order: its outcome, or it raises a WorkerFailed (WorkerTimedOut,
        WorkerDied, WorkerStartFailed). The outcome says whether the rows were ``written`` to
        the try's part file or come back as its ``data``."""

    def close(self, abort: bool = False) -> None:
        """Release the workers. ``abort``: end the tries still running now (their futures raise
        WorkerDied) instead of letting them finish."""


# ---- local processes --------------------------------------------------------------------------

class LocalExecutor:
    """Threads of the job process, each try in one of at most ``slots`` batch workers."""

    def __init__(self, spec: WorkerSpec, slots: int, log_path: Optional[str] = None):
        self.slots, self.depth, self.batch = slots, 2 * slots, 1
        self._pool = _WorkerPool(spec, log_path)
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=slots, thread_name_prefix="mini-batch")

    def submit(self, tries: Sequence[Try], timeout: float
               ) -> "List[concurrent.futures.Future[MiniBatchOutcome]]":
        return [self._threads.submit(self._pool.run, list(files), timeout, part)
                for files, part in tries]

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


#: the job's own LocalCluster, which runs nothing but its tries and shares the batch workers'
#: cores: no statistical profiler sampling every thread's stack each 10 ms in every worker (it
#: is for the dashboard, which is off), no work stealing (a worker holds at most its next try,
#: and the tries are alike); its event loops' health checked each second instead of 50 times
#: (it only warns, in Dask's own log lines, which the job leaves out) and the system monitor
#: (CPU, memory, network for the dashboard) read every 5 s instead of every 0.5 s. Measured
#: here: an idle cluster of 2 workers took 7.4 % of a core, 1.2 % with these.
_QUIET_CLUSTER = {"distributed.worker.profile.enabled": False,
                  "distributed.scheduler.work-stealing": False,
                  "distributed.admin.tick.interval": "1s",
                  "distributed.admin.system-monitor.interval": "5s"}


class DaskExecutor:
    """Each try is a Dask task that runs the mini-batch in a batch worker of the Dask worker's
    process (``_run_in_dask_worker``).

    What Dask costs per task is CPU taken from the batch workers when the cluster shares their
    machine (a LocalCluster always does). Measured here, on 2 cores, for tasks that only sleep:
    7-8 ms of CPU per task across the job's process (client and scheduler) and the Dask workers
    when tries go one at a time and each result is fetched from the worker that ran it, 4-5 ms
    with tries submitted 8 at a time (one graph, one message to the scheduler) and each outcome
    reported (a message on the streams to the scheduler and back that are open anyway). Hence
    ``batch``, and ``_reported``. The scheduler holds what its workers' threads cannot start
    yet (its queuing of tasks without dependencies), so a deep ``depth`` does not load one
    worker with another's tries."""

    def __init__(self, spec: WorkerSpec, slots: int, log_path: Optional[str] = None, *,
                 scheduler_address: Optional[str] = None, instance_count: int = 1,
                 max_concurrency_per_instance: int = 1):
        distributed = _distributed()
        import dask.config

        self.slots, self.depth, self.batch = slots, 8 * slots, 4 * slots
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
            # the workers' scratch space is the job's folder. No memory limit: it would watch
            # the Dask worker's process, which holds a few lines per try, not the batch worker
            # that holds the model and the data, and it costs a poll of that process's memory
            # 10 times a second in the worker and its nanny.
            with dask.config.set(_QUIET_CLUSTER):
                self._cluster = distributed.LocalCluster(
                    processes=True, host="127.0.0.1", dashboard_address=None,
                    n_workers=instance_count, threads_per_worker=max_concurrency_per_instance,
                    memory_limit=0, silence_logs=logging.ERROR,
                    local_directory=os.path.join(os.path.dirname(log_path), "dask")
                    if log_path else None)
            self._client = distributed.Client(self._cluster, set_as_default=False)
        # Dask forgets a task whose future nobody holds: keep each until it has ended, by key
        self._running: Dict[str, Tuple[Any, concurrent.futures.Future]] = {}
        self._outcomes: Dict[str, MiniBatchOutcome] = {}
        self._lock = threading.Lock()
        # this client's own topic: on a shared scheduler, other jobs' outcomes do not come here
        self._topic = "mlflow-deploy-outcome-" + self._client.id
        self._client.subscribe_topic(self._topic, self._reported)

    def submit(self, tries: Sequence[Try], timeout: float
               ) -> "List[concurrent.futures.Future[MiniBatchOutcome]]":
        results = []
        for _ in tries:
            result: concurrent.futures.Future = concurrent.futures.Future()
            result.set_running_or_notify_cancel()
            results.append(result)
        tasks = self._client.map(
            _run_in_dask_worker, [list(files) for files, _ in tries],
            [part for _, part in tries], spec=self._spec, timeout=timeout,
            log_path=self._log_path, shipment=self._shipment, topic=self._topic, pure=False)
        with self._lock:
            for task, result in zip(tasks, results):
                self._running[task.key] = (task, result)
        for task in tasks:
            task.add_done_callback(self._ended)
        return results

    def _reported(self, event: Tuple[float, Dict[str, Any]]) -> None:
        """An outcome a task logged before it ended (``_run_in_dask_worker``). The scheduler
        passes it on before it reports the task done, so ``_ended`` finds it; a task that ended
        without one (its worker could not report it) has its result fetched instead."""
        key, outcome = event[1]["key"], event[1]["outcome"]
        with self._lock:
            if key in self._running:
                self._outcomes[key] = MiniBatchOutcome(**outcome)

    def _ended(self, task) -> None:
        with self._lock:
            _, result = self._running.pop(task.key, (None, None))
            reported = self._outcomes.pop(task.key, None)
        if result is None:
            return
        try:
            if task.status == "finished":
                result.set_result(reported if reported is not None else task.result())
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
                    tasks = [task for task, _ in self._running.values()]
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
            left = [result for _, result in self._running.values()]
            self._running, self._outcomes = {}, {}
        for result in left:
            if not result.done():
                result.set_exception(WorkerDied("the job stopped its Dask tasks"))


# the batch workers of this Dask worker process, by spec: module-level, so they outlive the task
# that started them and serve the next tasks of the same spec (the model loads once)
_DASK_POOLS: Dict[str, _WorkerPool] = {}
_DASK_LOCK = threading.Lock()


def _spec_key(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)


def _run_in_dask_worker(files: List[str], part: Optional[str], *, spec: Dict[str, Any],
                        timeout: float, log_path: Optional[str],
                        shipment: Optional["remote.Shipment"], topic: str) -> MiniBatchOutcome:
    outcome = _run_in_pool(spec, files, timeout, log_path, shipment, part)
    if not outcome.data:  # a few lines: reported ahead of the task's end (DaskExecutor)
        import distributed

        worker = distributed.get_worker()
        try:
            worker.log_event(topic, {"key": worker.get_current_task(),
                                     "outcome": asdict(outcome)})
        except Exception:  # not reported: the job fetches the result instead
            pass
    return outcome


def _run_in_pool(spec: Dict[str, Any], files: List[str], timeout: float,
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
