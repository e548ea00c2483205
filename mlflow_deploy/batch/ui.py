"""The batch endpoints' page, as Azure ML studio shows a batch endpoint's jobs: served in the
foreground by ``mlflow-deploy batch-endpoint ui`` until Ctrl-C.

A batch endpoint has no process of its own and no keys here, so the command is the server, on
127.0.0.1, and its auth is Jupyter's: a random token made at start and printed in the page's URL
(``?token=``). The page (``jobs.html``, one self-contained file of package data) is public, as
any static page; it reads the token from its URL once, keeps it in its memory only, and sends it
(``Authorization: Bearer``) to the data routes, which answer a missing or wrong one with a 401
and nothing else:

- ``GET /api/jobs``: the batch endpoints (or the one named at start), their deployments and
  their jobs, newest first, each as ``job show`` describes it, with its progress (JobProgress)
  and its failed mini-batches and files with their reasons;
- ``GET /api/log?job=J&lines=N``: the last lines of the job's log;
- ``POST /api/cancel?job=J``, ``POST /api/resume?job=J``: ``job cancel`` and ``job resume``.

The store is read (and a dead job's process recorded, as ``job show`` does) in a thread, a fresh
``Store`` each time, so a slow disk never holds the event loop.
"""
import asyncio
import hmac
import secrets
import signal
import socket
import sqlite3
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from aiohttp import web

from mlflow_deploy import pages
from mlflow_deploy.logs import tail as tail_log
from mlflow_deploy.batch import deployments, endpoints, jobs
from mlflow_deploy.errors import DeployError, InvalidParameter, NotFound
from mlflow_deploy.store import JOBS, Job, Store

__all__ = ["serve", "make_app", "REFRESH_S"]

PAGE = "jobs.html"
HOST = "127.0.0.1"
REFRESH_S = 2  # how often the page asks again (it reads this from /api/jobs)
#: the newest jobs of each endpoint the page shows (the others: `job list`)
JOBS_SHOWN = 50
#: failed mini-batches shown of one job (the job log has every one)
FAILURES_SHOWN = 100
MISSING_TOKEN = ("Open the page at the URL `batch-endpoint ui` printed: its token is missing "
                 "or wrong.")
_NO_JOB = "No job of the endpoints shown has this name (job)."

_TOKEN = web.AppKey("token", str)
_HOME = web.AppKey("home", str)
_ENDPOINT = web.AppKey("endpoint", object)
_FAILURES = web.AppKey("failures", dict)


def make_app(token: str, home: str, endpoint: Optional[str]) -> web.Application:
    """The page and its data routes over the store at ``home`` (``endpoint``: only its jobs)."""
    app = web.Application()
    app[_TOKEN], app[_HOME], app[_ENDPOINT], app[_FAILURES] = token, home, endpoint, {}
    app.router.add_get("/", page)
    app.router.add_get("/api/jobs", jobs_state)
    app.router.add_get("/api/log", log)
    app.router.add_post("/api/cancel", cancel)
    app.router.add_post("/api/resume", resume)
    return app


async def page(request: web.Request) -> web.Response:
    return pages.page(__package__, PAGE)


