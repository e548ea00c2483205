"""Cold start and scale-up of an online deployment: create -> first prediction, and a new instance
added under load -> taking traffic, in one run (target: at most 1 s each).

    make bench-scale                (or: .venv/bin/python bench/scale.py [--runs 3])

The model is the example diabetes model (`models:/diabetes/1`, registered by `make
example-models`; `--model PATH` for a model folder), its environment taken from the cache the
suite and the other benches keep (a first build is not what this measures). Everything runs in a
home and a fork-server folder of its own, removed at the end.

1. Cold start. The entry point timed is our Python API, ``mlflow_deploy.online.create_deployment``
   called in this process: no CLI start-up of any kind is counted (MLflow's takes about 4.7 s
   here; ours 0.2 s, plus mlflow's import in the commands that fetch a model; the CLI calls this
   same function). Two cases: the deployment with an endpoint of its own made with it
   (``create_deployment`` alone, as create_to_200.py times it: the endpoint's gateway starts
   inside the clock), and a new deployment of an endpoint that exists (its gateway runs already;
   ``all_traffic``). From the call until a 1-row POST answers
   200 on the deployment's own URI ("direct") and on the endpoint's (with its key): both are
   polled from the moment the call returns, each by a thread of its own. One warm-up create
   first (it starts the env's fork server, which every later create reuses), then --runs.

2. Scale-up under load. One deployment made through the CLI as a user makes it
   (`online-endpoint create`, `online-deployment create -f deployment.yml --all-traffic`),
   instance_count 1, both probes at the fast local settings (initial delay 0, period 1 s),
   max_concurrent_requests_per_instance = --concurrency (the gateway answers 429 past twice
   that per ready instance, and this load must see none). An aiohttp client in this process keeps
   --concurrency 1-row requests in flight through the endpoint, each with an x-request-id of its
   own. After --warm seconds of load, `mlflow-deploy online-deployment update -f
   deployment.yml --set instance_count=2` runs (the real command, in a subprocess: its start-up
   is in the clock; the CLI's bare start-up is printed apart). A change of instance_count alone
   is no new revision: the running instance is not touched, the added one starts from its
   config (forked from the env's fork server), passes the self-test the create kept, and is
   recorded and routed. (The rows about the env lookup and the existing instance's hand-over
   are for an update that is a new revision, and stay empty here.) Measured from the update's
   start:
   - new instance ready: the deployment's row (what `show` reads) records the second instance,
     which it does only once that instance serves and passed its self-test (polled every 10 ms);
   - first request served by the new instance: the earliest answer, as this client saw it, of
     the requests whose ids the new instance's access log holds (scoring/access.py writes one
     line per request): exact, unlike the access lines' own one-second timestamps;
   - the update command's exit;
   and, to say where the time goes: the env lookup (the command's "reusing env" line, and when
   that line came: before it the command fetches the model again), when the existing instance's
   new revision's config was written (its hand-over starts) and its re-exec'd master wrote its
   ready file, and when the new instance's config was written (its start) and its ready file;
   "new instance's start -> its first request served" is the part that adding an instance
   itself takes. Every answer that is not a 200 (or no answer) from the start of the load to
   its end counts as an error: the target is 0. The load runs --after seconds past the update's
   exit, then stops; the deployment is scaled back to 1 (untimed, no load) before the next run.

Each step is bounded (--step-timeout seconds, --max-requests per run); whatever the bench started
is deleted in a finally. Prints markdown tables and a JSON line per measurement (also written to
bench/out/scale-*.jsonl).
"""
import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from create_to_200 import write_records  # noqa: E402  (bench/ is this script's own folder)

# our CLI from this checkout (what `mlflow-deploy` runs, imported from ROOT first)
CLI = [sys.executable, "-m", "mlflow_deploy.cli"]
COLD_EP, SCALE_EP, SCALE_DEPLOYMENT = "cold-ep", "scale-ep", "scale"
ACCESS = re.compile(r"\[ACCESS\] request_id=(\S+) method=POST route=/score status=(\d+)")
REUSING = re.compile(r"reusing env \S+ in ([0-9.]+) s")


def cli(*args, timeout):
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)
    if done.returncode != 0:
        raise SystemExit("mlflow-deploy {} failed:\n{}".format(" ".join(args), done.stderr))
    return json.loads(done.stdout) if done.stdout.strip() else None


def one_row_body(path: Path) -> bytes:
    """The example payload cut to its first row."""
    payload = json.loads(path.read_text())
    table = payload["input_data"]
    table.update(index=table["index"][:1], data=table["data"][:1])
    return json.dumps(payload).encode()


def summary(values):
    return "{:.2f} ({:.2f}-{:.2f})".format(statistics.median(values), min(values), max(values))


