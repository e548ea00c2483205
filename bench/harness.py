"""../shared/bench/peers/bench.py, run unchanged but for which processes count as a peer's server.

    python3.11 bench/harness.py {load,coldstart,batch,report} [bench.py's options]

bench.py measures a server's CPU and memory (PSS), and tells its CPU from other processes' (the
"other procs" column, the quiet-machine waits and re-runs), by the process group it started. The
peer `ours` (bench/deployment_peer.py) is a real deployment: its gunicorn master and workers (and
the env's fork server that forked the master) run detached, in sessions of their own, outside
that group. Here a peer whose environment sets MLFLOW_DEPLOY_BENCH_STATE=DIR counts as its
server its process group plus every process running from DIR (working directory under DIR, or DIR
in its command line: the rule deployment_peer.py cleans up by). The wrapper itself (the group's
leader) counts with the CPU of its finished children (the `mlflow deployments create` CLI: cold
start's "server CPU s" is the create's and the server's) and with no memory (it is the bench's
stand-in for the user's terminal, not something a deployment keeps running). That also makes
bench.py's stop() wait until the deployment is deleted. Other peers are measured as bench.py does.

The endpoint peers (`ours-endpoint*`, deployment_peer.py --endpoint-port) take their load through
a keyed endpoint: while such a peer runs, bench.py's requests (its readiness and correctness
posts through urllib, and wrk, through an `-H` added to its command) carry the Authorization
header deployment_peer.py wrote to DIR/authorization; bench.py and post.lua send no header of
their own.

Around each wrk run this also measures, for every peer, what bench.py's rows do not split: the
endpoint gateway's own CPU per request (the process running mlflow_deploy.online.gateway, which
the server's CPU already includes), and PSS (smaps_rollup: a page shared by N processes counts
1/N in each, so sums count it once) by role: per instance (a process whose children are
workers, with them: a gunicorn master and its workers), per worker (a process whose parent is
the peer's too and that has no child of its own, but a multiprocessing resource tracker), the
gateway, and the rest (the env's fork server, launchers). They are added to bench.py's
load.jsonl rows, and `report` prints two more tables from them. A page of a shared library
counts 1/N in each of the N processes that map it, on the whole machine: the gateway's PSS, whose
libraries are the control plane's venv's, moves with what other programs run from that venv.
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import urllib.request

import deployment_peer  # beside this file: the peer's state folder and its files' names

STATE_ENV = deployment_peer.STATE_ENV
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(ROOT)
from mlflow_deploy import processes  # noqa: E402  (standard library only)

GATEWAY_MODULE = "mlflow_deploy.online.gateway"
PEERS_DIR = os.environ.get("PEERS_DIR") or os.path.join(ROOT, "..", "shared", "bench", "peers")

_spec = importlib.util.spec_from_file_location("bench", os.path.join(PEERS_DIR, "bench.py"))
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench"] = bench
_spec.loader.exec_module(bench)

_group_pids = bench.group_pids
_states = {}  # pgid -> DIR, remembered for when the wrapper is gone


def _state_of(pgid):
    try:
        with open("/proc/{}/environ".format(pgid), "rb") as f:
            raw = f.read()
    except OSError:
        return _states.get(pgid)
    state = None
    for item in raw.split(b"\0"):
        if item.startswith(STATE_ENV.encode() + b"="):
            state = os.path.realpath(item.split(b"=", 1)[1].decode())
    _states[pgid] = state
    return state


def group_pids(pgid):
    state = _state_of(pgid)
    if not state:
        return _group_pids(pgid)
    prefix = state + os.sep
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/{}/stat".format(d)) as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            if fields[0] == "Z":
                continue
            if int(fields[2]) == pgid:
                pids.append(int(d))
                continue
            cwd = os.readlink("/proc/{}/cwd".format(d))
            if cwd == state or cwd.startswith(prefix):
                pids.append(int(d))
                continue
            with open("/proc/{}/cmdline".format(d), "rb") as f:
                if prefix.encode() in f.read():
                    pids.append(int(d))
        except (OSError, ValueError):
            continue
    return pids


def _wrapper(pid):
    return _states.get(pid) is not None


def proc_cpu(pid):
    if not _wrapper(pid):
        return _proc_cpu(pid)
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            st = f.read()
    except OSError:
        return 0.0
    fields = st[st.rindex(")") + 2:].split()
    return sum(int(x) for x in fields[11:15]) / bench.CLK_TCK  # utime stime cutime cstime


def proc_pss_kb(pid):
    return 0 if _wrapper(pid) else _proc_pss_kb(pid)


_proc_cpu, _proc_pss_kb = bench.proc_cpu, bench.proc_pss_kb
bench.group_pids, bench.proc_cpu, bench.proc_pss_kb = group_pids, proc_cpu, proc_pss_kb

# --------------------------------------------------------------------- the endpoint's key
_running = None  # the bench.Server started last and not yet stopped (bench.py runs one at a time)
_server_start, _server_stop = bench.Server.start, bench.Server.stop


def _start(self):
    global _running
    _running = self
    return _server_start(self)


def _stop(self):
    global _running
    try:
        _server_stop(self)
    finally:
        _running = None


bench.Server.start, bench.Server.stop = _start, _stop


def authorization():
    """The running peer's Authorization header value, if it is behind a keyed endpoint. Read at
    each use, never kept: the file of the peer's previous start is still there until its wrapper
    has cleaned up, and its key is refused (a 401, which readiness waits past)."""
    state = _running is not None and _running.proc is not None and _state_of(_running.proc.pid)
    if not state:
        return None
    try:
        with open(os.path.join(state, deployment_peer.AUTHORIZATION)) as f:
            return f.read().strip() or None
    except OSError:
        return None


class _Authorize(urllib.request.BaseHandler):
    """Adds the header to bench.py's urllib posts (readiness, the correctness check)."""

    def http_request(self, request):
        value = authorization()
        if value:
            request.add_unredirected_header("Authorization", value)
        return request


