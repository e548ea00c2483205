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
"""
import importlib.util
import os
import sys

STATE_ENV = "MLFLOW_DEPLOY_BENCH_STATE"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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

if __name__ == "__main__":
    bench.main()
