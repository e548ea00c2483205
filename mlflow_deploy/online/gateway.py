"""An endpoint's gateway: one asyncio process in front of the endpoint's deployments.

Run as ``python -m mlflow_deploy.online.gateway GATEWAY_JSON``. It listens on the endpoint's
port and, per request: reads the whole body (so a slow client holds a coroutine, never one of a
deployment's synchronous workers; over the limit is the gateway's own 413), checks the key,
picks a deployment (the ``azureml-model-deployment`` header, else the traffic weights), picks
the instance with the fewest outstanding requests, forwards, and answers as Azure's router does
(``routes.py`` has the table). A copy of the mirrored share goes to the mirrored deployments,
fire-and-forget, and their answers feed the comparison report (``mirror.py``). Each instance's
liveness and readiness probes run here too (``probes.py``): the gateway is the one process that
lives as long as the endpoint, so it is the one that notices an instance die and restarts it.

It also listens on each instance's own port (127.0.0.1 only; the first instance's is the
deployment's own URI) and passes what comes there through to that instance, transparently (no
key, every route and status as the instance answers them): an instance listens only on its Unix
socket in its owner-only folder, so no client ever reaches one of its synchronous workers
before its whole request is read. A port another program holds is retried at each reload and
reported to the control plane.

The control plane talks to it over an owner-only Unix socket: ``POST /reload`` re-reads the
config file and answers once the new routing table is in force (a request already forwarded
finishes on the instance it went to), ``GET /mirror?rtol=`` returns the mirror reports, ``GET
/health`` says it is up, with the instances answering its requests (the control plane's own
health check takes a busy instance's silence for busy, not hung). In transparent mode
(``serve``, ``run-local``) there is one deployment, no key, no 424 wrapping, no timeout and no
probes of its own: every route and status passes through, and the connection closes after every
answer, as the server's own would.

Each of an instance's workers keeps one of the gateway's connections open between requests,
and the gateway sends a request on one of those that is idle where it can (``upstream.Pool``).

One asyncio event loop (uvloop where it is installed) keeps thousands of slow clients for the
cost of their buffers, which a thread per connection would not. Every port reads and answers
HTTP on a bare protocol (``frontend.py``); aiohttp serves only the Unix sockets: the control
plane's, and an internal one for the endpoint's page and ``/metrics`` (``GET /ui...`` and ``GET
/metrics`` on the endpoint's port are passed to it), which are few, rarely asked, and keep
aiohttp's conveniences.
"""

import asyncio
import functools
import json
import logging
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Set, Tuple

from aiohttp import web

from mlflow_deploy import pages
from mlflow_deploy.online import batching, frontend, metrics, ui, upstream
from mlflow_deploy.online.backends import DOWN_S, Backend, Instance
from mlflow_deploy.online.mirror import DEFAULT_RTOL, MirrorReport
from mlflow_deploy.online.routes import (
    DEPLOYMENT_HEADER,
    MISSING_KEY,
    MODEL_ERROR_STATUS,
    NO_POSITIVE_WEIGHT,
    TRANSPARENT,
    GatewayConfig,
    Keys,
    authorized,
    pick_deployment,
)
from mlflow_deploy.online.supervisor import HOST
from mlflow_deploy.scoring import access, logfile
from mlflow_deploy.scoring.errors import (
    MAX_REQUEST_ID,
    MS_IDS_TOO_LONG,
    REQUEST_ID,
    REQUEST_ID_TOO_LONG,
    new_request_id,
)

log = logging.getLogger("mlflow_deploy.gateway")