urllib.request.install_opener(urllib.request.build_opener(_Authorize))


class _Subprocess:
    """bench.py's `subprocess`, but its wrk command gets `-H "Authorization: ..."` before the URL
    (post.lua sets Content-Type only, and wrk adds the -H headers before the script runs)."""

    def __getattr__(self, name):
        return getattr(subprocess, name)

    def run(self, cmd, *args, **kwargs):
        value = cmd[:1] == ["wrk"] and authorization()
        if value:
            cmd = cmd[:-1] + ["-H", "Authorization: " + value, cmd[-1]]
        return subprocess.run(cmd, *args, **kwargs)


bench.subprocess = _Subprocess()


# --------------------------------------------------------------------- gateway CPU, PSS by role
def _is_gateway(pid):
    return GATEWAY_MODULE in (processes.cmdline(pid) or [])


def _is_helper(pid):
    """Python's multiprocessing resource tracker (MLServer's main process starts one beside its
    workers): a child that serves no request, so among the others, not the workers."""
    return any("multiprocessing.resource_tracker" in arg for arg in processes.cmdline(pid) or [])


def gateway_cpu_s(server):
    return sum(proc_cpu(pid) for pid in group_pids(server.proc.pid) if _is_gateway(pid))


def memory(server):
    """PSS in MB by role (see the module's docstring), of the peer's processes now."""
    pids = group_pids(server.proc.pid)
    pss = {pid: proc_pss_kb(pid) / 1024 for pid in pids}
    parent = {pid: processes.stat_field(pid, processes.PPID) for pid in pids}
    gateways = [pid for pid in pids if _is_gateway(pid)]
    workers = [pid for pid in pids if parent[pid] in pss and pid not in parent.values()
               and pid not in gateways and not _is_helper(pid)]
    masters = sorted({parent[pid] for pid in workers})
    instances = [pss[m] + sum(pss[w] for w in workers if parent[w] == m) for m in masters]
    total = sum(pss.values())
    return {"pss_total_mb": round(total, 1),
            "pss_instance_mb": round(statistics.mean(instances), 1) if instances else None,
            "pss_worker_mb": round(statistics.mean(pss[w] for w in workers), 1) if workers else None,
            "pss_gateway_mb": round(sum(pss[g] for g in gateways), 1) if gateways else None,
            "pss_other_mb": round(total - sum(instances) - sum(pss[g] for g in gateways), 1),
            "pss_instances": len(masters), "pss_workers": len(workers)}


_samples = []  # (requests, duration_s, figures) of the wrk runs since the last load.jsonl row
_run_wrk, _append = bench.run_wrk, bench.append


def run_wrk(*args, **kwargs):
    server = _running
    cpu0 = gateway_cpu_s(server) if server else 0.0
    result = _run_wrk(*args, **kwargs)
    if server:
        cpu = gateway_cpu_s(server) - cpu0
        figures = memory(server)
        if figures["pss_gateway_mb"] is not None:
            figures["gateway_cpu_ms_per_req"] = round(1000 * cpu / max(result["requests"], 1), 3)
        _samples.append((result["requests"], round(result["duration_us"] / 1e6, 2), figures))
    return result


