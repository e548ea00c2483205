"""Request counters for GET /metrics, shared by every gunicorn worker.

The counters live in shared memory created before the workers fork (gunicorn preloads the app),
so any worker answers /metrics for the whole server. prometheus_client would need its
multiprocess mode and a directory per server; a dozen doubles do not justify that.
"""
import multiprocessing
from multiprocessing.sharedctypes import RawArray

ROUTES = ("score", "invocations")
CLASSES = ("2xx", "4xx", "5xx")


class Metrics:
    def __init__(self) -> None:
        self._slots = len(ROUTES) * len(CLASSES)
        # counts per (route, class), then seconds per (route, class)
        self._values = RawArray("d", self._slots * 2)
        self._lock = multiprocessing.Lock()

    def _slot(self, route: str, status: int) -> int:
        klass = min(max(status // 100, 2), 5)
        return ROUTES.index(route) * len(CLASSES) + (0 if klass == 2 else 1 if klass == 4 else 2)

    def observe(self, route: str, status: int, seconds: float) -> None:
        slot = self._slot(route, status)
        with self._lock:
            self._values[slot] += 1
            self._values[self._slots + slot] += seconds

    def render(self) -> str:
        lines = ["# HELP mlflow_deploy_requests_total Scoring requests answered, by route and status class.",
                 "# TYPE mlflow_deploy_requests_total counter"]
        seconds = ["# HELP mlflow_deploy_request_seconds_total Time spent answering them.",
                   "# TYPE mlflow_deploy_request_seconds_total counter"]
        with self._lock:
            values = list(self._values)
        for r, route in enumerate(ROUTES):
            for c, klass in enumerate(CLASSES):
                slot = r * len(CLASSES) + c
                labels = '{{route="{}",status="{}"}}'.format(route, klass)
                lines.append("mlflow_deploy_requests_total{} {}".format(labels, int(values[slot])))
                seconds.append("mlflow_deploy_request_seconds_total{} {:.6f}".format(
                    labels, values[self._slots + slot]))
        return "\n".join(lines + seconds) + "\n"
