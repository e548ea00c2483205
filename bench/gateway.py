"""What the endpoint's gateway costs: the same deployment called through its endpoint (key,
routing, one hop more, over the instance's Unix socket) and directly on its own port, and a bare
relay's cost beside it, in one run.

    make bench-gateway            (or: .venv/bin/python bench/gateway.py [--duration 8])

A deployment made through the CLI as a user makes it (`mlflow-deploy online-endpoint create`,
`online-deployment create -f` with WORKER_COUNT=2 and max_concurrent_requests_per_instance raised
to 64, so no 429 caps the load; Azure's default is 1), on the peers' regressor model
($BENCH_ROOT/models/regressor, from ../shared/bench/peers/setup.sh) in its own env. wrk (the
peers' post.lua) drives 1-row and 1000-row bodies at concurrency 1, 8 and 32, alternating direct
and endpoint runs. Printed per case: requests/s, p50/p99 latency, and the gateway's own CPU per
request (its /proc utime+stime over the run): the targets are at most 0.2 ms of CPU and 0.5 ms
of p50 added per request, and at least 90 % (1000 rows) / 85 % (1 row) of direct throughput.

The floor: bench/relay_floor.py, a relay with the gateway's stack and connection scheme but none
of its work (no key, routing, request id, timeout, log line or metrics), in front of a second
deployment of the same model with no traffic (a worker keeps one connection, its first: the
gateway's to the first deployment would leave the relay none). Its CPU per request is what a
Python gateway cannot go below on this machine; printed beside the gateway's.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(os.environ.get("PEERS_DIR") or ROOT.parent / "shared" / "bench" / "peers")
BENCH_ROOT = Path(os.environ.get("BENCH_ROOT") or Path.home() / ".cache" / "mlflow-deploy-peers")
CLI = str(Path(sys.executable).parent / "mlflow-deploy")
TICKS = os.sysconf("SC_CLK_TCK")


def cli(*args):
    done = subprocess.run([CLI, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout) if done.stdout.strip() else None


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def body_file(folder, rows):
    sys.path.insert(0, str(PEERS_DIR))
    from bench import make_split

    path = Path(folder) / f"body-{rows}.json"
    path.write_text(json.dumps({"input_data": make_split(rows)}))
    return str(path)


def wrk(url, body, conc, duration, headers=()):
    command = ["wrk", "-t1", f"-c{conc}", f"-d{duration}s", "--timeout=30s",
               "-s", str(PEERS_DIR / "post.lua")]
    for header in headers:
        command += ["-H", header]
    env = dict(os.environ, WRK_BODY=body, WRK_MAX_REQ="200000")
    out = subprocess.run(command + [url], env=env, capture_output=True, text=True)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON "))
    result = json.loads(line[len("WRKJSON "):])
    result["errors"] = sum(v for k, v in result.items() if k.startswith("err_"))
    return result


def deployment_yml(work, name, model):
    path = work / f"{name}.yml"
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        endpoint_name: bench-ep
        model: {{path: {model}}}
        request_settings: {{request_timeout_ms: 30000, max_concurrent_requests_per_instance: 64}}
        environment_variables: {{WORKER_COUNT: 2}}
    """))
    return str(path)


