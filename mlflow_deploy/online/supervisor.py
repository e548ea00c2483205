"""Scoring server processes: start detached, wait until ready, hand over, stop, and tell the living
from the dead.

A server is a gunicorn master started in its own session, so it outlives the command that started
it. Its truth is on disk next to its ServerConfig: gunicorn's pidfile and the ready file the master
writes once the model is loaded (``{"revision", "pid", "ok", "error"}``). Liveness never trusts a
pid alone: a zombie is dead, and a pid that neither carries our config path in its environment nor
runs in the config's folder (a pid reused after a reboot) is not ours.
"""

import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from mlflow_deploy import detached, processes
from mlflow_deploy.detached import adopt
from mlflow_deploy.detached import children as _children
from mlflow_deploy.detached import reap as _reap
from mlflow_deploy.errors import InvalidState, ServerFailed
from mlflow_deploy.online import forkserver
from mlflow_deploy.scoring.config import CONFIG_ENV, ServerConfig
from mlflow_deploy.scoring.logfile import LOG_FILE_ENV

__all__ = [
    "gunicorn_command",
    "server_env",
    "free_port",
    "port_is_free",
    "wait_port_free",
    "start_server",
    "adopt",
    "start_attached",
    "terminate_with_parent",
    "wait_ready",
    "reexec",
    "is_alive",
    "is_healthy",
    "liveness",
    "http_address",
    "local_request",
    "UnixConnection",
    "stop",
    "read_ready",
    "last_log_line",
]

HOST = "127.0.0.1"
START_TIMEOUT_S = float(os.environ.get("MLFLOW_DEPLOY_START_TIMEOUT", "180"))
STOP_GRACE_S = 30.0
#: how often a starting server's ready file is read: a scale-up waits on it, and reading a small
#: file costs microseconds, so every poll saved (half the interval, on average) is latency
READY_POLL_S = 0.01

def gunicorn_command(python: Optional[str] = None) -> List[str]:
    """Run the environment's ``gunicorn`` script with its Python, not ``python -m gunicorn``: a
    USR2 re-exec replays ``[python, sys.argv[0], ...]``, and with ``-m`` argv[0] is
    ``gunicorn/__main__.py``, whose directory then shadows the stdlib ``http`` package."""
    python = python or sys.executable
    script = Path(python).parent / "gunicorn"
    if not script.is_file():
        raise ServerFailed("gunicorn is not installed in the model's Python environment.")
    return [
        python,
        str(script),
        "-c",
        "python:mlflow_deploy.scoring.gunicorn_conf",
        "mlflow_deploy.scoring.wsgi:app",
    ]


def server_env(config_path: os.PathLike) -> Dict[str, str]:
    env = dict(os.environ)
    env[CONFIG_ENV] = str(config_path)
    env.pop(LOG_FILE_ENV, None)  # a log to rotate is only a detached server's (start_server)
    # envs are installed without bytecode (a build 4x faster): the first server to import a module
    # writes its .pyc, later starts load it (10.7 s -> 4.2 s of cold start, bench/RESULTS.md)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


#: the lowest port free_port hands out
PORTS_FROM = 20000


def free_port(exclude: Optional[List[int]] = None) -> int:
    """A port nobody uses now, avoiding ones other deployments hold, below the range the kernel
    gives the local end of outgoing connections: an endpoint keeps its port while its gateway
    is down (a restart, a reboot), where a port from that range may meanwhile become any
    client's local port and stay taken for as long as that connection lives. Where that range
    leaves too little room below it, the OS picks."""
    low = _first_ephemeral_port()
    for _ in range(100):
        if low - PORTS_FROM >= 1000:
            port = random.randrange(PORTS_FROM, low)
            if not port_is_free(port):
                continue
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((HOST, 0))
                port = sock.getsockname()[1]
        if not exclude or port not in exclude:
            return port
    raise InvalidState("No free TCP port found on 127.0.0.1.")