# copies to mirrored deployments waiting for an answer, at most: past this a copy is dropped (and
# counted), so a slow mirror never grows the gateway's memory
MIRROR_QUEUE = 64
MS_IDS = ("x-ms-request-id", "x-ms-client-request-id")
# how long a reload waits for the requests in flight at instances it dropped (the longest
# request timeout Azure allows, 180 s, plus a margin)
DRAIN_LIMIT_S = 190.0
# how long a stopping gateway waits for the requests in flight (aiohttp's shutdown_timeout)
SHUTDOWN_S = 60.0
NO_INSTANCE = "The deployment has no instance ready to serve."
NO_ANSWER = "The deployment's instance closed the connection without an answer."
# hop-by-hop headers (RFC 9110 7.6.1) and those the gateway sets itself are never passed on;
# the key stays at the gateway; Expect too: the gateway has answered it and read the whole
# body, and an instance that answered it again would put its 100 Continue before its answer
_NOT_FORWARDED = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length", "authorization", "expect",
})
# an instance's answer through the endpoint: its connection handling is its own hop's, and the
# router's headers are the gateway's to set
_REPLACED = frozenset({
    "connection", "keep-alive", DEPLOYMENT_HEADER, MODEL_ERROR_STATUS,
    "ms-azureml-model-error-reason",
})
# the internal app's socket (the page and /metrics), beside the control plane's
PAGES_SOCKET = "pages.sock"
# the routes of the endpoint's port the gateway answers itself (GET and HEAD), in endpoint mode
_PAGE = "/ui"


def _json_answer(status: int, message: str, **headers: str) -> web.Response:
    return web.Response(status=status, body=json.dumps({"message": message}).encode(),
                        content_type="application/json", headers=headers)


def _overlong_id(headers: Any) -> Optional[str]:
    """The 431 message for a request id over Azure's limit (its server's rule and words), else
    None: the gateway echoes the request id in its own answers, so it must hold the same bound
    as the server, or a 502 or 408 would carry an id of any length back."""
    if len(headers.get(REQUEST_ID, "")) > MAX_REQUEST_ID:
        return REQUEST_ID_TOO_LONG
    if any(len(headers.get(name, "")) > MAX_REQUEST_ID for name in MS_IDS):
        return MS_IDS_TOO_LONG
    return None


def _is_own_page(path: str) -> bool:
    return path == metrics.PATH or path == _PAGE or path.startswith(_PAGE + "/")


def _with_id(headers: upstream.Headers, request_id: str) -> upstream.Headers:
    """An instance's answer headers, with the request id it was sent where it gave none."""
    if upstream.header(headers, REQUEST_ID) is None:
        return headers + [(REQUEST_ID, request_id)]
    return headers


class _Routed(NamedTuple):
    """An answer on the endpoint's port, with what its metrics and access line say of it."""

    status: int
    headers: upstream.Headers
    body: bytes
    deployment: Optional[str] = None  # the deployment chosen, where one was
    answered: bool = False  # the deployment's answer, not one of the gateway's own


def _forwarded(headers: Mapping[str, str], too_long: Optional[str]
               ) -> Tuple[Dict[str, str], str]:
    """The headers an instance is sent (from a request's, names lowercase: hop-by-hop ones and
    the key dropped, the request id the
    client's, else a new one), and the id the gateway's own answers carry: the same, but a new
    one where the client's is over Azure's bound (``too_long``, from ``_overlong_id``): passed
    on, the server answers its own 431, as if reached directly, and an answer of the gateway's
    (the server gone) never echoes the over-long id."""
    request_id = headers.get(REQUEST_ID) or new_request_id()
    forwarded = {k: v for k, v in headers.items()
                 if k not in _NOT_FORWARDED and k != REQUEST_ID}
    forwarded[REQUEST_ID] = request_id
    if too_long is not None:
        request_id = new_request_id()
    return forwarded, request_id