def emit(records, record):
    records.append(record)
    print(json.dumps(record), flush=True)


# --- 1. cold start -------------------------------------------------------------------------------

def first_200(url, body, headers, started, deadline):
    """Seconds from ``started`` until ``url`` answers 200."""
    import requests

    with requests.Session() as session:
        while True:
            try:
                answer = session.post(url, data=body, headers=headers, timeout=10)
                if answer.status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("no 200 from {} within the step's time".format(url))
            time.sleep(0.005)


def cold_start(name, model, body, existing_endpoint, timeout):
    """(direct, endpoint) seconds from the create call to each URI's first 200."""
    from mlflow_deploy.online import create_deployment, delete_endpoint, get_endpoint
    from mlflow_deploy.online.endpoints import get_credentials

    endpoint = COLD_EP if existing_endpoint else name
    json_type = {"Content-Type": "application/json"}
    found = {}
    started = time.monotonic()
    try:
        if existing_endpoint:
            info = create_deployment(name, model, config={"all_traffic": True},
                                     endpoint=endpoint)
        else:
            info = create_deployment(name, model)
        deadline = time.monotonic() + timeout

        def direct():
            found["direct"] = first_200(info["scoring_uri"], body, json_type, started, deadline)

        def through_endpoint():
            # the endpoint's key is the client's to know: looked up inside the clock, a store read
            key = get_credentials(endpoint)["primaryKey"]
            found["endpoint"] = first_200(
                get_endpoint(endpoint)["scoring_uri"], body,
                dict(json_type, Authorization="Bearer " + key), started, deadline)

        threads = [threading.Thread(target=direct), threading.Thread(target=through_endpoint)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        if existing_endpoint:
            from mlflow_deploy.online import delete_deployment

            delete_deployment(name, endpoint=endpoint)
        else:
            delete_endpoint(endpoint)
    if len(found) != 2:
        raise SystemExit("a poller of the cold start failed")
    return found["direct"], found["endpoint"]


def run_cold(args, model, body, records):
    from mlflow_deploy.online import create_endpoint
    from mlflow_deploy.progress import reporting_to

    with reporting_to(lambda message: None):  # "reusing env ..." at every create
        return _run_cold(args, model, body, records, create_endpoint)


def _run_cold(args, model, body, records, create_endpoint):
    create_endpoint(COLD_EP)  # stays for the existing-endpoint case; deleted at the end
    rows = []
    for existing in (False, True):
        case = "existing endpoint" if existing else "endpoint made with it"
        cold_start("coldwarm", model, body, existing, args.step_timeout)
        direct, endpoint = [], []
        for i in range(args.runs):
            d, e = cold_start("cold{}".format(i), model, body, existing, args.step_timeout)
            direct.append(d)
            endpoint.append(e)
            emit(records, {"measure": "create -> first 200", "case": case, "run": i,
                           "direct_s": round(d, 4), "endpoint_s": round(e, 4)})
        rows.append("| {} | {} | {} |".format(case, summary(direct), summary(endpoint)))
    return rows


# --- 2. scale-up under load ----------------------------------------------------------------------

class Load:
    """``concurrency`` aiohttp requests in flight, back to back, each with an id of its own;
    every answer's (start, end, status, request id), status None for no answer."""

    def __init__(self, url, body, key, concurrency, max_requests):
        self.url, self.body, self.key = url, body, key
        self.concurrency, self.max_requests = concurrency, max_requests
        self.done = []
        self.stopping = asyncio.Event()

    async def run(self):
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.concurrency)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self.client(session) for _ in range(self.concurrency)))

    async def client(self, session):
        import aiohttp

        while not self.stopping.is_set() and len(self.done) < self.max_requests:
            request_id = uuid.uuid4().hex
            headers = {"Authorization": "Bearer " + self.key, "x-request-id": request_id,
                       "Content-Type": "application/json"}
            started = time.monotonic()
            try:
                async with session.post(self.url, data=self.body, headers=headers) as answer:
                    await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = None
            self.done.append((started, time.monotonic(), status, request_id))


def new_instance_log(store, name):
    from mlflow_deploy.online import instances

    deployment = store.get_deployment(name)
    return instances.instances_of(deployment)[1].log_path


def served_by(log_path):
    """Our request ids in that instance's access log, with their statuses."""
    from mlflow_deploy import logs

    found = {}
    for line in logs.tail(log_path)[0]:
        match = ACCESS.search(line)
        if match:
            found[match.group(1)] = int(match.group(2))
    return found


def mtime_after(path, since_wall):
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    return mtime - since_wall if mtime >= since_wall else None