def _first_ephemeral_port() -> int:
    """The start of the kernel's range for the local ports of outgoing connections (Linux's
    default where it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def start_server(
    config_path: os.PathLike, log_path: os.PathLike, python: Optional[str] = None
) -> int:
    """Start a detached gunicorn master (its own session) and return its pid; do not wait.

    A built environment's master is forked from the env's warm fork server when it can be
    (online/forkserver.py); the control plane's own interpreter (env_manager local) is not, as
    packages installed into it later would not reach a fork server that imported them before."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    command, env = gunicorn_command(python), server_env(config_path)
    env[LOG_FILE_ENV] = os.path.abspath(log_path)  # its master keeps it to a size
    if python and os.path.abspath(python) != os.path.abspath(sys.executable):
        pid = forkserver.spawn(python, command[1:], env, Path(config_path).parent, log_path)
        if pid is not None:
            return pid
    return detached.start(command, log_path, env=env, cwd=Path(config_path).parent).pid


def clear_stale_pidfile(pidfile: Optional[str], config_path: os.PathLike) -> None:
    """gunicorn refuses to start while its pidfile names a process that exists, and a killed
    master forked by a fork server stays a zombie until init reaps it: drop a pidfile whose
    process is not a live server of this config."""
    if not pidfile:
        return
    try:
        pid = int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return
    if not is_alive(pid, config_path):
        Path(pidfile).unlink(missing_ok=True)


def start_attached(config_path: os.PathLike, python: Optional[str] = None) -> subprocess.Popen:
    """Start gunicorn attached to the terminal (a foreground server): Ctrl-C reaches it from
    the terminal, and should we die without a word (SIGKILL), the kernel sends it SIGTERM
    (``PR_SET_PDEATHSIG``), so a foreground server never outlives its command."""
    return subprocess.Popen(gunicorn_command(python), env=server_env(config_path),
                            preexec_fn=terminate_with_parent)