class Gateway:
    def __init__(self, config_path: str):
        self.config_path = config_path
        self.config: Optional[GatewayConfig] = None
        self.keys: Optional[Keys] = None
        self.backends: Dict[str, Backend] = {}
        self.instances: Dict[str, Instance] = {}
        self.mirrors: Dict[str, MirrorReport] = {}
        self.mirror_tasks: Set[asyncio.Task] = set()
        self.batcher = batching.Batcher(self._forward)
        # the instances' own ports: what each passes through to, where it listens, and the
        # ports another program holds (by the deployment they belong to)
        self.direct: Dict[int, Backend] = {}
        self.sites: Dict[int, asyncio.AbstractServer] = {}
        self.unbound: Dict[int, str] = {}
        self.passes_through = False  # serve and run-local have no instance ports of their own
        # connections' tasks answering requests read whole, on any port
        self.answering: Set[asyncio.Task] = set()
        self.counts: Optional[metrics.GatewayMetrics] = None  # set by serve
        self.pages_address = ""  # the internal app's socket (the page and /metrics)
        self.listening = asyncio.Lock()  # one reload's sites at a time

    # --- configuration -----------------------------------------------------------------------

    async def reload(self) -> List[Instance]:
        """Read the config file and swap the routing table in one step (no await between the
        reads and the swap: a request sees the old table or the new one, never a mix). Returns
        the instances no longer routed to. A deployment that stays keeps its Backend object:
        the requests in flight there count down on it."""
        config = GatewayConfig.read(self.config_path)
        keys = Keys.read(config.keys_file) if config.auth_mode == "key" else None
        instances = {}
        backends = {}
        direct = {}
        for name, route in config.deployments.items():
            members = []
            for index, address in enumerate(route.upstreams):
                instance = self.instances.get(address) or instances.get(address) or \
                    Instance(address)
                if config.mode != TRANSPARENT:  # one server a command watches: no restarts
                    instance.watch(name, index, route, config.store_home)
                instances[address] = instance
                members.append(instance)
            for port, instance in zip(route.ports, members):
                direct[port] = Backend(name, route, [instance])
            backend = self.backends.get(name)
            if backend is None:
                backend = Backend(name, route, members)
            else:
                backend.route, backend.instances = route, members
            backends[name] = backend
        retired = [i for a, i in self.instances.items() if a not in instances]
        for instance in retired:
            instance.retire()
        self.config, self.keys, self.backends, self.instances = config, keys, backends, instances
        self.direct = direct
        for name in config.mirror_traffic:
            self.mirrors.setdefault(name, MirrorReport())
        log.info("routing table loaded: %d deployment(s), traffic %s, mirror %s",
                 len(backends), config.traffic, config.mirror_traffic)
        return retired

    async def listen(self) -> None:
        """Listen on every instance's port of the routing table, and on no other: a port
        dropped (its deployment deleted, an instance removed) is released at once, while the
        requests already read there finish. A port another program holds is left in
        ``unbound`` and tried again at the next reload."""
        if not self.passes_through:
            return
        async with self.listening:
            await self._listen()

    async def _listen(self) -> None:
        for port in [p for p in self.sites if p not in self.direct]:
            self.sites.pop(port).close()
            log.info("stopped listening on port %d", port)
        self.unbound = {}
        for port, backend in self.direct.items():
            if port in self.sites:
                continue
            try:
                site = await frontend.serve_port(
                    functools.partial(self.pass_through, port), HOST, port,
                    lambda: self.config.max_request_bytes, self.answering,
                    keep_alive=lambda: False)
            except OSError as exc:
                self.unbound[port] = backend.name
                log.error("%s: port %d is taken by another program (%s): it is not served "
                          "until a reload finds it free", backend.name, port,
                          type(exc).__name__)
                continue
            self.sites[port] = site
            log.info("%s: listening on port %d", backend.name, port)

    # --- requests ----------------------------------------------------------------------------

    def authorized(self, headers: Mapping[str, str]) -> bool:
        """Whether a request with these headers (names lowercase, or a case-insensitive
        mapping) may pass the endpoint's auth."""
        return authorized(self.config, self.keys, headers.get("authorization"))

    def refusal(self, request: web.Request) -> Optional[web.Response]:
        """The 401 a request of the internal app (the page's data, /metrics) gets without a
        key of the endpoint, or None when it may pass: the same rule as scoring."""
        if self.authorized(request.headers):
            return None
        return pages.answer(401, MISSING_KEY)

    async def pass_through(self, port: int, request: frontend.Request) -> frontend.Answer:
        """A request read whole on an instance's own port: the instance's answer as it gave it,
        with the request id it was sent (the client's, else a new one); the gateway's own 503
        or 502 where there is none."""
        backend = self.direct.get(port)
        if backend is None or not backend.instances:
            return frontend.own_answer(503, NO_INSTANCE)
        forwarded, request_id = _forwarded(request.headers, _overlong_id(request.headers))
        status, answer_headers, answer = await self._forward(
            backend, request.method, request.target, forwarded, request.body, None)
        if status is None:
            return frontend.own_answer(502, NO_ANSWER, (REQUEST_ID, request_id))
        # this port closes after the answer (its keep_alive), as a sync worker's own port would
        return status, _with_id(answer_headers, request_id), answer

    async def endpoint(self, request: frontend.Request) -> frontend.Answer:
        """A request on the endpoint's port: the page and /metrics are the gateway's own
        (answered by its internal app), anything else is routed (``route``), then counted and,
        in endpoint mode, given its access line: the request id answered with, the deployment
        chosen, the status, the latency, and the deployment's own status behind a 424. An
        answer of the gateway's before a deployment is chosen (401, a 404 for an unknown
        deployment) has "-" for what it lacks."""
        transparent = self.config.mode == TRANSPARENT
        if not transparent and request.method in ("GET", "HEAD") and \
                _is_own_page(request.target.partition("?")[0]):
            return await self._own_page(request)
        started = time.perf_counter()
        routed = await self.route(request)
        self._record(routed, time.perf_counter() - started)
        return routed.status, routed.headers, routed.body

    def refused(self, status: int) -> None:
        """A request the endpoint's port refused before it was read whole (400, 413, 431)."""
        self._record(_Routed(status, [], b""), 0.0)

    def _record(self, routed: _Routed, latency_s: float) -> None:
        self.counts.observe(routed.deployment, routed.answered, routed.status, latency_s)
        if self.config.mode != TRANSPARENT:
            upstream_status = upstream.header(routed.headers, MODEL_ERROR_STATUS)
            _access_line("access request_id=%s deployment=%s status=%d latency_ms=%.1f%s" % (
                logfile.token(upstream.header(routed.headers, REQUEST_ID) or "-"),
                routed.deployment or "-", routed.status, latency_s * 1000.0,
                "" if upstream_status is None else " upstream_status=" + upstream_status))

    async def route(self, request: frontend.Request) -> _Routed:
        """The answer to a request on the endpoint's port (transparent where the gateway is
        ``serve``'s or ``run-local``'s: one server behind it, no key, no rewriting)."""
        config = self.config
        transparent = config.mode == TRANSPARENT
        headers = request.headers
        if not self.authorized(headers):
            return _Routed(*frontend.own_answer(401, MISSING_KEY))
        named = headers.get(DEPLOYMENT_HEADER)
        if transparent:
            backend = next(iter(self.backends.values()), None)
        elif named:
            backend = self.backends.get(named)
            if backend is None:
                return _Routed(*frontend.own_answer(
                    404, "The deployment named in the {} header does not exist at this "
                         "endpoint.".format(DEPLOYMENT_HEADER)))
        else:
            chosen = pick_deployment(config.traffic)
            backend = self.backends.get(chosen) if chosen else None
            if backend is None:
                return _Routed(*frontend.own_answer(404, NO_POSITIVE_WEIGHT))
        if backend is None or not backend.instances:
            return _Routed(*frontend.own_answer(503, NO_INSTANCE))
        name = backend.name
        if not transparent and backend.in_flight >= backend.max_in_flight:
            return _Routed(*frontend.own_answer(
                429, "Too many requests in flight for this deployment: raise request_settings."
                     "max_concurrent_requests_per_instance or instance_count."), name)
        too_long = _overlong_id(headers)
        if too_long is not None and not transparent:
            # Azure's server's rule, at the point its server would apply it (after the router's
            # own answers), but answered here: then no answer of either hop echoes such an id
            return _Routed(*frontend.own_answer(431, too_long, (REQUEST_ID, new_request_id())),
                           name)
        forwarded, request_id = _forwarded(headers, too_long)
        live = None
        if not transparent and not named and config.mirror_traffic:
            live = self._mirror(request, forwarded, request_id)
        started = time.perf_counter()
        status, answer_headers, answer = None, "unreachable", b""
        backend.in_flight += 1
        try:
            # passed through untouched where transparent (serve's and run-local's port)
            if not transparent and self.batcher.takes(backend, request.method, request.target):
                call = self.batcher.forward(backend, request.target, forwarded, request.body)
            else:
                call = self._forward(backend, request.method, request.target, forwarded,
                                     request.body,
                                     None if transparent else backend.route.request_timeout_ms)
            status, answer_headers, answer = await call
        finally:
            backend.in_flight -= 1
            if live is not None:  # always, or the copies would wait for it forever
                live.set_result((status, answer, (time.perf_counter() - started) * 1000))
        if status is None:  # no answer: the reason is in answer_headers' place
            return _Routed(*self._no_answer(answer_headers, backend, request_id, transparent),
                           name)
        if transparent:
            out = list(answer_headers)  # the server's answer as it gave it
        else:
            out = [(k, v) for k, v in answer_headers if k.lower() not in _REPLACED]
            out.append((DEPLOYMENT_HEADER, name))
            if status != 200:
                # Azure's router wraps a deployment's non-200 answer, body and all
                out.append((MODEL_ERROR_STATUS, str(status)))
                out.append(("ms-azureml-model-error-reason", "model_error"))
                status = 424
        return _Routed(status, _with_id(out, request_id), answer, name, answered=True)

    async def _own_page(self, request: frontend.Request) -> frontend.Answer:
        """The page's and /metrics' answer, from the gateway's internal app (aiohttp, on a
        Unix socket of its own): those routes are few and rarely asked, and keeping them on
        aiohttp leaves the scoring path free of it."""
        headers = {k: v for k, v in request.headers.items()
                   if k == "authorization" or k not in _NOT_FORWARDED}
        try:
            status, answer_headers, answer = await upstream.exchange(
                self.pages_address, request.method, request.target, headers, request.body,
                end_stream=False)
        except (ConnectionError, OSError, ValueError) as exc:
            log.error("the gateway's own page did not answer (%s)", type(exc).__name__)
            return frontend.own_answer(502, "The gateway's own page did not answer.")
        return status, [(k, v) for k, v in answer_headers if k.lower() != "connection"], answer

    async def _forward(self, backend: Backend, method: str, path: str, headers: Dict[str, str],
                       body: bytes, timeout_ms: Optional[int]
                       ) -> Tuple[Optional[int], Any, bytes]:
        """(status, headers, body) of the instance's answer, or (None, reason, b"") with reason
        "timeout" or "unreachable". An instance that refuses the connection (it died, or is
        restarting) never saw the request: the next instance gets it."""
        tried: Set[Instance] = set()
        while True:
            instance = backend.least_busy(tried)
            instance.outstanding += 1
            try:
                return await instance.pool.exchange(
                    method, path, headers, body,
                    timeout_s=None if timeout_ms is None else timeout_ms / 1000.0)
            except upstream.TimedOut:
                return None, "timeout", b""
            except upstream.Unreachable:
                instance.down_until = time.monotonic() + DOWN_S
                tried.add(instance)
                log.warning("%s: instance %s refused the connection", backend.name,
                            instance.address)
                if len(tried) == len(backend.instances):
                    return None, "unreachable", b""
            except (ConnectionError, OSError, ValueError) as exc:
                log.warning("%s: instance %s did not answer (%s)", backend.name,
                            instance.address, type(exc).__name__)
                return None, "unreachable", b""
            finally:
                instance.outstanding -= 1

    def _no_answer(self, reason: str, backend: Backend, request_id: str,
                   transparent: bool) -> frontend.Answer:
        headers = [(REQUEST_ID, request_id)]
        if not transparent:
            headers.append((DEPLOYMENT_HEADER, backend.name))
        if reason == "timeout":
            return frontend.own_answer(
                408, "Request timeout after {} ms (request_settings.request_timeout_ms).".format(
                    backend.route.request_timeout_ms), *headers)
        return frontend.own_answer(502, NO_ANSWER, *headers)

    # --- mirroring ---------------------------------------------------------------------------

    def _mirror(self, request: frontend.Request, headers: Dict[str, str], request_id: str
                ) -> Optional[asyncio.Future]:
        """Send copies by the mirror shares; return the future the live answer is put in (for
        the comparison), or None when nothing was copied."""
        live: Optional[asyncio.Future] = None
        for name, share in self.config.mirror_traffic.items():
            backend = self.backends.get(name)
            if backend is None or not backend.instances or random.random() * 100 >= share:
                continue
            report = self.mirrors.setdefault(name, MirrorReport())
            if len(self.mirror_tasks) >= MIRROR_QUEUE:
                report.dropped += 1
                continue
            live = live or asyncio.get_running_loop().create_future()
            report.mirrored += 1
            task = asyncio.ensure_future(self._copy(
                backend, report, request.method, request.target, dict(headers), request.body,
                request_id, live))
            self.mirror_tasks.add(task)
            task.add_done_callback(self.mirror_tasks.discard)
        return live

    async def _copy(self, backend: Backend, report: MirrorReport, method: str, path: str,
                    headers: Dict[str, str], body: bytes, request_id: str,
                    live: asyncio.Future) -> None:
        started = time.perf_counter()
        backend.in_flight += 1
        try:
            status, _, answer = await self._forward(backend, method, path, headers, body,
                                                    backend.route.request_timeout_ms)
        finally:
            backend.in_flight -= 1
        mirror_ms = (time.perf_counter() - started) * 1000
        live_status, live_answer, live_ms = await live
        report.record(request_id, live_status or 0, _decoded(live_answer), live_ms,
                      status, _decoded(answer) if status == 200 else None, mirror_ms)

    # --- the control plane's socket ----------------------------------------------------------

    async def admin_reload(self, request: web.Request) -> web.Response:
        """Answered once the new table is in force and the instances it dropped have answered
        every request sent to them: the control plane stops an instance only then, because a
        stopping server refuses the connections still waiting in its listen queue."""
        try:
            retired = await self.reload()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("routing table not reloaded: %s", type(exc).__name__)
            return _json_answer(500, "The gateway config could not be read; the previous "
                                     "routing table stays in force.")
        await self.listen()
        deadline = time.monotonic() + DRAIN_LIMIT_S
        # a request still in a batch has not picked its instance: it may pick a dropped one
        while (any(i.outstanding for i in retired) or self.batcher.holds(retired)) and \
                time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return web.json_response({"reloaded": True,
                                  "undrained": sum(i.outstanding for i in retired),
                                  "unbound": sorted(self.unbound)})

    async def admin_mirror(self, request: web.Request) -> web.Response:
        try:
            rtol = float(request.query.get("rtol", DEFAULT_RTOL))
        except ValueError:
            return _json_answer(400, "rtol must be a number.")
        return web.json_response({name: report.summary(rtol)
                                  for name, report in sorted(self.mirrors.items())})

    async def admin_health(self, request: web.Request) -> web.Response:
        """Up, with the ports it could not bind and the instances answering requests it sent
        them (``busy``): the control plane's own health check of an instance takes a timeout
        there for busy, as the probes do, not for hung."""
        return web.json_response({"pid": os.getpid(), "endpoint": self.config.endpoint,
                                  "unbound": sorted(self.unbound),
                                  "busy": sorted(a for a, i in self.instances.items()
                                                 if i.outstanding)})