async def scale_up_once(args, yml, url, key, body):
    from mlflow_deploy.online import instances
    from mlflow_deploy.store import Store

    store = Store()
    load = Load(url, body, key, args.concurrency, args.max_requests)
    loading = asyncio.ensure_future(load.run())
    marks = {}
    try:
        await asyncio.sleep(args.warm)
        if loading.done():
            loading.result()
            raise SystemExit("the load stopped before the update (--max-requests too low?)")
        before = store.get_deployment(SCALE_DEPLOYMENT)
        first = instances.instances_of(before)[0]
        started, started_wall = time.monotonic(), time.time()
        proc = await asyncio.create_subprocess_exec(
            *CLI, "online-deployment", "update", "-f", str(yml), "--set", "instance_count=2",
            cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stderr = []

        async def read_stderr():
            async for raw in proc.stderr:
                stderr.append((time.monotonic() - started, raw.decode(errors="replace")))

        async def watch_row():
            while "ready" not in marks:
                row = await asyncio.get_running_loop().run_in_executor(
                    None, store.get_deployment, SCALE_DEPLOYMENT)
                if len(instances.instances_of(row)) > 1 and row.state == "Succeeded":
                    marks["ready"] = time.monotonic() - started
                await asyncio.sleep(0.01)

        watcher = asyncio.ensure_future(watch_row())
        reader = asyncio.ensure_future(read_stderr())
        try:
            out = await asyncio.wait_for(proc.stdout.read(), args.step_timeout)
            await asyncio.wait_for(proc.wait(), args.step_timeout)
            marks["exit"] = time.monotonic() - started
            await reader
            if proc.returncode != 0:
                raise SystemExit("the update failed:\n" + "".join(line for _, line in stderr))
            json.loads(out)
            await asyncio.wait_for(watcher, 5)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            watcher.cancel()
        await asyncio.sleep(args.after)
    finally:
        load.stopping.set()
        await asyncio.wait_for(loading, args.step_timeout)
    log_path = new_instance_log(store, SCALE_DEPLOYMENT)
    served = served_by(log_path)
    firsts = [end for _, end, _, rid in load.done if rid in served]
    marks["first_request"] = min(firsts) - started if firsts else None
    marks["new_config_file"] = mtime_after(log_path.parent / "server.json", started_wall)
    marks["new_ready_file"] = mtime_after(log_path.parent / "ready.json", started_wall)
    marks["old_config_file"] = mtime_after(first.config_path, started_wall)
    marks["old_reexec_ready_file"] = mtime_after(first.ready_file, started_wall)
    for at, line in stderr:
        reusing = REUSING.search(line)
        if reusing:
            marks["env_lookup"] = float(reusing.group(1))
            marks["env_lookup_said"] = at
    during = [(s, e, status) for s, e, status, _ in load.done]
    errors = sum(1 for _, _, status in during if status != 200)
    statuses = sorted({str(status) for _, _, status in during if status != 200})
    return {"marks": marks, "requests": len(during), "errors": errors,
            "error_statuses": statuses, "new_instance_requests": len(firsts),
            "load_s": max(e for _, e, _ in during) - min(s for s, _, _ in during)}


def run_scale(args, work, model, body, records):
    yml = work / "deployment.yml"
    yml.write_text(textwrap.dedent(f"""\
        name: {SCALE_DEPLOYMENT}
        endpoint_name: {SCALE_EP}
        model: {model}
        instance_count: 1
        request_settings: {{max_concurrent_requests_per_instance: {args.concurrency}}}
        readiness_probe: {{initial_delay: 0, period: 1}}
        liveness_probe: {{initial_delay: 0, period: 1}}
    """))
    cli("online-endpoint", "create", "--name", SCALE_EP, timeout=args.step_timeout)
    cli("online-deployment", "create", "-f", str(yml), "--all-traffic",
        timeout=args.step_timeout)
    url = cli("online-endpoint", "show", "--name", SCALE_EP,
              timeout=args.step_timeout)["scoring_uri"]
    key = cli("online-endpoint", "get-credentials", "--name", SCALE_EP,
              timeout=args.step_timeout)["primaryKey"]
    results = []
    for i in range(args.runs):
        result = asyncio.run(scale_up_once(args, yml, url, key, body))
        emit(records, dict(measure="scale-up 1 -> 2 under load", run=i,
                           concurrency=args.concurrency,
                           **{k: round(v, 4) if isinstance(v, float) else v
                              for k, v in result.items() if k != "marks"},
                           **{k + "_s": round(v, 4) if v is not None else None
                              for k, v in result["marks"].items()}))
        results.append(result)
        cli("online-deployment", "update", "-f", str(yml), timeout=args.step_timeout)
    return results


def cli_start_up(timeout):
    """Our CLI's bare start-up (``--help``), the part of the update's time that is not the
    update's."""
    times = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run([*CLI, "--help"], capture_output=True, cwd=ROOT, timeout=timeout,
                       check=True)
        times.append(time.monotonic() - started)
    return statistics.median(times)


def scale_rows(results, start_up):
    def column(key):
        values = [r["marks"].get(key) for r in results]
        return summary(values) if None not in values else "-"

    rows = ["| update start -> new instance ready (row) | {} |".format(column("ready")),
            "| update start -> new instance's first request served | {} |".format(
                column("first_request")),
            "| update start -> update command exits | {} |".format(column("exit")),
            "| of which: CLI start-up (`--help`, apart) | {:.2f} |".format(start_up),
            "| of which: env lookup (\"reusing env\"), done at | {} / {} |".format(
                column("env_lookup"), column("env_lookup_said")),
            "| existing instance's new revision written, its re-exec'd master ready | {} / {} |"
            .format(column("old_config_file"), column("old_reexec_ready_file")),
            "| new instance's config written (its start), its ready file | {} / {} |".format(
                column("new_config_file"), column("new_ready_file")),
            "| new instance's start -> its first request served | {} |".format(
                summary([r["marks"]["first_request"] - r["marks"]["new_config_file"]
                         for r in results]) if all(
                    r["marks"].get("first_request") is not None and
                    r["marks"].get("new_config_file") is not None for r in results) else "-")]
    errors = sum(r["errors"] for r in results)
    requests = sum(r["requests"] for r in results)
    statuses = sorted({s for r in results for s in r["error_statuses"]})
    rows.append("| errors and non-200s during the scale-ups (target 0) | {} of {:,}{} |".format(
        errors, requests, " ({})".format(", ".join(statuses)) if statuses else ""))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="models:/diabetes/1")
    parser.add_argument("--body", default=str(ROOT / "example_models" / "payloads" /
                                              "diabetes-split.json"))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warm", type=float, default=1.0,
                        help="seconds of load before the update")
    parser.add_argument("--after", type=float, default=1.0,
                        help="seconds of load after the update's exit")
    parser.add_argument("--max-requests", type=int, default=200_000,
                        help="at most this many requests per scale-up run")
    parser.add_argument("--step-timeout", type=float, default=120.0)
    parser.add_argument("--only", choices=("cold", "scale"))
    args = parser.parse_args(argv)
    from mlflow_deploy.envs.cache import BUILD_CACHE_ENV, CACHE_ENV
    from mlflow_deploy.online.forkserver import RUN_DIR_ENV, stop_all

    os.environ.setdefault(CACHE_ENV, str(ROOT / ".mlflow-deploy" / "envs"))
    os.environ.setdefault(BUILD_CACHE_ENV, str(ROOT / ".mlflow-deploy" / "build"))
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    os.environ["MLFLOW_DEPLOY_HOME"] = str(work / "home")
    os.environ[RUN_DIR_ENV] = str(work / "run")
    (work / "run").mkdir(mode=0o700)
    model = args.model if ":" in args.model.split("/")[0] else str(Path(args.model).resolve())
    body = one_row_body(Path(args.body))
    records, cold_rows, scale_results = [], [], []
    print("{} UTC  {}, {} cores, load average {:.2f}".format(
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), args.model, os.cpu_count(),
        os.getloadavg()[0]), flush=True)
    try:
        if args.only != "scale":
            cold_rows = run_cold(args, model, body, records)
        if args.only != "cold":
            scale_model = model if ":" in args.model.split("/")[0] else \
                "{{path: {}}}".format(model)
            scale_results = run_scale(args, work, scale_model, body, records)
            start_up = cli_start_up(args.step_timeout)
    finally:
        from mlflow_deploy.online import delete_endpoint

        for endpoint in (COLD_EP, SCALE_EP):
            try:
                delete_endpoint(endpoint)
            except Exception as exc:  # the others still go
                print("could not delete endpoint {}: {}".format(endpoint, exc), file=sys.stderr)
        stop_all(work / "run")
        shutil.rmtree(work, ignore_errors=True)
    write_records("scale", records)
    runs = "median (min-max) of {} run{}".format(args.runs, "" if args.runs == 1 else "s")
    if cold_rows:
        print("\n| create -> first 200, s ({}) | direct | through the endpoint |".format(runs))
        print("|---|---|---|")
        print("\n".join(cold_rows))
    if scale_results:
        print("\n| scale-up 1 -> 2 instances, concurrency {}, s ({}) | |".format(
            args.concurrency, runs))
        print("|---|---|")
        print("\n".join(scale_rows(scale_results, start_up)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
