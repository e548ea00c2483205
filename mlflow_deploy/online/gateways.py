"""The control plane's side of a gateway process (``gateway.py``): start it, tell it its new
routing table, read its mirror reports, stop it.

A gateway is a detached process (its own session, so it outlives the command that started it)
in the control plane's own Python, with its config path in its environment like a scoring
server's, so the same liveness check tells ours from a pid reused after a reboot. Its admin
socket sits in its endpoint's owner-only folder.
"""

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from mlflow_deploy import detached
from mlflow_deploy.errors import ServerFailed
from mlflow_deploy.online import supervisor
from mlflow_deploy.online.routes import GatewayConfig
from mlflow_deploy.scoring.config import CONFIG_ENV
from mlflow_deploy.scoring.logfile import LOG_FILE_ENV

__all__ = ["start", "start_attached", "reload", "unbound_ports", "busy_instances", "mirror_report",
           "is_alive", "stop", "START_TIMEOUT_S"]

START_TIMEOUT_S = 30.0


def _admin(socket_path: str, method: str, path: str, timeout: float = 30.0
           ) -> Dict[str, Any]:
    connection = supervisor.UnixConnection(socket_path, timeout)
    try:
        connection.request(method, path)
        answer = connection.getresponse()
        body = answer.read()
    finally:
        connection.close()
    if answer.status != 200:
        raise ServerFailed("The endpoint's gateway refused the change: "
                           + json.loads(body).get("message", ""))
    return json.loads(body)


def start(config: GatewayConfig, config_path: Path, log_path: Path) -> int:
    """Write the config, start the gateway detached and wait until it listens; its pid. On
    failure nothing runs and the error points to the log."""
    env = dict(_env(config_path), **{LOG_FILE_ENV: os.path.abspath(log_path)})  # it rotates it
    proc = detached.start(_command(config, config_path), log_path, env=env,
                          cwd=config_path.parent)
    _wait_listening(proc, config, log_path)
    return proc.pid


def start_attached(config: GatewayConfig, config_path: Path) -> subprocess.Popen:
    """Start the gateway of a foreground server (``serve``, ``run-local``): its output goes to
    the terminal, and it stops when the command that started it dies. Returns once it
    listens."""
    proc = subprocess.Popen(_command(config, config_path), env=_env(config_path),
                            cwd=str(config_path.parent),
                            preexec_fn=supervisor.terminate_with_parent)
    _wait_listening(proc, config)
    return proc


def _command(config: GatewayConfig, config_path: Path) -> List[str]:
    """Writes the config the gateway reads at start."""
    config.write(config_path)
    return [sys.executable, "-m", "mlflow_deploy.online.gateway", str(config_path)]


def _env(config_path: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env[CONFIG_ENV] = str(config_path)  # what tells our gateway from a reused pid
    env.pop(LOG_FILE_ENV, None)  # a log to rotate is only a detached gateway's (start)
    return env


def _wait_listening(proc: subprocess.Popen, config: GatewayConfig,
                    log_path: Optional[Path] = None) -> None:
    """Until the gateway answers on its admin socket; its log (or the terminal, for a
    foreground one) says why when it does not."""
    see = "(log: {}).".format(log_path) if log_path else "(see its output above)."
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            why = (supervisor.last_log_line(log_path) or "no output") if log_path else None
            raise ServerFailed("The endpoint's gateway exited at start{} {}".format(
                ": " + why if why else "", see))
        try:
            _admin(config.admin_socket, "GET", "/health", timeout=2.0)
            return
        except OSError:
            if time.monotonic() > deadline:
                supervisor.stop(proc.pid, grace=2)
                raise ServerFailed("The endpoint's gateway did not start in {:.0f} s {}".format(
                    START_TIMEOUT_S, see)) from None
            time.sleep(0.01)  # an endpoint's creation waits on this: a failed try costs 0.1 ms


def reload(config: GatewayConfig, config_path: Path) -> List[int]:
    """Give the running gateway a new routing table; returns once it is in force and the
    instances it no longer routes to have answered what they were sent. Returns the instances'
    ports it could not listen on (another program holds them)."""
    config.write(config_path)
    return _admin(config.admin_socket, "POST", "/reload", timeout=200.0).get("unbound", [])


def unbound_ports(config: GatewayConfig) -> List[int]:
    """The instances' ports the running gateway could not listen on."""
    return _admin(config.admin_socket, "GET", "/health").get("unbound", [])


def busy_instances(admin_socket: str) -> List[str]:
    """The addresses of the instances answering requests the gateway on ``admin_socket`` sent
    them; none when no gateway answers there (nothing is known to be busy)."""
    try:
        return _admin(admin_socket, "GET", "/health", timeout=2.0).get("busy", [])
    except (OSError, http.client.HTTPException, ServerFailed, ValueError):
        return []


def mirror_report(config: GatewayConfig, rtol: Optional[float] = None) -> Dict[str, Any]:
    query = "" if rtol is None else "?rtol={!r}".format(rtol)
    return _admin(config.admin_socket, "GET", "/mirror" + query)


def is_alive(pid: Optional[int], config_path: Path) -> bool:
    return supervisor.is_alive(pid, config_path)


def stop(pid: Optional[int], config_path: Path) -> None:
    """SIGTERM: the gateway stops listening and finishes the requests in flight."""
    supervisor.stop(pid, grace=10, config_path=config_path)