def terminate_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux prctl; elsewhere, only the
    foreground command's own signal handlers)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def wait_port_free(port: int, timeout: float = 10.0) -> bool:
    """A killed server's socket closes only once all its threads are gone (its main thread may
    already show as a zombie): give it a moment."""
    deadline = time.monotonic() + timeout
    while not port_is_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def read_ready(ready_file: os.PathLike) -> Optional[dict]:
    try:
        with open(ready_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None  # not written yet, or caught half-written
    return data if isinstance(data, dict) else None


def is_alive(pid: Optional[int], config_path: Optional[os.PathLike] = None) -> bool:
    """True when ``pid`` runs and is not a zombie; with ``config_path``, also that it is a server
    started for that config (a pid reused by another program after a reboot is not ours)."""
    if not pid:
        return False
    _reap(pid)
    if not processes.is_running(pid):
        # a multi-threaded master shows Z while its other threads still exit: it cannot be
        # reaped yet, but it is dead; a later _reap (or stop's wait) collects it
        return False
    if config_path is not None and not _serves(pid, config_path):
        return False
    return True


def _serves(pid: int, config_path: os.PathLike) -> bool:
    """A master started by exec carries the config path in its environment; one forked by a fork
    server shows the fork server's, but runs in the config's folder (a deployment's own)."""
    env = processes.environ(pid)
    if env is None or env.get(CONFIG_ENV) == str(config_path):
        return True
    return processes.cwd(pid) == os.path.abspath(os.path.dirname(config_path))


def http_address(port: int) -> str:
    """The address (as the gateway's routes and ``local_request`` take it) of a TCP port here."""
    return f"http://{HOST}:{port}"


class UnixConnection(http.client.HTTPConnection):
    """http.client over a Unix socket: the one thing the standard library lacks for talking to
    an instance's socket or a gateway's admin socket, and small enough not to need a dependency.
    The socket is reached through its open folder (``/proc/self/fd/N/NAME``): its own path may
    be longer than the 107 bytes a Unix socket address holds (a home deep in a tree)."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        folder = os.open(os.path.dirname(self.unix_path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.sock.connect("/proc/self/fd/{}/{}".format(
                folder, os.path.basename(self.unix_path)))
        finally:
            os.close(folder)


def local_request(address: str, method: str, path: str, body: bytes = b"",
                  headers: Optional[Mapping[str, str]] = None, timeout: float = 30.0
                  ) -> Tuple[int, str, bytes]:
    """One request to a server of ours at ``address`` ("unix:/PATH" or "http://HOST:PORT"):
    (status, reason, body). The control plane reaches an instance over its Unix socket, the
    one place it listens. Raises OSError or http.client.HTTPException when there is no
    answer."""
    if address.startswith("unix:"):
        connection: http.client.HTTPConnection = UnixConnection(address[len("unix:"):], timeout)
    else:
        host, _, port = address[len("http://"):].rstrip("/").rpartition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        answer = connection.getresponse()
        return answer.status, answer.reason, answer.read()
    finally:
        connection.close()


def is_healthy(address: str, timeout: float = 2.0) -> bool:
    """Whether the server at ``address`` answers its liveness route ``GET /`` with a 200."""
    return liveness(address, timeout) is True


def liveness(address: str, timeout: float = 2.0) -> Optional[bool]:
    """Whether the server at ``address`` answers ``GET /`` with a 200; None when no answer came
    in ``timeout`` (hung, or every worker busy: the caller tells which)."""
    try:
        return local_request(address, "GET", "/", timeout=timeout)[0] == 200
    except socket.timeout:  # TimeoutError from Python 3.10
        return None
    except (OSError, http.client.HTTPException):
        return False


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b(:|$)")
_GUNICORN_NOISE = re.compile(
    r"(Shutting down|Worker exiting|Reason: |Handling signal|Booting worker|Starting gunicorn|"
    r"Listening at|Using worker|Arbiter booted|Worker failed to boot|App failed to load|"
    r"\[ACCESS\] )"  # a request's line (scoring/access.py) never says why a server failed
)


def last_log_line(log_path: os.PathLike, since: int = 0) -> Optional[str]:
    """The most telling line of a server log written after byte offset ``since``: the last
    exception line of a traceback if any, else the last line that is not gunicorn's boilerplate."""
    try:
        with open(log_path, "rb") as f:
            size = os.path.getsize(log_path)
            if since > size:
                since = 0  # rotated since: what it wrote is at the start again
            f.seek(max(since, size - 65536))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    lines = [line.strip() for line in lines if line.strip()]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line[:300]
    for line in reversed(lines):
        if not _GUNICORN_NOISE.search(line):
            return line[:300]
    return lines[-1][:300] if lines else None


def log_size(log_path: os.PathLike) -> int:
    try:
        return os.path.getsize(log_path)
    except OSError:
        return 0


def wait_ready(
    config: ServerConfig,
    log_path: os.PathLike,
    starting: Callable[[], bool],
    log_offset: int = 0,
    timeout: float = START_TIMEOUT_S,
    address: Optional[str] = None,
) -> int:
    """Wait until the master serving ``config.revision`` reports ready and answers ``GET /`` at
    ``address`` (a deployment's instance: its Unix socket; else the config's TCP bind); return
    its pid. ``starting()`` turning False means the starting master died (see
    ``started_alive`` and ``reexec_alive``). Raises ServerFailed with the log's telling line."""
    address = address or http_address(config.port)
    deadline = time.monotonic() + timeout
    while True:
        ready = read_ready(config.ready_file) if config.ready_file else None
        if ready and ready.get("revision") == config.revision:
            if not ready.get("ok"):
                reason = ready.get("error") or last_log_line(log_path, log_offset)
                raise ServerFailed(_failure("failed to start", reason, log_path))
            pid = int(ready["pid"])
            if is_healthy(address, timeout=5):
                return pid
            if not is_alive(pid):
                reason = last_log_line(log_path, log_offset)
                raise ServerFailed(_failure("exited after loading the model", reason, log_path))
        elif not starting():
            reason = last_log_line(log_path, log_offset)
            raise ServerFailed(_failure("exited before it was ready", reason, log_path))
        if time.monotonic() > deadline:
            raise ServerFailed(
                _failure(
                    f"was not ready after {timeout:.0f} s",
                    last_log_line(log_path, log_offset),
                    log_path,
                )
            )
        time.sleep(READY_POLL_S)


def _failure(what: str, reason: Optional[str], log_path: os.PathLike) -> str:
    text = f"The scoring server {what}"
    if reason:
        text += f": {reason}"
    return text + f" (log: {log_path})"


def reexec(old_pid: int) -> None:
    """Ask a gunicorn master to re-exec itself: the new master inherits the listening socket and
    re-reads server.json, while the old one keeps serving until it is told to stop."""
    try:
        os.kill(old_pid, signal.SIGUSR2)
    except ProcessLookupError:
        raise ServerFailed(
            "The scoring server is not running; it cannot be updated in place."
        ) from None


def reexec_child(old_pid: int) -> Optional[int]:
    """The master a USR2 re-exec of ``old_pid`` started: a child of it whose environment carries
    GUNICORN_PID=<old_pid> (its workers carry the same variable but are children of it)."""
    for pid in processes.pids():
        if processes.stat_field(pid, processes.PPID) != old_pid:
            continue
        env = processes.environ(pid)
        if env and env.get("GUNICORN_PID") == str(old_pid):
            return pid
    return None


def started_alive(pid: int) -> Callable[[], bool]:
    return lambda: is_alive(pid)


def reexec_alive(old_pid: int, fork_grace: float = 5.0) -> Callable[[], bool]:
    """A liveness check for the master a USR2 re-exec is starting: it is 'alive' until it has been
    seen and then vanished (or never appeared within ``fork_grace``), or the old master died."""
    seen: List[int] = []
    since = time.monotonic()

    def alive() -> bool:
        if not is_alive(old_pid):
            return False
        child = reexec_child(old_pid)
        if child is not None:
            seen.append(child)
            return True
        return not seen and time.monotonic() - since < fork_grace

    return alive


def wait_promoted(pidfile: os.PathLike, pid: int, timeout: float = 10.0) -> bool:
    """After the old master exits, gunicorn's new master renames ``pidfile.2`` to ``pidfile`` on
    its next loop; until then it ignores USR2. Wait for that so the next update can proceed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if int(Path(pidfile).read_text().strip()) == pid:
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return False


def wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop(
    pid: Optional[int],
    grace: float = STOP_GRACE_S,
    config_path: Optional[os.PathLike] = None,
    group: bool = True,
) -> None:
    """SIGTERM (gunicorn drains in-flight requests), then SIGKILL after ``grace`` seconds. With
    ``group``, leftovers of the master's process group (workers, a re-exec'd master) go too."""
    if not is_alive(pid, config_path):
        return
    pgid = processes.stat_field(pid, processes.PGRP) if group else None
    try:
        os.kill(pid, signal.SIGTERM)
        # a stopped process (SIGSTOP, a debugger) acts on the SIGTERM only once continued, and
        # a master waits for its workers, stopped with it
        if group and pgid and pgid != os.getpgrp():
            os.killpg(pgid, signal.SIGCONT)
        else:
            os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        return
    if not wait_exit(pid, grace):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_exit(pid, 5)
    proc = _children.pop(pid, None)
    if proc is not None:
        try:
            proc.wait(timeout=10)  # collect it now rather than leave a zombie
        except subprocess.TimeoutExpired:
            _children[pid] = proc
    # a master started in its own session leads its process group: kill what it left behind
    if group and pgid and pgid != os.getpgrp():
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _reap(pid)
