"""The endpoint's page: ``GET /ui`` on the endpoint's own URL, as Azure ML studio's endpoint page.

The page (``ui.html``, one self-contained file: its CSS, script and charts inline, nothing fetched
from elsewhere) is public, as any static page; everything it shows comes from routes under the
endpoint's auth, exactly as scoring is: the page asks for the key once and keeps it in its own
memory, so a closed tab forgets it. It scores through the endpoint's own ``/score`` (the answer a
client gets, 424s and all), reads ``/swagger.json`` and ``/metrics`` the same way, and asks the
gateway only for what a client cannot see:

- ``GET /ui/api/endpoint``: each deployment as ``show`` describes it, with its traffic and mirror
  shares as the gateway routes them now and its instances as the gateway sees them;
- ``GET /ui/api/logs?deployment=D&lines=N``: the last lines of the deployment's log;
- ``GET /ui/api/example?deployment=D``: the body the deployment's self-test sends (the model's
  saved input example, else one made from its signature), to pre-fill the Test tab.

The handlers run in the gateway (``gateway.py`` adds them in endpoint mode only: ``serve`` and
``run-local`` pass every route through). The store is only read, in a thread, so a slow disk never
holds the event loop. The example needs mlflow, which the gateway never imports (2 s, 170 MB for
a process that lives as long as the endpoint): a short child process makes it, once per revision.
"""

import asyncio
import json
import os
import sqlite3
import sys
from typing import Any, Dict, Optional, Tuple

from aiohttp import web

from mlflow_deploy import pages
from mlflow_deploy.logs import tail as tail_log
from mlflow_deploy.errors import DeployError
from mlflow_deploy.online import supervisor
from mlflow_deploy.online.deployments import describe
from mlflow_deploy.scoring.config import CONFIG_ENV
from mlflow_deploy.store import Deployment, Store

__all__ = ["add_routes"]

PAGE = "ui.html"
# the child that makes a body imports mlflow (about 2 s); past this the Test tab starts empty
EXAMPLE_TIMEOUT_S = 60.0

_NO_EXAMPLE: Dict[str, Any] = {"body": None, "text": None, "kind": None}
_GATEWAY = web.AppKey("gateway", object)
_EXAMPLES = web.AppKey("examples", dict)


def add_routes(app: web.Application, gateway: Any) -> None:
    """Add the page and its data routes to the endpoint's app, before its catch-all route."""
    app[_GATEWAY] = gateway
    app[_EXAMPLES] = {}
    app.router.add_get("/ui", page)
    app.router.add_get("/ui/api/endpoint", endpoint_state)
    app.router.add_get("/ui/api/logs", logs)
    app.router.add_get("/ui/api/example", example)


async def page(request: web.Request) -> web.Response:
    return pages.page(__package__, PAGE)


def _refused(request: web.Request) -> Optional[web.Response]:
    """The 401 a scoring request without the key gets, or None when the request may pass."""
    return request.app[_GATEWAY].refusal(request)


def _records(store_home: Optional[str], endpoint: str) -> Dict[str, Tuple[Deployment, Dict]]:
    """Each deployment of the endpoint, with what ``show`` says of it (read in a thread)."""
    if store_home is None:
        return {}
    store = Store(store_home)
    return {d.name: (d, describe(d, store)) for d in store.list_deployments(endpoint)}


async def _read_records(config: Any) -> Dict[str, Tuple[Deployment, Dict]]:
    """``_records`` off the event loop; none when the store cannot be read now (locked,
    moved, newer): the routing table still shows."""
    try:
        return await asyncio.get_running_loop().run_in_executor(
            None, _records, config.store_home, config.endpoint)
    except (OSError, sqlite3.Error, DeployError):
        return {}