def start_relay(address):
    """bench/relay_floor.py on a free port in front of ``address``; (process, its URL)."""
    from mlflow_deploy.online.supervisor import free_port

    port = free_port()
    relay = subprocess.Popen([sys.executable, str(ROOT / "bench" / "relay_floor.py"), str(port),
                              address], stdout=subprocess.PIPE, text=True)
    if "listening" not in relay.stdout.readline():
        relay.kill()
        raise SystemExit("the relay floor did not start")
    return relay, f"http://127.0.0.1:{port}/score"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--model", default=str(BENCH_ROOT / "models" / "regressor"))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    os.environ["MLFLOW_DEPLOY_HOME"] = str(work / "home")
    # the model's env from the cache `make bench` and the suite keep, and fork servers of our own
    os.environ.setdefault("MLFLOW_DEPLOY_ENV_CACHE", str(ROOT / ".mlflow-deploy" / "envs"))
    os.environ["MLFLOW_DEPLOY_RUN_DIR"] = str(work / "run")
    (work / "run").mkdir(mode=0o700)
    cli("online-endpoint", "create", "--name", "bench-ep")
    relay = None
    try:
        deployment = cli("online-deployment", "create", "-f",
                         deployment_yml(work, "bench", args.model), "--all-traffic")
        cli("online-deployment", "create", "-f", deployment_yml(work, "floor", args.model))
        endpoint = cli("online-endpoint", "show", "--name", "bench-ep")
        key = cli("online-endpoint", "get-credentials", "--name", "bench-ep")["primaryKey"]
        sys.path.insert(0, str(ROOT))
        from mlflow_deploy.online.instances import instances_of
        from mlflow_deploy.store import Store

        store = Store()
        gateway_pid = store.get_endpoint("bench-ep").pid
        relay, relay_url = start_relay(instances_of(store.get_deployment("floor"))[0].address)
        direct_url = deployment["scoring_uri"]
        endpoint_url = endpoint["scoring_uri"]
        auth = ["Authorization: Bearer " + key]
        print(f"{time.strftime('%Y-%m-%d %H:%M')} UTC  regressor, WORKER_COUNT=2, "
              f"{args.duration} s per case, {os.cpu_count()} cores")
        print(f"{'rows':>5} {'conc':>4} | {'direct rps':>10} {'p50':>7} {'p99':>7} | "
              f"{'endpoint rps':>12} {'p50':>7} {'p99':>7} | {'ratio':>5} {'+p50 ms':>7} "
              f"{'gw CPU ms/req':>13} | {'floor rps':>9} {'floor CPU ms/req':>16} "
              f"{'errors':>6}")
        for rows in (1, 1000):
            body = body_file(work, rows)
            wrk(direct_url, body, 8, 2)  # warm every worker
            wrk(endpoint_url, body, 8, 2, auth)
            wrk(relay_url, body, 8, 2)
            for conc in (1, 8, 32):
                direct = wrk(direct_url, body, conc, args.duration)
                cpu0 = cpu_seconds(gateway_pid)
                through = wrk(endpoint_url, body, conc, args.duration, auth)
                gateway_ms = 1000 * (cpu_seconds(gateway_pid) - cpu0) / max(through["requests"], 1)
                cpu0 = cpu_seconds(relay.pid)
                floor = wrk(relay_url, body, conc, args.duration)
                floor_ms = 1000 * (cpu_seconds(relay.pid) - cpu0) / max(floor["requests"], 1)
                rps = [r["requests"] / (r["duration_us"] / 1e6) for r in (direct, through, floor)]
                p50 = [r["lat_p50_us"] / 1000 for r in (direct, through)]
                p99 = [r["lat_p99_us"] / 1000 for r in (direct, through)]
                print(f"{rows:>5} {conc:>4} | {rps[0]:>10.1f} {p50[0]:>7.2f} {p99[0]:>7.2f} | "
                      f"{rps[1]:>12.1f} {p50[1]:>7.2f} {p99[1]:>7.2f} | {rps[1] / rps[0]:>5.2f} "
                      f"{p50[1] - p50[0]:>7.2f} {gateway_ms:>13.3f} | {rps[2]:>9.1f} "
                      f"{floor_ms:>16.3f} "
                      f"{direct['errors'] + through['errors'] + floor['errors']:>6}", flush=True)
    finally:
        if relay is not None:
            relay.kill()
            relay.wait()
        subprocess.run([CLI, "online-endpoint", "delete", "--name", "bench-ep", "--yes"])
        from mlflow_deploy.online import forkserver

        forkserver.stop_all(work / "run")


if __name__ == "__main__":
    main()
