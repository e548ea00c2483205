"""The scoring server's Prometheus metrics, for GET /metrics, summed over its gunicorn workers.

prometheus_client's multiprocess mode: every process of the server (the master, each worker)
writes its values to memory-mapped files in one directory, and whichever worker answers
/metrics merges the files of all of them. The master makes the directory fresh when gunicorn
reads its config (``open_directory``, before anything creates a metric), beside the server's
config file, and removes it when it exits; a worker's death is marked (``worker_exited``) so
that its in-flight requests stop counting.

prometheus_client chooses between its one-process and multiprocess values when it is first
imported, by whether PROMETHEUS_MULTIPROC_DIR is set, so nothing here imports it at module
level: the env's fork server imports the server's modules long before a server's directory
exists. ``ServerMetrics`` chooses again if something imported it earlier. Without the variable
(an app made in a test's own process) the metrics are the process's own.
"""
import atexit
import os
import shutil
from typing import Any, Dict, Optional, Tuple

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DIRECTORY_PREFIX = "metrics."  # + the master's pid, in the server's folder
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# request and predict latencies: from a 1-row request's milliseconds to Azure's longest
# request timeout (180 s)
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
           60.0, 180.0, float("inf"))
BODY_BYTES = (256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
              16777216.0, 67108864.0, float("inf"))


def open_directory(folder: str) -> str:
    """In the gunicorn master: a fresh metrics directory in ``folder`` (the server's own),
    named by this process, removed when it exits. A USR2 re-exec's new master makes its own:
    the old master still writes to the old one until it is drained. Directories left by a
    master that was killed are removed here."""
    for name in os.listdir(folder):
        if name.startswith(DIRECTORY_PREFIX) and not _running(name[len(DIRECTORY_PREFIX):]):
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    owner = os.getpid()
    path = os.path.join(folder, DIRECTORY_PREFIX + str(owner))
    shutil.rmtree(path, ignore_errors=True)  # a pid reused after a reboot
    os.mkdir(path, 0o700)
    os.environ[MULTIPROC_ENV] = path

    def remove() -> None:
        # gunicorn's workers exit through sys.exit too, and inherit this handler
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path


def _running(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def worker_exited(pid: int) -> None:
    """gunicorn's child_exit, in the master: a dead worker's gauges (its requests in flight) no
    longer count; its counters and histograms do."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class ServerMetrics:
    """The metrics one server process records; ``render`` is the whole server's."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        if self.multiprocess and values.ValueClass is values.MutexValue:
            # imported before the variable was set (a fork server warmed it): choose again
            values.ValueClass = values.get_value_class()
        # in multiprocess mode the values are read from the files, never from a registry
        self._registry = None if self.multiprocess else CollectorRegistry()
        registry = self._registry
        self.requests = Counter(
            "mlflow_deploy_requests", "Scoring requests answered, by route and status.",
            ("route", "status"), registry=registry)
        self.request_seconds = Histogram(
            "mlflow_deploy_request_duration_seconds",
            "Time to answer a scoring request, from its start to its answer.", ("route",),
            buckets=SECONDS, registry=registry)
        self.predict_seconds = Histogram(
            "mlflow_deploy_predict_duration_seconds",
            "Time in the model's predict call (a scoring script's run()), on success.",
            buckets=SECONDS, registry=registry)
        self.rows = Counter("mlflow_deploy_rows_scored", "Input rows of successful predictions.",
                            registry=registry)
        self.body_bytes = Histogram(
            "mlflow_deploy_request_body_bytes", "Size of the scoring requests' bodies.",
            buckets=BODY_BYTES, registry=registry)
        self.in_flight = Gauge(
            "mlflow_deploy_requests_in_flight", "Scoring requests being answered now.",
            registry=registry, multiprocess_mode="livesum")
        self.model_load = Gauge(
            "mlflow_deploy_model_load_seconds",
            "Seconds from the start of the model's load to the slowest worker being ready "
            "(its load where the master did not load it, and its warm-up).",
            registry=registry, multiprocess_mode="max")
        self.coercions = Counter(
            "mlflow_deploy_coercions", "Coercions applied to inputs in compatible mode, by kind.",
            ("kind",), registry=registry)
        # labelled children looked up once: labels() costs more than the increment
        self._requests: Dict[Tuple[str, int], Any] = {}
        self._route_seconds: Dict[str, Any] = {}

    def observe(self, route: str, status: int, seconds: float, result: Any = None,
                body_bytes: Optional[int] = None) -> None:
        """One scoring request answered; ``result`` is the pipeline's Result, when it had one."""
        counter = self._requests.get((route, status))
        if counter is None:
            counter = self._requests[(route, status)] = self.requests.labels(route, str(status))
        counter.inc()
        histogram = self._route_seconds.get(route)
        if histogram is None:
            histogram = self._route_seconds[route] = self.request_seconds.labels(route)
        histogram.observe(seconds)
        if body_bytes is not None:
            self.body_bytes.observe(body_bytes)
        if result is None:
            return
        if result.predict_s is not None:
            self.predict_seconds.observe(result.predict_s)
        if result.rows:
            self.rows.inc(result.rows)
        for kind in result.coercion_kinds:
            self.coercions.labels(kind).inc()

    def loaded(self, seconds: float) -> None:
        self.model_load.set(seconds)

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        if not self.multiprocess:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

