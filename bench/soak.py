"""A soak: one deployment behind its endpoint under steady load for a long time, watched for leaks.

    make bench-soak                 (or: .venv/bin/python bench/soak.py [--duration 600])

A deployment made through the CLI as a user makes it (`mlflow-deploy online-endpoint create`,
`online-deployment create -f` with WORKER_COUNT=2, one instance), of the example diabetes model
(`models:/diabetes/1`, as `make bench-batch` uses; `--model PATH` for a model folder) in its own
env, called through its endpoint (with its key) by --threads clients posting the example payload
back to back for --duration seconds. Every --interval seconds it samples, for every process of the
deployment (the endpoint's gateway, the gunicorn master, each worker), resident memory (VmRSS),
open file descriptors and threads, and the latency p50/p99 of the requests finished in that
window, and the CPU other processes of the machine took (so a noisy run can be told).

At the end, per process, growth after warm-up: the first --warmup seconds (default 60) are left
out, then the first and the last stretch of what remains (a third of it, at most 60 s each) are
compared, resident memory by its largest sample in each. File descriptors and threads are
compared at rest: at the end of the warm-up and at the end of the run the clients pause (their
connections kept open) until no request is in flight, and every process is sampled then; under
load a sample counts the sockets of the requests in flight at that instant (the gateway's swing
by 3 from one sample to the next), which no leak check can tell from growth. The targets:
resident memory growth under 5 %, no fd or thread growth, p99 stable (over the last stretch at
most 25 % above the first stretch's). A worker replaced during the run (its pid changed) is
reported as such.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLI = str(Path(sys.executable).parent / "mlflow-deploy")
TICKS = os.sysconf("SC_CLK_TCK")
ENDPOINT, DEPLOYMENT = "soak-ep", "soak"
RSS_TARGET_PCT = 5.0
P99_TARGET_RATIO = 1.25

from mlflow_deploy import processes  # noqa: E402  (the checkout's, beside this file)


def cli(*args):
    done = subprocess.run([CLI, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout) if done.stdout.strip() else None


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]


def machine_busy_s():
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICKS


def cpu_s(pid):
    ticks = [processes.stat_field(pid, field) for field in (processes.UTIME, processes.STIME)]
    return sum(ticks) / TICKS if None not in ticks else None


class Load:
    """``threads`` clients posting ``body`` to ``url`` back to back; every answer's end time,
    latency and whether it was a 200."""

    def __init__(self, url, body, headers, threads):
        self.url, self.body, self.headers = url, body, headers
        self.done = []  # (monotonic end, latency ms, ok): list.append is atomic
        self.stop = threading.Event()
        self.going = threading.Event()  # cleared: each client waits before its next request
        self.going.set()
        self.waiting = threading.Semaphore(0)  # released by each client as it pauses
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def pause(self):
        """Return once every client has finished its request in flight and waits."""
        self.going.clear()
        for _ in self.threads:
            self.waiting.acquire()

    def resume(self):
        self.going.set()

    def run(self):
        import requests

        with requests.Session() as session:
            while not self.stop.is_set():
                if not self.going.is_set():
                    self.waiting.release()
                    self.going.wait()
                    continue
                started = time.monotonic()
                try:
                    answer = session.post(self.url, data=self.body, headers=self.headers,
                                          timeout=30)
                    ok = answer.status_code == 200
                except requests.RequestException:
                    ok = False
                end = time.monotonic()
                self.done.append((end, (end - started) * 1000.0, ok))

    def window(self, start, end):
        return [(ms, ok) for t, ms, ok in self.done if start <= t < end]


def deployment_processes(gateway, master):
    """role -> pid of every process of the deployment now."""
    found = {"gateway": gateway, "master": master}
    for pid in processes.children(master):
        found["worker {}".format(pid)] = pid
    return found


def sample(pids):
    return {role: {"rss_kb": processes.status_field(pid, "VmRSS"),
                   "fds": processes.fd_count(pid),
                   "threads": processes.status_field(pid, "Threads"),
                   "cpu_s": cpu_s(pid)}
            for role, pid in pids.items()}


def at_rest(load, gateway, master):
    """Every process of the deployment sampled with no request in flight: the clients paused,
    then sampled until two samples 0.2 s apart agree (a closed connection takes a moment to go
    from the gateway's table), at most 5 s."""
    load.pause()
    try:
        previous, deadline = None, time.monotonic() + 5
        while True:
            current = {role: {k: v for k, v in figures.items() if k != "cpu_s"}
                       for role, figures in sample(deployment_processes(gateway, master)).items()}
            counts = {role: (f["fds"], f["threads"]) for role, f in current.items()}
            if counts == previous or time.monotonic() > deadline:
                return current
            previous = counts
            time.sleep(0.2)
    finally:
        load.resume()


def growth(samples, role, first, last):
    """The largest resident memory sample of the first stretch and of the last."""
    def values(stretch, metric):
        return [s["processes"][role][metric] for s in samples
                if stretch[0] <= s["t"] <= stretch[1] and role in s["processes"]
                and s["processes"][role][metric] is not None]

    out = {}
    before, after = values(first, "rss_kb"), values(last, "rss_kb")
    if not before or not after:
        return None  # the process was not there in both stretches (a worker replaced)
    return max(before), max(after)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--warmup", type=float, default=60)
    parser.add_argument("--interval", type=float, default=10)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="models:/diabetes/1")
    parser.add_argument("--body", default=str(ROOT / "example_models" / "payloads" /
                                              "diabetes-split.json"))
    parser.add_argument("--json", help="write every sample here too")
    args = parser.parse_args(argv)
    warmup = min(args.warmup, args.duration / 2)
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    os.environ["MLFLOW_DEPLOY_HOME"] = str(work / "home")
    # the model's env from the cache the suite and the other benches keep; fork servers of our own
    os.environ.setdefault("MLFLOW_DEPLOY_ENV_CACHE", str(ROOT / ".mlflow-deploy" / "envs"))
    os.environ["MLFLOW_DEPLOY_RUN_DIR"] = str(work / "run")
    (work / "run").mkdir(mode=0o700)
    model = args.model if ":" in args.model.split("/")[0] else \
        "{{path: {}}}".format(Path(args.model).resolve())
    (work / "deployment.yml").write_text(textwrap.dedent(f"""\
        name: {DEPLOYMENT}
        endpoint_name: {ENDPOINT}
        model: {model}
        request_settings: {{max_concurrent_requests_per_instance: {args.threads}}}
        environment_variables: {{WORKER_COUNT: {args.workers}}}
    """))
    body = Path(args.body).read_bytes()
    cli("online-endpoint", "create", "--name", ENDPOINT)
    load = None
    try:
        cli("online-deployment", "create", "-f", str(work / "deployment.yml"), "--all-traffic")
        url = cli("online-endpoint", "show", "--name", ENDPOINT)["scoring_uri"]
        key = cli("online-endpoint", "get-credentials", "--name", ENDPOINT)["primaryKey"]
        from mlflow_deploy.store import Store

        store = Store()
        gateway, master = store.get_endpoint(ENDPOINT).pid, store.get_deployment(DEPLOYMENT).pid
        load = Load(url, body, {"Authorization": "Bearer " + key,
                                "Content-Type": "application/json"}, args.threads)
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC  {args.model}, "
              f"WORKER_COUNT={args.workers}, {args.threads} client threads, {args.duration:g} s "
              f"(warm-up {warmup:g} s), {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        print(f"{'t s':>5} {'req':>6} {'err':>4} {'p50 ms':>7} {'p99 ms':>7} {'other cores':>11} | "
              "per process: RSS MB / fds / threads", flush=True)
        samples = []
        started = time.monotonic()
        for thread in load.threads:
            thread.start()
        mine, busy = cpu_s(os.getpid()), machine_busy_s()
        pids = deployment_processes(gateway, master)
        previous = sample(pids)
        tick = started
        rest = {}  # "warm" and "end": every process sampled at rest
        while True:
            tick += args.interval
            time.sleep(max(0.0, tick - time.monotonic()))
            now = time.monotonic()
            pids = deployment_processes(gateway, master)
            current = sample(pids)
            done = load.window(now - args.interval, now)
            latencies = [ms for ms, ok in done if ok]
            # CPU of the machine less ours (the deployment's processes and this load): what other
            # work took in this window, in cores
            ours = sum((current[r]["cpu_s"] or 0) - (previous.get(r, {}).get("cpu_s") or 0)
                       for r in current)
            mine_now, busy_now = cpu_s(os.getpid()), machine_busy_s()
            other = (busy_now - busy - ours - (mine_now - mine)) / args.interval
            mine, busy, previous = mine_now, busy_now, current
            row = {"t": round(now - started, 1), "requests": len(done),
                   "errors": sum(1 for _, ok in done if not ok),
                   "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                   "other_cores": round(max(other, 0.0), 2), "processes": current}
            samples.append(row)
            cells = "  ".join(f"{role} {p['rss_kb'] / 1024:.1f}/{p['fds']}/{p['threads']}"
                              for role, p in current.items() if p["rss_kb"] is not None)
            print(f"{row['t']:>5.0f} {row['requests']:>6} {row['errors']:>4} "
                  f"{row['p50_ms'] or 0:>7.2f} {row['p99_ms'] or 0:>7.2f} "
                  f"{row['other_cores']:>11.2f} | {cells}", flush=True)
            if "warm" not in rest and now - started >= warmup:
                rest["warm"] = at_rest(load, gateway, master)
            if now - started >= args.duration:
                rest["end"] = at_rest(load, gateway, master)
                break
        load.stop.set()
        load.resume()
        for thread in load.threads:
            thread.join()
        report(samples, rest, load, started, warmup, args)
    finally:
        if load is not None:
            load.stop.set()
        subprocess.run([CLI, "online-endpoint", "delete", "--name", ENDPOINT, "--yes"],
                       capture_output=True)
        from mlflow_deploy.online import forkserver

        forkserver.stop_all(work / "run")
        shutil.rmtree(work, ignore_errors=True)


def report(samples, rest, load, started, warmup, args):
    end = samples[-1]["t"]
    stretch = min(60.0, (end - warmup) / 3)
    first, last = (warmup, warmup + stretch), (end - stretch, end)
    print(f"\nafter warm-up: first stretch t = {first[0]:g}-{first[1]:g} s, last t = "
          f"{last[0]:g}-{last[1]:g} s")
    verdicts = {}
    roles = sorted({role for s in samples for role in s["processes"]},
                   key=lambda r: (r.startswith("worker"), r))
    for role in roles:
        figures = growth(samples, role, first, last)
        if figures is None or role not in rest["warm"] or role not in rest["end"]:
            print(f"  {role}: not present in both stretches (started or replaced during the run)")
            verdicts.setdefault("replaced", []).append(role)
            continue
        rss0, rss1 = figures
        fd0, fd1 = rest["warm"][role]["fds"], rest["end"][role]["fds"]
        th0, th1 = rest["warm"][role]["threads"], rest["end"][role]["threads"]
        pct = 100.0 * (rss1 - rss0) / rss0
        flags = []
        if pct > RSS_TARGET_PCT:
            flags.append(f"RSS grew over {RSS_TARGET_PCT:g} %")
        if fd1 > fd0:
            flags.append("fds grew")
        if th1 > th0:
            flags.append("threads grew")
        verdicts[role] = flags
        print(f"  {role:>14}: RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MB ({pct:+.2f} %), "
              f"at rest: fds {fd0} -> {fd1}, threads {th0} -> {th1}"
              f"{'  FLAG: ' + ', '.join(flags) if flags else ''}")

    def latencies(stretch):
        return [ms for ms, ok in load.window(started + stretch[0], started + stretch[1]) if ok]

    p99 = [percentile(latencies(s), 99) for s in (first, last)]
    p50 = [percentile(latencies(s), 50) for s in (first, last)]
    windows = [s["p99_ms"] for s in samples if s["t"] > warmup and s["p99_ms"] is not None]
    total = len(load.done)
    errors = sum(1 for _, _, ok in load.done if not ok)
    stable = p99[1] <= P99_TARGET_RATIO * p99[0]
    print(f"  latency: p50 {p50[0]:.2f} -> {p50[1]:.2f} ms, p99 {p99[0]:.2f} -> {p99[1]:.2f} ms"
          f" (per-window p99 after warm-up: min {min(windows):.2f}, median "
          f"{statistics.median(windows):.2f}, max {max(windows):.2f} ms)")
    print(f"  requests: {total:,} in {end:g} s ({total / end:.1f}/s), errors {errors}; other "
          f"work on the machine: median {statistics.median(s['other_cores'] for s in samples):.2f}"
          f" cores, max {max(s['other_cores'] for s in samples):.2f}; load average now "
          f"{os.getloadavg()[0]:.2f}")
    flagged = {role: flags for role, flags in verdicts.items() if role != "replaced" and flags}
    rss_ok = not any("RSS" in f for flags in flagged.values() for f in flags)
    fd_ok = not any(f in ("fds grew", "threads grew") for flags in flagged.values()
                    for f in flags)
    replaced = ", ".join(verdicts.get("replaced", []))
    print(f"\ntargets: RSS growth < {RSS_TARGET_PCT:g} % after warm-up: "
          f"{'met' if rss_ok else 'MISSED'}; no fd/thread growth: {'met' if fd_ok else 'MISSED'};"
          f" p99 stable (last <= {P99_TARGET_RATIO:g}x first): {'met' if stable else 'MISSED'};"
          f" errors: {errors}{'; replaced during the run: ' + replaced if replaced else ''}")
    if args.json:
        Path(args.json).write_text(json.dumps({"samples": samples, "at_rest": rest}, indent=1))


if __name__ == "__main__":
    main()