def _decoded(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body


async def serve(config_path: str) -> None:
    gateway = Gateway(config_path)
    await gateway.reload()
    config = gateway.config
    gateway.counts = counts = metrics.GatewayMetrics(gateway)
    gateway.batcher.metrics = counts
    admin = web.Application()
    admin.router.add_post("/reload", gateway.admin_reload)
    admin.router.add_get("/mirror", gateway.admin_mirror)
    admin.router.add_get("/health", gateway.admin_health)
    runners = [web.AppRunner(admin, access_log=None, handle_signals=False)]
    # bound by their names in their folder: the full path may exceed a Unix socket address's
    # 107 bytes (the control plane connects the same way, through the folder)
    os.chdir(os.path.dirname(config.admin_socket))
    sockets = [os.path.basename(config.admin_socket)]
    if config.mode != TRANSPARENT:  # serve and run-local pass every route through
        pages = web.Application()
        ui.add_routes(pages, gateway)
        pages.router.add_get(metrics.PATH, counts.page)
        runners.append(web.AppRunner(pages, access_log=None, handle_signals=False))
        sockets.append(PAGES_SOCKET)
        gateway.pages_address = "unix:" + os.path.join(os.getcwd(), PAGES_SOCKET)
    # once set, a connection of the endpoint's port closes after the answer it is writing
    stopping = asyncio.Event()
    # a body is forwarded as the client encoded it, Content-Encoding and all: the scoring server
    # refuses an encoded body as Azure's does (decoded here, it would pass locally and fail
    # there), and the gateway never inflates a compressed body
    # serve's and run-local's port (transparent) closes after every answer, as the sync
    # workers' own port would: its clients see the server's connection handling
    transparent = config.mode == TRANSPARENT
    front = await frontend.serve_port(gateway.endpoint, config.host, config.port,
                                      lambda: gateway.config.max_request_bytes,
                                      gateway.answering,
                                      keep_alive=lambda: not (transparent or stopping.is_set()),
                                      refused=gateway.refused)
    # the instances' own ports: each request passes through as it came, and the instance
    # behind writes its line
    gateway.passes_through = not transparent
    await gateway.listen()
    # the control plane's socket last: the gateway is up when that answers
    for runner, name in reversed(list(zip(runners, sockets))):
        await runner.setup()
        Path(name).unlink(missing_ok=True)
        await web.UnixSite(runner, name).start()
        os.chmod(name, 0o600)
    log.info("gateway of endpoint %s listening on %s:%d", config.endpoint, config.host,
             config.port)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("stopping: finishing the requests in flight")
    front.close()  # every port stops listening at once, and its requests in flight finish
    for site in gateway.sites.values():
        site.close()
    await _finished(gateway.answering, SHUTDOWN_S)
    for runner in runners:
        await runner.cleanup()


async def _finished(tasks: Set[asyncio.Task], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while tasks and time.monotonic() < deadline:
        await asyncio.wait(list(tasks), timeout=deadline - time.monotonic())


#: a line of the gateway's log; the pid is written in once (the gateway never forks), so that
#: logging does not look it up for every record
_LINE = "%(asctime)s [gateway {}] %(levelname)s %(message)s".format(os.getpid())


def _access_line(message: str) -> None:
    """A request's access line, in the format of the log's other lines (its time as logging
    writes it) but not through logging: its record, filters, handler lock and flush, one set a
    request, were 13 % of the gateway's CPU per scoring request (py-spy, 1 row, 8 clients)."""
    now = time.time()
    access.emit(_LINE % {
        "asctime": "%s,%03d" % (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)),
                                (now - int(now)) * 1000),
        "levelname": "INFO", "message": message} + "\n")


def _configure_logging() -> None:
    """The gateway's other lines, through logging, without what it would look up for each
    record but none of them shows (the caller's frame, the thread's, process's and task's
    names), as the logging HOWTO's "Optimization" section has it."""
    logging._srcfile = None  # the HOWTO's documented switch: no caller's frame looked up
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # Python 3.12+: the current task's name (an asyncio lookup)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=_LINE)


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    _configure_logging()
    logfile.keep_rotated()  # its own log, when started detached
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(argv[0]))
    else:
        uvloop.run(serve(argv[0]))


if __name__ == "__main__":
    main()
