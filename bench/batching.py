"""What the gateway's batching buys: 1-row requests at concurrency 32 through an endpoint, with
batching off (max_batch_size 1) and on (max_batch_size 32), in one run, alternating.

    .venv/bin/python bench/batching.py [--duration 8] [--rounds 2]

The deployment is the example diabetes model (scikit-learn Ridge, vectorised: 32 rows cost about
what one does) with WORKER_COUNT=2, max_concurrent_requests_per_instance 64 so that no 429 caps
the load, in its own env (the suite's env cache). The load is an aiohttp client in this process,
32 coroutines posting back to back: it shares the machine with the gateway and the workers, so
compare the cases of one run, not runs on different machines. Printed per case: requests/s,
p50/p99 latency, errors, the mean requests per call from the gateway's batch-size histogram, and
the gateway's own CPU per request (its /proc utime+stime over the case).
"""
import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BODY = {"input_data": {"columns": ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"],
                       "index": [0],
                       "data": [[0.038, 0.05, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002,
                                 0.019, -0.017]]}}
CONCURRENCY = 32
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def load(url: str, duration: float):
    import aiohttp

    latencies, errors = [], 0
    body = json.dumps(BODY).encode()
    deadline = time.monotonic() + duration

    async def client(session):
        nonlocal errors
        while time.monotonic() < deadline:
            started = time.perf_counter()
            async with session.post(url, data=body,
                                    headers={"Content-Type": "application/json"}) as answer:
                await answer.read()
                if answer.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(CONCURRENCY)))
    took = time.monotonic() - started
    latencies.sort()
    return {"requests": len(latencies), "rps": len(latencies) / took, "p50": 1000 * statistics.median(latencies),
            "p99": 1000 * latencies[int(0.99 * (len(latencies) - 1))], "errors": errors}


def batch_counts(url: str):
    import requests

    from tests import prometheus

    scrape = prometheus.parse(requests.get(url.replace("/score", "/metrics"), timeout=30).text)
    labels = {"endpoint": "bench-ep", "deployment": "bench"}
    return (prometheus.value(scrape, "mlflow_deploy_gateway_batch_size_sum", **labels),
            prometheus.value(scrape, "mlflow_deploy_gateway_batch_size_count", **labels))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-batching-"))
    os.environ["MLFLOW_DEPLOY_HOME"] = str(work / "home")
    os.environ.setdefault("MLFLOW_DEPLOY_ENV_CACHE", str(ROOT / ".mlflow-deploy" / "envs"))
    os.environ.setdefault("MLFLOW_DEPLOY_BUILD_CACHE", str(ROOT / ".mlflow-deploy" / "build"))
    os.environ["MLFLOW_DEPLOY_RUN_DIR"] = str(work / "run")
    (work / "run").mkdir(mode=0o700)
    from example_models.build import save_all
    from mlflow_deploy import online
    from mlflow_deploy.online import forkserver
    from mlflow_deploy.store import Store

    model = save_all(str(work / "models"))["diabetes"]
    url = online.create_endpoint("bench-ep", config={"auth_mode": "none"})["scoring_uri"]
    try:
        online.create_deployment("bench", model, endpoint="bench-ep", config={
            "all_traffic": True, "request_timeout_ms": 30000,
            "max_concurrent_requests_per_instance": 64,
            "environment_variables": {"WORKER_COUNT": "2"}})
        asyncio.run(load(url, 2.0))  # warm every worker
        gateway_pid = Store().get_endpoint("bench-ep").pid
        print(f"{time.strftime('%Y-%m-%d %H:%M')} UTC  diabetes (Ridge), WORKER_COUNT=2, 1 row, "
              f"concurrency {CONCURRENCY}, {args.duration:g} s per case, {os.cpu_count()} cores")
        print(f"{'max_batch_size':>14} | {'rps':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
              f"{'requests/call':>13} {'gw CPU ms/req':>13}")
        for _ in range(args.rounds):
            for size in (1, 32):
                online.update_deployment("bench", config={"max_batch_size": size},
                                         endpoint="bench-ep")
                asyncio.run(load(url, 1.0))  # the new revision's workers warm
                before, cpu = batch_counts(url), cpu_seconds(gateway_pid)
                result = asyncio.run(load(url, args.duration))
                cpu = cpu_seconds(gateway_pid) - cpu
                after = batch_counts(url)
                gateway_ms = 1000 * cpu / max(result["requests"], 1)
                calls = after[1] - before[1]
                per_call = (after[0] - before[0]) / calls if calls else 1.0
                print(f"{size:>14} | {result['rps']:>8.1f} {result['p50']:>7.2f} "
                      f"{result['p99']:>7.2f} {result['errors']:>6} {per_call:>13.2f} {gateway_ms:>13.3f}",
                      flush=True)
    finally:
        online.delete_endpoint("bench-ep")  # and its deployment
        forkserver.stop_all(work / "run")


if __name__ == "__main__":
    main()
