"""An endpoint gateway's Prometheus metrics, and the endpoint's GET /metrics.

The gateway counts what it routes (per deployment, by the status the caller got, and how long
it took) and what it answers itself (a missing key, a full deployment, a timeout: by status);
the traffic weights and the mirror's verdicts are read from the gateway's state at each scrape.
GET /metrics (under the endpoint's key, as scoring is) answers those with every deployment
instance's own scrape, fetched over the instance's socket as requests are, each sample labelled
with its ``deployment`` and ``instance``: one page for the whole endpoint.

One gateway is one process: its own metrics need no multiprocess mode.
"""

import asyncio
import logging
from typing import Any, Dict, Iterable, List, Optional, Protocol, Tuple

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from mlflow_deploy.online import upstream
from mlflow_deploy.online.backends import Backend
from mlflow_deploy.online.mirror import MirrorReport
from mlflow_deploy.online.routes import GatewayConfig
from mlflow_deploy.scoring.metrics import CONTENT_TYPE, SECONDS

__all__ = ["PATH", "GatewayMetrics"]

log = logging.getLogger("mlflow_deploy.gateway")

PATH = "/metrics"
# how long a scrape waits for the instances: one that does not answer by then is left out
SCRAPE_TIMEOUT_S = 5.0
# requests per call, and a request's wait for its batch (max_batch_time_ms is 10 by default)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BATCH_WAITS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class Gateway(Protocol):
    """What the metrics read of the endpoint's gateway: named here rather than imported, since
    the gateway imports this module."""

    config: Optional[GatewayConfig]
    backends: Dict[str, Backend]
    mirrors: Dict[str, MirrorReport]

    def refusal(self, request: web.Request) -> Optional[web.Response]:
        ...


class GatewayMetrics:
    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlflow_deploy_gateway_requests",
            "Requests routed to a deployment, by the status the caller got.",
            ("endpoint", "deployment", "status"), registry=self.registry)
        self.seconds = Histogram(
            "mlflow_deploy_gateway_request_duration_seconds",
            "Time from a routed request's arrival at the gateway to its answer.",
            ("endpoint", "deployment"), buckets=SECONDS, registry=self.registry)
        self.refused = Counter(
            "mlflow_deploy_gateway_refused",
            "Requests the gateway answered itself (no key, no deployment, too many in flight, "
            "a timeout, an instance gone), by status.",
            ("endpoint", "status"), registry=self.registry)
        self.batch_size = Histogram(
            "mlflow_deploy_gateway_batch_size",
            "Requests sent together in one call to an instance of a deployment that batches "
            "(max_batch_size; 1: a request sent alone).",
            ("endpoint", "deployment"), buckets=BATCH_SIZES, registry=self.registry)
        self.batch_wait = Histogram(
            "mlflow_deploy_gateway_batch_wait_seconds",
            "Time a request of a deployment that batches waited for its batch to be sent "
            "(max_batch_time_ms at most).",
            ("endpoint", "deployment"), buckets=BATCH_WAITS, registry=self.registry)
        self.registry.register(_State(gateway))
        # a routed request's count and time, by (deployment, status): their children looked up
        # once, as ``labels`` takes a lock and builds its key at every call (one request each)
        self._routed: Dict[Tuple[str, int], Tuple[Any, Any]] = {}

    def observe_batch(self, deployment: str, size: int, waits: Iterable[float]) -> None:
        """One call of a deployment that batches: how many requests it carried, and how long
        each of them waited for it."""
        endpoint = self.gateway.config.endpoint
        self.batch_size.labels(endpoint, deployment).observe(size)
        wait = self.batch_wait.labels(endpoint, deployment)
        for seconds in waits:
            wait.observe(seconds)

    def observe(self, deployment: Optional[str], answered: bool, status: int,
                seconds: float) -> None:
        """One request on the endpoint's port: counted by the deployment chosen, where one
        was; among the gateway's own answers where the deployment's is not what the caller
        got."""
        endpoint = self.gateway.config.endpoint
        if deployment is not None:
            children = self._routed.get((deployment, status))
            if children is None:
                children = self._routed[deployment, status] = (
                    self.requests.labels(endpoint, deployment, str(status)),
                    self.seconds.labels(endpoint, deployment))
            children[0].inc()
            children[1].observe(seconds)
        if not answered:
            self.refused.labels(endpoint, str(status)).inc()

    async def page(self, request: web.Request) -> web.Response:
        """GET /metrics, under the endpoint's key as scoring is."""
        refused = self.gateway.refusal(request)
        if refused is not None:
            self.refused.labels(self.gateway.config.endpoint, str(refused.status)).inc()
            return refused
        return await self.scrape()

    async def scrape(self) -> web.Response:
        """The gateway's metrics and every instance's, re-labelled, as one text page."""
        targets = [(name, str(index), instance.address)
                   for name, backend in sorted(self.gateway.backends.items())
                   for index, instance in enumerate(backend.instances)]
        texts = await asyncio.gather(*(_fetch(address) for _, _, address in targets))
        families: Dict[str, Metric] = {}
        for (deployment, index, _), text in zip(targets, texts):
            if text is not None:
                _merge(families, text, {"deployment": deployment, "instance": index})
        page = generate_latest(_Families(list(self.registry.collect()) + list(families.values())))
        return web.Response(body=page, headers={"Content-Type": CONTENT_TYPE})


