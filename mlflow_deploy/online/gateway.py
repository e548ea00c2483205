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
/health`` says it is up. In transparent mode (``serve``, ``run-local``) there is one deployment,
no key, no 424 wrapping, no timeout and no probes of its own: every route and status passes
through, and the connection closes when the server closes it.

aiohttp, on uvloop where it is installed: one event loop keeps thousands of slow clients for the
cost of their buffers, which a thread per connection would not.
"""

import asyncio
import json
import logging
import os
import random
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

from multidict import CIMultiDict
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from mlflow_deploy.online import batching, metrics, passthrough, ui, upstream
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
    Route,
    authorized,
    pick_deployment,
)
from mlflow_deploy.online.supervisor import HOST
from mlflow_deploy.scoring import logfile
from mlflow_deploy.scoring.errors import MAX_REQUEST_ID, MS_IDS_TOO_LONG, REQUEST_ID_TOO_LONG

log = logging.getLogger("mlflow_deploy.gateway")
_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+

# copies to mirrored deployments waiting for an answer, at most: past this a copy is dropped (and
# counted), so a slow mirror never grows the gateway's memory
MIRROR_QUEUE = 64
REQUEST_ID = "x-request-id"
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
_NOT_RETURNED = frozenset({
    "connection", "keep-alive", "transfer-encoding", "content-length", "date", "server",
})


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


def _forwarded(headers: Mapping[str, str], too_long: Optional[str]
               ) -> Tuple[Dict[str, str], str]:
    """The headers an instance is sent (hop-by-hop ones and the key dropped, the request id the
    client's, else a new one), and the id the gateway's own answers carry: the same, but a new
    one where the client's is over Azure's bound (``too_long``, from ``_overlong_id``): passed
    on, the server answers its own 431, as if reached directly, and an answer of the gateway's
    (the server gone) never echoes the over-long id."""
    request_id = headers.get(REQUEST_ID) or str(uuid.uuid4())
    forwarded = {k: v for k, v in headers.items()
                 if k.lower() not in _NOT_FORWARDED and k.lower() != REQUEST_ID}
    forwarded[REQUEST_ID] = request_id
    if too_long is not None:
        request_id = str(uuid.uuid4())
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
        self.passing: Set[asyncio.Task] = set()  # requests read whole there, not answered yet
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
            instance.unwatch()
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
                site = await passthrough.serve_port(
                    self.pass_through, HOST, port, lambda: self.config.max_request_bytes,
                    self.passing)
            except OSError as exc:
                self.unbound[port] = backend.name
                log.error("%s: port %d is taken by another program (%s): it is not served "
                          "until a reload finds it free", backend.name, port,
                          type(exc).__name__)
                continue
            self.sites[port] = site
            log.info("%s: listening on port %d", backend.name, port)

    # --- requests ----------------------------------------------------------------------------

    def unauthorized(self, request: web.Request) -> Optional[web.Response]:
        """The 401 for a request without a key of the endpoint, where it needs one."""
        if authorized(self.config, self.keys, request.headers.get("Authorization")):
            return None
        return _json_answer(401, MISSING_KEY)

    async def pass_through(self, port: int, method: str, target: str, headers: Dict[str, str],
                           body: bytes) -> Tuple[int, upstream.Headers, bytes]:
        """A request read whole on an instance's own port (``passthrough.py``): the instance's
        answer as it gave it, with the request id it was sent (the client's, else a new one);
        the gateway's own 503 or 502 where there is none."""
        backend = self.direct.get(port)
        if backend is None or not backend.instances:
            return passthrough.own_answer(503, NO_INSTANCE)
        forwarded, request_id = _forwarded(headers, _overlong_id(headers))
        status, answer_headers, answer = await self._forward(backend, method, target, forwarded,
                                                             body, None)
        if status is None:
            return passthrough.own_answer(502, NO_ANSWER, (REQUEST_ID, request_id))
        if not any(k.lower() == REQUEST_ID for k, _ in answer_headers):
            answer_headers = answer_headers + [(REQUEST_ID, request_id)]
        return status, answer_headers, answer

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """A request on the endpoint's port (transparent where the gateway is ``serve``'s or
        ``run-local``'s: one server behind it, no key, no rewriting)."""
        config = self.config
        transparent = config.mode == TRANSPARENT
        refused = self.unauthorized(request)
        if refused is not None:
            return refused
        length = request.content_length
        if length is not None and length > config.max_request_bytes:
            return _json_answer(413, passthrough.BODY_TOO_LARGE.format(config.max_request_bytes))
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json_answer(413, passthrough.BODY_TOO_LARGE.format(config.max_request_bytes))
        except ConnectionError:  # the client left before its body was complete: nobody to answer
            return _json_answer(400, "The connection closed before the request body was "
                                     "complete.")
        named = request.headers.get(DEPLOYMENT_HEADER)
        if transparent:
            backend = next(iter(self.backends.values()), None)
        elif named:
            backend = self.backends.get(named)
            if backend is None:
                return _json_answer(404, "The deployment named in the {} header does not exist "
                                         "at this endpoint.".format(DEPLOYMENT_HEADER))
        else:
            chosen = pick_deployment(config.traffic)
            backend = self.backends.get(chosen) if chosen else None
            if backend is None:
                return _json_answer(404, NO_POSITIVE_WEIGHT)
        if backend is None or not backend.instances:
            return _json_answer(503, NO_INSTANCE)
        request[metrics.DEPLOYMENT] = backend.name
        if not transparent and backend.in_flight >= backend.max_in_flight:
            return _json_answer(429, "Too many requests in flight for this deployment: raise "
                                     "request_settings.max_concurrent_requests_per_instance "
                                     "or instance_count.")
        too_long = _overlong_id(request.headers)
        if too_long is not None and not transparent:
            # Azure's server's rule, at the point its server would apply it (after the router's
            # own answers), but answered here: then no answer of either hop echoes such an id
            return _json_answer(431, too_long, **{REQUEST_ID: str(uuid.uuid4())})
        headers, request_id = _forwarded(request.headers, too_long)
        live = None
        if not transparent and not named and config.mirror_traffic:
            live = self._mirror(request, headers, body, request_id)
        started = time.perf_counter()
        status, answer_headers, answer = None, "unreachable", b""
        backend.in_flight += 1
        try:
            # passed through untouched where transparent (serve's and run-local's port)
            if not transparent and self.batcher.takes(backend, request.method, request.path_qs):
                call = self.batcher.forward(backend, request.path_qs, headers, body)
            else:
                call = self._forward(backend, request.method, request.path_qs, headers, body,
                                     None if transparent else backend.route.request_timeout_ms)
            status, answer_headers, answer = await call
        finally:
            backend.in_flight -= 1
            if live is not None:  # always, or the copies would wait for it forever
                live.set_result((status, answer, (time.perf_counter() - started) * 1000))
        if status is None:  # no answer: the reason is in answer_headers' place
            return self._no_answer(answer_headers, backend, request_id, transparent)
        request[metrics.ANSWERED] = True
        out = CIMultiDict((k, v) for k, v in answer_headers if k.lower() not in _NOT_RETURNED)
        out.setdefault(REQUEST_ID, request_id)
        if not transparent:
            out[DEPLOYMENT_HEADER] = backend.name
            if status != 200:
                # Azure's router wraps a deployment's non-200 answer, body and all
                out[MODEL_ERROR_STATUS] = str(status)
                out["ms-azureml-model-error-reason"] = "model_error"
                status = 424
        if request.method == "HEAD":  # the length of the body a GET gets (aiohttp's would be 0)
            out.update((k, v) for k, v in answer_headers if k.lower() == "content-length")
        response = web.Response(status=status, body=answer, headers=out)
        if transparent and any(k.lower() == "connection" and v.lower() == "close"
                               for k, v in answer_headers):
            # the client sees the server's own connection handling, as if it were reached
            # directly: a sync worker closes after each answer
            response.force_close()
        return response

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
                call = upstream.exchange(instance.address, method, path, headers, body)
                if timeout_ms is None:
                    return await call
                if _timeout is None:
                    return await asyncio.wait_for(call, timeout_ms / 1000.0)
                async with _timeout(timeout_ms / 1000.0):  # no task per request, as wait_for's
                    return await call
            except asyncio.TimeoutError:
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
                   transparent: bool) -> web.Response:
        headers = {REQUEST_ID: request_id}
        if not transparent:
            headers[DEPLOYMENT_HEADER] = backend.name
        if reason == "timeout":
            return _json_answer(408, "Request timeout after {} ms (request_settings."
                                     "request_timeout_ms).".format(
                                         backend.route.request_timeout_ms), **headers)
        return _json_answer(502, NO_ANSWER, **headers)

    # --- mirroring ---------------------------------------------------------------------------

    def _mirror(self, request: web.Request, headers: Dict[str, str], body: bytes,
                request_id: str) -> Optional[asyncio.Future]:
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
            task = asyncio.ensure_future(self._copy(backend, report, request.method,
                                                    request.path_qs, dict(headers), body,
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
        return web.json_response({"pid": os.getpid(), "endpoint": self.config.endpoint,
                                  "unbound": sorted(self.unbound)})


class AccessLog(AbstractAccessLogger):
    """One line per request, written by aiohttp once the answer is sent: the request id
    answered with, the deployment chosen, the status, the latency, and the deployment's own
    status behind a 424. An answer of the gateway's before a deployment is chosen (401, 413,
    a 404 for an unknown deployment, 429) has "-" for what it lacks."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        headers = response.headers
        self.logger.info(
            "access request_id=%s deployment=%s status=%d latency_ms=%.1f%s",
            logfile.token(headers.get(REQUEST_ID, "-")), headers.get(DEPLOYMENT_HEADER, "-"),
            response.status, time * 1000.0,
            " upstream_status=" + headers[MODEL_ERROR_STATUS]
            if MODEL_ERROR_STATUS in headers else "")


def _decoded(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body


async def serve(config_path: str) -> None:
    gateway = Gateway(config_path)
    await gateway.reload()
    config = gateway.config
    counts = metrics.GatewayMetrics(gateway)
    gateway.batcher.metrics = counts
    app = web.Application(client_max_size=config.max_request_bytes,
                          middlewares=[counts.middleware])
    if config.mode != TRANSPARENT:  # serve and run-local pass every route through
        ui.add_routes(app, gateway)
    app.router.add_route("*", "/{tail:.*}", gateway.handle)
    admin = web.Application()
    admin.router.add_post("/reload", gateway.admin_reload)
    admin.router.add_get("/mirror", gateway.admin_mirror)
    admin.router.add_get("/health", gateway.admin_health)
    # a body is forwarded as the client encoded it, Content-Encoding and all: the scoring server
    # refuses an encoded body as Azure's does (decoded here, it would pass locally and fail
    # there), and the gateway never inflates a compressed body
    # in transparent mode the server behind writes the request's line itself
    public_runner = web.AppRunner(
        app, access_log=None if config.mode == TRANSPARENT else log, access_log_class=AccessLog,
        handle_signals=False, auto_decompress=False)
    admin_runner = web.AppRunner(admin, access_log=None, handle_signals=False)
    await public_runner.setup()
    await admin_runner.setup()
    # the instances' own ports: each request passes through as it came, and the instance
    # behind writes its line
    gateway.passes_through = config.mode != TRANSPARENT
    # bound by its name in its folder: the full path may exceed a Unix socket address's 107
    # bytes (the control plane connects the same way, through the folder)
    os.chdir(os.path.dirname(config.admin_socket))
    admin_name = os.path.basename(config.admin_socket)
    Path(admin_name).unlink(missing_ok=True)
    await web.TCPSite(public_runner, config.host, config.port, reuse_address=True).start()
    await gateway.listen()
    await web.UnixSite(admin_runner, admin_name).start()
    os.chmod(admin_name, 0o600)
    log.info("gateway of endpoint %s listening on %s:%d", config.endpoint, config.host,
             config.port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("stopping: finishing the requests in flight")
    for site in gateway.sites.values():  # the instances' ports stop listening at once
        site.close()
    # the endpoint's port stops listening and waits for its handlers in flight, as the
    # instances' ports wait for theirs (aiohttp's own limit for both)
    await asyncio.gather(public_runner.cleanup(), _finished(gateway.passing, SHUTDOWN_S))
    await admin_runner.cleanup()


async def _finished(tasks: Set[asyncio.Task], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while tasks and time.monotonic() < deadline:
        await asyncio.wait(list(tasks), timeout=deadline - time.monotonic())


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s [gateway %(process)d] %(levelname)s %(message)s")
    logfile.keep_rotated()  # its own log, when started detached
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(argv[0]))
    else:
        uvloop.run(serve(argv[0]))


if __name__ == "__main__":
    main()
