"""Start scoring servers from a warm fork server of their environment (scoring/forkserver.py).

One fork server per (interpreter, import-time environment variables): it lives in the model's
environment, imports the server's stack once, and forks a gunicorn master per request, so a new
deployment of an env that served before skips about 3 s of imports. It exits after
``$MLFLOW_DEPLOY_FORKSERVER_IDLE_S`` seconds without a request (default 900; 0 turns fork servers
off). Anything wrong with it (it cannot start, does not answer) falls back to starting gunicorn by
exec, so a fork server only ever makes a start faster.

Sockets, pid files and logs live in ``$MLFLOW_DEPLOY_RUN_DIR`` (default
``$XDG_RUNTIME_DIR/mlflow-deploy``, else ``/tmp/mlflow-deploy-<uid>``): short paths, as Unix
socket paths are limited to 107 bytes.
"""
import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

from mlflow_deploy import processes
from mlflow_deploy.envs.cache import file_lock
from mlflow_deploy.scoring.config import CONFIG_ENV

__all__ = ["RUN_DIR_ENV", "IDLE_ENV", "spawn", "run_dir", "running", "stop", "stop_all"]

RUN_DIR_ENV = "MLFLOW_DEPLOY_RUN_DIR"
IDLE_ENV = "MLFLOW_DEPLOY_FORKSERVER_IDLE_S"
DEFAULT_IDLE_S = 900.0
START_TIMEOUT_S = 120.0
ANSWER_TIMEOUT_S = 60.0  # a fork server busy importing what a server learned answers late
# read when a server handles a call, not when a module is imported: servers that differ only in
# these share a fork server (our own settings, the tracking store, the test runner's marker)
_CALL_TIME = ("MLFLOW_DEPLOY_", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI",
              "MLFLOW_ARTIFACT_ROOT", "PYTEST_CURRENT_TEST", "PWD", "OLDPWD", "_")

# fork servers this process started, polled so that one which exited is reaped
_started: List[subprocess.Popen] = []


def idle_seconds() -> float:
    try:
        return float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_S))
    except ValueError:
        return DEFAULT_IDLE_S


def run_dir() -> Path:
    configured = os.environ.get(RUN_DIR_ENV)
    if configured:
        path = Path(configured)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "mlflow-deploy"
    else:
        path = Path("/tmp") / "mlflow-deploy-{}".format(os.getuid())
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _import_time_env(env: Dict[str, str]) -> Dict[str, str]:
    return {k: v for k, v in env.items() if k != CONFIG_ENV and not k.startswith(_CALL_TIME)}


def socket_path(python: str, env: Dict[str, str]) -> Path:
    fingerprint = json.dumps([os.path.abspath(python), sorted(_import_time_env(env).items())])
    return run_dir() / (hashlib.sha256(fingerprint.encode()).hexdigest()[:16] + ".sock")


def spawn(python: str, argv: List[str], env: Dict[str, str], cwd: os.PathLike,
          log_path: os.PathLike) -> Optional[int]:
    """The pid of a gunicorn master forked for this server, or None to start it by exec."""
    idle = idle_seconds()
    if idle <= 0:
        return None
    _reap()
    path = socket_path(python, env)
    if not _private(path.parent):
        return None
    request = {"argv": argv, "env": env, "cwd": os.path.abspath(cwd),
               "log": os.path.abspath(log_path)}
    pid = _ask(path, request)
    if pid is None:
        with file_lock(path.with_suffix(".mutex")):
            pid = _ask(path, request)  # another command may have started it meanwhile
            if pid is None and _start(python, path, env, idle):
                pid = _ask(path, request)
    return pid


def _private(directory: Path) -> bool:
    """Only a folder of ours that nobody else can write to: a request carries the server's whole
    environment, and a socket planted by another user must never receive it."""
    info = directory.stat()
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


def _ask(path: Path, request: dict) -> Optional[int]:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(ANSWER_TIMEOUT_S)
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                answer += chunk
        pid = json.loads(answer.decode("utf-8")).get("pid")
        return pid if isinstance(pid, int) else None
    except (OSError, ValueError):
        return None


def _start(python: str, path: Path, env: Dict[str, str], idle: float) -> bool:
    """Start a fork server on ``path`` and wait until it listens (False if it dies first)."""
    log = path.with_suffix(".log")
    with open(str(log), "ab") as out:
        proc = subprocess.Popen(
            [python, "-m", "mlflow_deploy.scoring.forkserver", str(path), str(idle)],
            env={k: v for k, v in env.items() if k != CONFIG_ENV}, cwd="/",
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True)
    _started.append(proc)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if _listening(path):
            return True
        time.sleep(0.02)
    return False


def _listening(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(path))
        return True
    except OSError:
        return False


def _reap() -> None:
    for proc in list(_started):
        if proc.poll() is not None:
            _started.remove(proc)


def running(directory: Optional[os.PathLike] = None) -> Dict[int, str]:
    """pid -> interpreter of every live fork server keeping its socket in ``directory`` (default:
    run_dir()). Servers forked from one show its command line too, but are not listed here."""
    found = {}
    for pidfile in Path(directory or run_dir()).glob("*.sock.pid"):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        argv = processes.cmdline(pid)
        if argv and "mlflow_deploy.scoring.forkserver" in argv:
            found[pid] = argv[0]
    return found


def stop(pid: int) -> None:
    """SIGTERM a fork server; the servers it started keep running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    _reap()


def stop_all(directory: Optional[os.PathLike] = None) -> int:
    """Stop every fork server that keeps its socket in ``directory`` (default: run_dir()) and
    remove their files; servers they started keep running. Returns how many were stopped."""
    directory = Path(directory or run_dir())
    pids = running(directory)
    for pid in pids:
        stop(pid)
    for pattern in ("*.sock", "*.sock.pid", "*.sock.modules"):
        for leftover in directory.glob(pattern):
            leftover.unlink(missing_ok=True)
    return len(pids)