def append(out_dir, name, rec):
    """bench.py's append; a load row gets the figures of the wrk run it kept (of a cell's
    attempts, bench.py keeps the one least disturbed by other processes)."""
    if name == "load.jsonl":
        for requests, duration_s, figures in _samples:
            if (requests, duration_s) == (rec["requests"], rec["duration_s"]):
                rec.update(figures)
        _samples.clear()
    _append(out_dir, name, rec)


bench.run_wrk, bench.append = run_wrk, append


# --------------------------------------------------------------------- report
def _median(values, fmt="{:.1f}"):
    values = [v for v in values if v is not None]
    return fmt.format(statistics.median(values)) if values else "–"


def report(out):
    """The tables of the figures this file adds, under the same groups as bench.py's load
    tables (model, workers, set): medians over the rounds (gateway CPU) or over every cell
    (memory)."""
    path = os.path.join(out, "load.jsonl")
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    groups = {}
    for row in rows:
        groups.setdefault((row["model"], row["workers"], row["tag"]), []).append(row)
    lines = []
    for (model, workers, tag), recs in groups.items():
        peers = list(dict.fromkeys(r["peer"] for r in sorted(recs, key=lambda r: r["round"])))
        cells = {}
        for r in recs:
            cells.setdefault((r["peer"], r["rows"], r["conc"]), []).append(r)
        gateway = [k for k in cells if any(r.get("gateway_cpu_ms_per_req") is not None
                                           for r in cells[k])]
        if gateway:
            lines.append(f"\n### The endpoint's gateway: model={model}, workers={workers}, set={tag} "
                         "(its own CPU, included in the server's; median over rounds)\n")
            lines.append("| peer | rows | conc | req/s | server CPU ms/req | gateway CPU ms/req | "
                         "gateway share of server CPU |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|")
            for rows_ in sorted({k[1] for k in gateway}):
                for peer in peers:
                    for conc in sorted({k[2] for k in gateway}):
                        c = cells.get((peer, rows_, conc))
                        if (peer, rows_, conc) not in gateway:
                            continue
                        server = statistics.median(r["server_cpu_ms_per_req"] for r in c)
                        gw = statistics.median(r["gateway_cpu_ms_per_req"] for r in c
                                               if r.get("gateway_cpu_ms_per_req") is not None)
                        lines.append(f"| {peer} | {rows_} | {conc} | {_median([r['rps'] for r in c])} | "
                                     f"{server:.2f} | {gw:.3f} | {100 * gw / server if server else 0:.0f}% |")
            ours, theirs = cells.get(("ours-endpoint-batch", 1, 32)), cells.get(("mlserver-batch", 1, 32))
            if ours and theirs:
                a, b = (statistics.median(r["rps"] for r in c) for c in (ours, theirs))
                lines.append(f"\nours-endpoint-batch against mlserver-batch, 1 row at concurrency 32: "
                             f"{a:.1f} / {b:.1f} req/s = {a / b:.2f}x (target: at least 1.5x)")
        lines.append(f"\n### Memory (PSS, shared pages counted once): model={model}, "
                     f"workers={workers}, set={tag} (median over every cell, sampled after each run)\n")
        lines.append("| peer | all processes MB | per instance MB | per worker MB | gateway MB | "
                     "others MB | instances x workers |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for peer in peers:
            c = [r for r in recs if r["peer"] == peer and "pss_total_mb" in r]
            if not c:
                continue
            lines.append(
                f"| {peer} | {_median([r['pss_total_mb'] for r in c])} | "
                f"{_median([r['pss_instance_mb'] for r in c])} | "
                f"{_median([r['pss_worker_mb'] for r in c])} | "
                f"{_median([r['pss_gateway_mb'] for r in c])} | "
                f"{_median([r['pss_other_mb'] for r in c])} | "
                f"{_median([r['pss_instances'] for r in c], '{:.0f}')} x "
                f"{_median([r['pss_workers'] / max(r['pss_instances'], 1) for r in c], '{:.0f}')} |")
    return "\n".join(lines) + "\n" if lines else ""


def main():
    bench.main()
    if "report" in sys.argv[1:]:  # bench.py's command, among its options
        ap = argparse.ArgumentParser(add_help=False)
        ap.add_argument("--out", default=os.path.join(bench.BENCH_ROOT, "results", "latest"))
        ap.add_argument("--md")
        args, _ = ap.parse_known_args(sys.argv[2:])
        text = report(args.out)
        if args.md and text:
            with open(args.md, "a") as f:
                f.write(text)
        print(text)


if __name__ == "__main__":
    main()