async def endpoint_state(request: web.Request) -> web.Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    gateway = request.app[_GATEWAY]
    config = gateway.config
    records = await _read_records(config)
    deployments = []
    for name in sorted(set(records) | set(gateway.backends)):
        record = dict(records[name][1]) if name in records else {"name": name, "state": "Unknown"}
        backend = gateway.backends.get(name)
        record["traffic"] = config.traffic.get(name, 0)
        record["mirror_traffic"] = config.mirror_traffic.get(name, 0)
        record["routed"] = backend is not None
        if backend is not None:
            record["in_flight"] = backend.in_flight
            record["ready_instances"] = backend.ready_instances
            record["routed_instances"] = len(backend.instances)
        deployments.append(record)
    return web.json_response({
        "endpoint": config.endpoint,
        "auth_mode": config.auth_mode,
        "traffic": dict(config.traffic),
        "mirror_traffic": dict(config.mirror_traffic),
        "deployments": deployments,
    })


async def _deployment(request: web.Request
                      ) -> Tuple[str, Optional[Deployment], Optional[web.Response]]:
    """The deployment the query names with its record (None where the store cannot say), or
    the answer when the request lacks the key or names none of this endpoint's. One the
    gateway does not route (it failed to start) is still the endpoint's: its log says why."""
    name = request.query.get("deployment", "")
    refused = _refused(request)
    if refused is not None:
        return name, None, refused
    gateway = request.app[_GATEWAY]
    found = (await _read_records(gateway.config)).get(name)
    if found is None and name not in gateway.backends:
        return name, None, pages.answer(404, "This endpoint has no deployment of the name given in "
                                        "'deployment'.")
    return name, found[0] if found else None, None


async def logs(request: web.Request) -> web.Response:
    name, deployment, missing = await _deployment(request)
    if missing is not None:
        return missing
    count = pages.asked_lines(request)
    if isinstance(count, web.Response):
        return count
    # its old copies too, when a rotation just emptied it; a log that cannot be read has none
    lines = (await asyncio.get_running_loop().run_in_executor(
        None, tail_log, deployment.log_path, count))[0] if deployment else []
    return web.json_response({"deployment": name, "lines": lines})


async def example(request: web.Request) -> web.Response:
    name, deployment, missing = await _deployment(request)
    if missing is not None:
        return missing
    if deployment is None:
        return web.json_response({"deployment": name, **_NO_EXAMPLE})
    cache = request.app[_EXAMPLES]
    key = (name, deployment.revision)
    if key not in cache:
        cache[key] = asyncio.ensure_future(_made_example(deployment))
    made = await asyncio.shield(cache[key])
    return web.json_response({"deployment": name, **made})


async def _made_example(deployment: Deployment) -> Dict[str, Any]:
    """The self-test body of the deployment's current revision, made in a child process."""
    none = dict(_NO_EXAMPLE)
    try:
        with open(deployment.server_config_path, encoding="utf-8") as f:
            server = json.load(f)
    except (OSError, ValueError):
        return none
    if server.get("scoring_script"):  # a user's script: its input is its own business
        return none
    # not marked as the gateway (the variable tells a gateway's process from a reused pid), and
    # gone with it
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mlflow_deploy.online.ui", server["model_dir"], env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        preexec_fn=supervisor.terminate_with_parent)
    try:
        out, _ = await asyncio.wait_for(child.communicate(), EXAMPLE_TIMEOUT_S)
    except asyncio.TimeoutError:
        child.kill()
        await child.wait()
        return none
    try:
        return json.loads(out) if child.returncode == 0 else none
    except ValueError:
        return none


def _print_example(model_dir: str) -> None:
    from mlflow_deploy.scoring.selftest import self_test_for

    made = self_test_for(model_dir)
    if made is None:
        print(json.dumps(_NO_EXAMPLE))
        return
    body = json.loads(made.body)
    # the text too, as Python writes it: the page shows it as is, where JavaScript's own
    # serializer would write a double 1.0 as 1
    print(json.dumps({"body": body, "text": json.dumps(body, indent=2), "kind": made.kind}))


if __name__ == "__main__":
    _print_example(sys.argv[1])
