"""The bench peers `ours` and `ours-endpoint*` (bench/peers.toml): a real deployment, as a user gets it.

    MLFLOW_DEPLOY_BENCH_STATE=DIR python bench/deployment_peer.py --model M --port P --workers N \
        [-C key=value ...]
    MLFLOW_DEPLOY_BENCH_STATE=DIR python bench/deployment_peer.py --model M --endpoint-port P \
        --workers N [-C key=value ...]
    python bench/deployment_peer.py --cleanup DIR [DIR ...]

The peer harness (../shared/bench/peers/bench.py) wants a foreground command that it stops by
killing its process group; a deployment's gunicorn server runs detached in its own session (forked
from the env's fork server, or exec'd) and outlives the command that created it. So this wrapper:

1. removes what a killed earlier run left in DIR (deployments still recorded there are deleted
   with `mlflow deployments delete`, any process still running from DIR is stopped, DIR goes),
2. runs `mlflow deployments create -t azureml-local --name bench -m M -C port=P
   -C environment_variables='{"WORKER_COUNT": "N"}' [-C ...]` with MLFLOW_DEPLOY_HOME=DIR/home and the fork servers' folder
   MLFLOW_DEPLOY_RUN_DIR=DIR/run (fresh each time: the model env comes from
   $MLFLOW_DEPLOY_ENV_CACHE, built before the bench by bench/run.sh). With --endpoint-port P the
   load goes through an endpoint instead, as Azure's clients call it: the endpoint `bench-ep` is
   created first on port P with a key (MLflow's `create_endpoint` through the plugin: MLflow
   3.17's `create-endpoint` command is broken, see the README), its key's Authorization header
   value is written to DIR/authorization (0600, for bench/harness.py to send), and the deployment
   is created behind it with `--endpoint bench-ep -C all_traffic=true` on a free port of its own,
3. stays in the foreground until SIGTERM/SIGINT/SIGHUP (or until the server dies: exit 1, so the
   harness sees the peer die),
4. on the way out deletes the endpoints (`mlflow deployments delete-endpoint`, which deletes
   their deployments) and any deployment still recorded (`mlflow deployments delete`), each at
   most 15 s (the harness sends SIGKILL 20 s after SIGTERM), then stops anything still running
   from DIR (the env's fork server, which `delete` leaves running as it would for a user, or a
   server whose create was killed half way), by pid.

"Running from DIR": working directory under DIR (servers run in their deployment folder) or DIR in
the command line (the fork server's socket path, inherited by the servers it forks). bench/harness.py
counts the same processes as the peer's server (CPU, memory), as the harness only sees its process
group. Standard library only: run it with the project's venv, whose `mlflow` it calls.
"""
import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

STATE_ENV = "MLFLOW_DEPLOY_BENCH_STATE"
TARGET = "azureml-local"
#: the file under DIR holding the endpoint's Authorization header value (bench/harness.py reads it)
AUTHORIZATION = "authorization"
DELETE_TIMEOUT_S = 15.0
MLFLOW = str(Path(sys.executable).parent / "mlflow")


class Stop(Exception):
    pass


def _on_signal(signum, frame):
    raise Stop(signum)


def log(text: str) -> None:
    print("[deployment_peer {}] {}".format(time.strftime("%H:%M:%S"), text), flush=True)


def _env(state: Path) -> dict:
    env = dict(os.environ)
    env["MLFLOW_DEPLOY_HOME"] = str(state / "home")
    env["MLFLOW_DEPLOY_RUN_DIR"] = str(state / "run")
    return env


def running_from(state: Path) -> List[int]:
    """Pids (not this process, not zombies) whose cwd is under ``state`` or whose command line
    names it: the deployment's server and workers, and the fork server of DIR/run."""
    state = Path(os.path.realpath(state))
    prefix = str(state) + os.sep
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/{}/stat".format(entry), "rb") as f:
                stat = f.read().decode("ascii", "replace")
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            cwd = os.readlink("/proc/{}/cwd".format(entry))
            with open("/proc/{}/cmdline".format(entry), "rb") as f:
                cmdline = f.read()
        except (OSError, IndexError):
            continue
        if cwd == str(state) or cwd.startswith(prefix) or prefix.encode() in cmdline:
            found.append(int(entry))
    return found


def stop_running(state: Path, grace: float = 3.0) -> None:
    pids = running_from(state)
    if not pids:
        return
    log("stopping leftover processes of {}: {}".format(state, pids))
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            pids = [p for p in pids if p in running_from(state)]
            if not pids:
                return
            time.sleep(0.1)


def recorded(state: Path, table: str = "deployments") -> List[str]:
    db = state / "home" / "state.db"
    if not db.is_file():
        return []
    try:
        with sqlite3.connect("file:{}?mode=ro".format(db), uri=True, timeout=5) as conn:
            return [row[0] for row in conn.execute("SELECT name FROM {}".format(table))]
    except sqlite3.Error:
        return []


def delete(state: Path, *args: str) -> None:
    """``mlflow deployments ARGS -t azureml-local`` (delete NAME, or delete-endpoint NAME)."""
    what = "mlflow deployments " + " ".join(args)
    t0 = time.monotonic()
    try:
        rc = subprocess.call([MLFLOW, "deployments", *args, "-t", TARGET],
                             env=_env(state), stdin=subprocess.DEVNULL, timeout=DELETE_TIMEOUT_S)
        log("{}: rc={} in {:.1f} s".format(what, rc, time.monotonic() - t0))
    except subprocess.TimeoutExpired:
        log("{}: no answer after {:.0f} s".format(what, DELETE_TIMEOUT_S))