def _refused(request: web.Request) -> Optional[web.Response]:
    """The 401 of a request without the token, or None when it may pass."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                          request.app[_TOKEN].encode()):
        return None
    return pages.answer(401, MISSING_TOKEN)


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


# ---- what the page shows ------------------------------------------------------------------------

def _progress(job: Job, now: float) -> Dict[str, Any]:
    progress = jobs.JobProgress.of(job, now)
    counts = progress.counts
    return {"mini_batches": progress.mini_batches, "ended": progress.ended,
            "mini_batches_done": counts.get("mini_batches_done", 0),
            "mini_batches_failed": counts.get("mini_batches_failed", 0),
            "files": progress.files, "files_done": progress.files_done,
            "files_failed": progress.files_failed, "retries": counts.get("retries", 0),
            "rows": progress.rows, "rows_per_second": round(progress.rate, 3),
            "elapsed": jobs.clock(progress.elapsed) if progress.elapsed else None,
            "eta": progress.eta_text if not progress.over else None}


def _job_view(job: Job, now: float, cache: Dict[str, Tuple[Any, List]]) -> Dict[str, Any]:
    view = jobs.describe_job(job)
    view["progress"] = _progress(job, now)
    # a job's failures change only with its counts: read its done records again only then
    seen = (job.status, tuple(sorted(job.counts.items())))
    cached = cache.get(job.name)
    if cached is None or cached[0] != seen:
        cached = cache[job.name] = (seen, jobs.failures(job, FAILURES_SHOWN))
    view["failures"] = cached[1]
    return view


def _state(home: str, only: Optional[str], cache: Dict[str, Tuple[Any, List]]
           ) -> Dict[str, Any]:
    """The endpoints (``only``, or every one, and those of jobs whose endpoint was deleted),
    their deployments and their newest jobs."""
    store = Store(home)
    now = time.time()
    shown: Dict[str, Dict[str, Any]] = {}
    for described in endpoints.list_batch_endpoints(store):
        if only is None or described["name"] == only:
            shown[described["name"]] = {
                "name": described["name"], "description": described["description"],
                "default_deployment": described["defaults"]["deployment_name"],
                "exists": True, "deployments": [], "jobs": [], "more_jobs": 0}
    for deployment in deployments.list_batch_deployments(store=store):
        if deployment["endpoint_name"] in shown:
            shown[deployment["endpoint_name"]]["deployments"].append(deployment)
    rows = jobs.job_rows(store, only)
    by_endpoint: Dict[str, List[Job]] = {}
    for job in rows:
        by_endpoint.setdefault(job.endpoint, []).append(job)
    for name, owned in by_endpoint.items():
        entry = shown.setdefault(name, {"name": name, "description": None,
                                        "default_deployment": None, "exists": False,
                                        "deployments": [], "jobs": [], "more_jobs": 0})
        newest = owned[::-1][:JOBS_SHOWN]
        entry["jobs"] = [_job_view(job, now, cache) for job in newest]
        entry["more_jobs"] = len(owned) - len(newest)
    # jobs no longer there (a home cleaned up); two pages may ask at once, each in a thread
    for name in set(cache) - {job.name for job in rows}:
        cache.pop(name, None)
    return {"endpoint": only, "refresh_s": REFRESH_S,
            "endpoints": sorted(shown.values(), key=lambda e: (not e["exists"], e["name"]))}


async def jobs_state(request: web.Request) -> web.Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    app = request.app
    try:
        state = await _in_thread(_state, app[_HOME], app[_ENDPOINT], app[_FAILURES])
    except (OSError, sqlite3.Error, DeployError):
        return pages.answer(503, "The store could not be read now; the page asks again.")
    return web.json_response(state)


def _find(home: str, only: Optional[str], name: str) -> Job:
    """The job the query names, if it is one of the endpoints shown."""
    job = Store(home).find(JOBS, name) if name else None
    if job is None or (only is not None and job.endpoint != only):
        raise NotFound(_NO_JOB)
    return job


async def log(request: web.Request) -> web.Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    count = pages.asked_lines(request)
    if isinstance(count, web.Response):
        return count
    name = request.query.get("job", "")
    app = request.app
    try:
        job = await _in_thread(_find, app[_HOME], app[_ENDPOINT], name)
        lines = (await _in_thread(tail_log, job.log_path, count))[0]
    except NotFound as exc:
        return pages.answer(404, exc.message)
    except (OSError, sqlite3.Error):
        return pages.answer(503, "The job's log could not be read.")
    return web.json_response({"job": job.name, "lines": lines})


async def _command(request: web.Request, command: Callable[..., Dict[str, Any]]
                   ) -> web.Response:
    """``job cancel`` or ``job resume`` of the job the query names; their refusal (ended,
    still running) is a 409 with their message."""
    refused = _refused(request)
    if refused is not None:
        return refused
    app = request.app
    home = app[_HOME]

    def run() -> Dict[str, Any]:
        job = _find(home, app[_ENDPOINT], request.query.get("job", ""))
        return command(job.name, Store(home))

    try:
        return web.json_response(await _in_thread(run))
    except NotFound as exc:
        return pages.answer(404, exc.message)
    except DeployError as exc:
        return pages.answer(409, exc.message)
    except (OSError, sqlite3.Error):
        return pages.answer(503, "The store could not be read now.")


async def cancel(request: web.Request) -> web.Response:
    return await _command(request, jobs.cancel_job)


async def resume(request: web.Request) -> web.Response:
    return await _command(request, jobs.resume_job)


# ---- the server ---------------------------------------------------------------------------------

def _bound(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        raise InvalidParameter("The port is in use or cannot be bound.", argument="port") from None
    sock.listen(128)
    return sock


async def _serve(app: web.Application, sock: socket.socket, announce: Callable[[str], None]
                 ) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await web.SockSite(runner, sock).start()
        # only once Ctrl-C is ours: the URL is the sign the page is up
        announce("http://{}:{}/?token={}".format(HOST, sock.getsockname()[1], app[_TOKEN]))
        await stopping.wait()
    finally:
        await runner.cleanup()


def serve(endpoint: Optional[str], port: int, announce: Callable[[str], None],
          store: Optional[Store] = None) -> None:
    """Serve the page of ``endpoint``'s jobs (every batch endpoint's when None) on 127.0.0.1
    (``port`` 0: a free one) until SIGINT or SIGTERM; ``announce`` gets its URL, token and all,
    once it answers."""
    store = store or Store()
    if endpoint is not None and endpoints.find_batch_endpoint(store, endpoint) is None:
        raise NotFound("No batch endpoint with this name.", argument="endpoint")
    app = make_app(secrets.token_urlsafe(32), str(store.home), endpoint)
    sock = _bound(port)
    try:
        asyncio.run(_serve(app, sock, announce))
    finally:
        sock.close()