async def _fetch(address: str) -> Optional[str]:
    """An instance's /metrics text; None (logged) when it does not answer it in time."""
    try:
        status, _, body = await upstream.exchange(address, "GET", PATH, {}, b"",
                                                  timeout_s=SCRAPE_TIMEOUT_S)
    except (upstream.TimedOut, ConnectionError, OSError, ValueError) as exc:
        log.warning("instance %s did not answer its metrics scrape (%s)", address,
                    type(exc).__name__)
        return None
    if status != 200:
        log.warning("instance %s answered its metrics scrape with %d", address, status)
        return None
    return body.decode("utf-8", "replace")


def _merge(families: Dict[str, Metric], text: str, labels: Dict[str, str]) -> None:
    """Add the scrape's samples, with ``labels``, to the families of the same name (one family
    per name whatever the number of instances)."""
    try:
        parsed = list(text_string_to_metric_families(text))
    except ValueError:
        log.warning("an instance of %s answered a metrics scrape that does not parse",
                    labels["deployment"])
        return
    for family in parsed:
        merged = families.get(family.name)
        if merged is None:
            merged = families[family.name] = Metric(family.name, family.documentation,
                                                    family.type, family.unit)
        for sample in family.samples:
            merged.add_sample(sample.name, dict(sample.labels, **labels), sample.value,
                              sample.timestamp)


class _Families:
    """Metric families to render (generate_latest takes anything with ``collect``)."""

    def __init__(self, families: List[Metric]):
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


class _State:
    """What the gateway's state says at scrape time: the configured traffic weights and the
    mirror's verdicts (``mirror.MirrorReport``), at the reports' default tolerance."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    def collect(self) -> Iterable[Metric]:
        config = self.gateway.config
        weights = GaugeMetricFamily(
            "mlflow_deploy_gateway_traffic_weight",
            "The share of traffic (%) configured for the deployment, to compare with the share "
            "it served.", labels=("endpoint", "deployment"))
        for name in sorted(self.gateway.backends):
            weights.add_metric((config.endpoint, name), config.traffic.get(name, 0))
        yield weights
        mirror = CounterMetricFamily(
            "mlflow_deploy_gateway_mirror",
            "Mirrored copies, by whether the deployment's answer was the same as the live one "
            "(within the default tolerance), different, or failed (not 200, no answer).",
            labels=("endpoint", "deployment", "outcome"))
        for name, report in sorted(self.gateway.mirrors.items()):
            summary: Dict[str, Any] = report.summary()
            for outcome, count in (("same", summary["agreeing"]),
                                   ("different", summary["differing"]),
                                   ("failed", sum(report.errors.values()))):
                mirror.add_metric((config.endpoint, name, outcome), count)
        yield mirror