def teardown(state: Path) -> None:
    # an endpoint goes with its deployments in one call (deleting the deployment first would
    # leave a created endpoint and its gateway behind); `ours`' endpoint, made by its create,
    # goes the same way
    for name in recorded(state, "endpoints"):
        delete(state, "delete-endpoint", "--endpoint", name)
    for name in recorded(state):
        delete(state, "delete", "--name", name)
    stop_running(state)


def cleanup(state: Path) -> None:
    """Leave nothing of an earlier run of ``state``: deployments, processes, files."""
    if state.exists():
        teardown(state)
        shutil.rmtree(state, ignore_errors=True)


def _server_pid(state: Path, name: str) -> Optional[int]:
    try:
        return int((state / "home" / "deployments" / name / "gunicorn.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: Optional[int]) -> bool:
    try:
        with open("/proc/{}/stat".format(pid), "rb") as f:
            return f.read().decode("ascii", "replace").rsplit(")", 1)[1].split()[0] not in "ZX"
    except (OSError, IndexError, TypeError):
        return False


def _command(pid: int) -> str:
    """The process's command line, shortened: a master forked by the env's fork server still
    shows the fork server's (`-m mlflow_deploy.scoring.forkserver`), one started by exec (the
    fallback when the fork server cannot serve) shows gunicorn's."""
    try:
        with open("/proc/{}/cmdline".format(pid), "rb") as f:
            return f.read().rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")[:200]
    except OSError:
        return "?"


#: what a user runs to make a keyed endpoint on a port of their choice (MLflow's client: its CLI's
#: create-endpoint is broken in 3.17), then reads its key as `online-endpoint get-credentials` does
_CREATE_ENDPOINT = """
import json, sys
from mlflow.deployments import get_deploy_client
from mlflow_deploy.online.endpoints import get_credentials
get_deploy_client("{target}").create_endpoint(sys.argv[1], config={{"port": sys.argv[2]}})
print(json.dumps(get_credentials(sys.argv[1])))
"""


def create_endpoint(state: Path, name: str, port: int) -> int:
    """Create the endpoint and write its Authorization header value to DIR/authorization."""
    log("create endpoint {} on port {} (mlflow.deployments client)".format(name, port))
    done = subprocess.run([sys.executable, "-c", _CREATE_ENDPOINT.format(target=TARGET), name, str(port)],
                          env=_env(state), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    if done.returncode != 0:
        log("create endpoint failed: rc={}".format(done.returncode))
        return done.returncode
    key = json.loads(done.stdout.decode().strip().splitlines()[-1])["primaryKey"]
    aside = state / (AUTHORIZATION + ".tmp")
    fd = os.open(str(aside), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("Bearer " + key)
    os.replace(str(aside), str(state / AUTHORIZATION))  # the harness never reads half a key
    return 0


def serve(args, state: Path) -> int:
    cleanup(state)
    (state / "run").mkdir(mode=0o700, parents=True)  # fork servers want a private folder
    cmd = [MLFLOW, "deployments", "create", "-t", TARGET, "--name", args.name, "-m", args.model,
           "-C", 'environment_variables={{"WORKER_COUNT": "{}"}}'.format(args.workers)]
    if args.endpoint_port:  # behind a keyed endpoint made first; the deployment's own port is free
        cmd += ["--endpoint", args.endpoint, "-C", "all_traffic=true"]
    else:
        cmd += ["-C", "port={}".format(args.port)]
    for item in args.config:
        cmd += ["-C", item]
    try:
        if args.endpoint_port:
            rc = create_endpoint(state, args.endpoint, args.endpoint_port)
            if rc != 0:
                return rc
        log("$ " + " ".join(cmd))
        t0 = time.monotonic()
        rc = subprocess.call(cmd, env=_env(state), stdin=subprocess.DEVNULL)
        if rc != 0:
            log("create failed: rc={}".format(rc))
            return rc
        pid = _server_pid(state, args.name)
        log("created in {:.2f} s; gunicorn master pid {} runs {}".format(
            time.monotonic() - t0, pid, _command(pid) if pid else "?"))
        while _alive(pid):
            time.sleep(1.0)
        log("the server exited")
        return 1
    except Stop as stop:
        log("signal {}: deleting what it made".format(stop.args[0]))
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        teardown(state)


def main(argv=None) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cleanup", nargs="+", metavar="DIR",
                    help="only remove what earlier runs left in these state folders")
    ap.add_argument("--model")
    ap.add_argument("--port", type=int, help="the deployment's own port, the load's target")
    ap.add_argument("--endpoint-port", type=int,
                    help="instead: the load goes through a keyed endpoint on this port")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--name", default="bench")
    ap.add_argument("--endpoint", default="bench-ep", help="the endpoint's name (--endpoint-port)")
    ap.add_argument("-C", "--config", action="append", default=[], metavar="KEY=VALUE",
                    help="more deployment config, passed to `mlflow deployments create`")
    args = ap.parse_args(argv)
    try:
        if args.cleanup:
            for d in args.cleanup:
                cleanup(Path(d).resolve())
            return 0
        if not os.environ.get(STATE_ENV) or not (args.model and args.workers) \
                or not (args.port or args.endpoint_port) or (args.port and args.endpoint_port):
            ap.error("--model, --workers, one of --port and --endpoint-port, and ${} are "
                     "required".format(STATE_ENV))
        return serve(args, Path(os.environ[STATE_ENV]).resolve())
    except Stop:
        return 0


if __name__ == "__main__":
    sys.exit(main())
