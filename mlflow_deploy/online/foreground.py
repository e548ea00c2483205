"""A scoring server in the foreground: ``mlflow deployments run-local`` and ``mlflow-deploy serve``.

The same two processes as an endpoint: the scoring server on a Unix socket in its own temporary
folder (only its owner can enter it), and in front of it, on the user's port, a gateway in
transparent mode (no key, no 424 wrapping, every route and status passed through), so a slow or
stalled client holds a coroutine of the gateway, never one of the server's synchronous workers.
The user's port opens once the model is loaded.

Nothing is recorded in the store; the model is fetched into a temporary directory that goes away
with the server. Ctrl-C stops it.
"""

import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, List, Mapping, Optional

from mlflow_deploy.errors import InvalidParameter, InvalidState, ServerFailed
from mlflow_deploy.online import gateways, supervisor
from mlflow_deploy.online.deployments import check_flavor, port_holder, server_config_for
from mlflow_deploy.revisions import stage_revision
from mlflow_deploy.online.routes import TRANSPARENT, GatewayConfig, Route
from mlflow_deploy.online.settings import DeploymentSettings, parse_settings

__all__ = ["serve", "DEFAULT_PORT"]

DEFAULT_PORT = 5001  # azmlinfsrv's default
_STOPPED = (0, -2, -15, 130)  # gunicorn and the gateway exit 0 on SIGINT/SIGTERM too


def serve(
    model_uri: str,
    config: Optional[Mapping[str, Any]] = None,
    name: Optional[str] = None,
    flavor: Optional[str] = None,
) -> None:
    """Run the model's scoring server on 127.0.0.1 until Ctrl-C; raise if it fails."""
    check_flavor(flavor)
    settings = parse_settings(config)
    if settings.instance_count != 1:
        raise InvalidParameter("A foreground server is one instance: give it more workers with "
                               "WORKER_COUNT in environment_variables, not instance_count.")
    port = settings.port or DEFAULT_PORT
    if not supervisor.port_is_free(port):
        raise InvalidState(f"Port {port} is taken by {port_holder(port)}: give another port.",
                           argument="port")
    with tempfile.TemporaryDirectory(prefix="mlflow-deploy-serve-") as tmp:
        files, env = stage_revision(Path(tmp), 1, model_uri, settings)
        # absolute: the server runs in the user's folder, where a script may read its files
        socket_path = str(Path(tmp) / "server.sock")
        internal = f"unix:{socket_path}"
        config_path = Path(tmp) / "server.json"
        server_config_for(name or "serve", files, model_uri, settings, socket_path, revision=1,
                          deployment_dir=None, python=env.python).write(str(config_path))
        front = _transparent_gateway(name or "serve", settings, port, internal, Path(tmp))
        code = _run(config_path, env.python, front, Path(tmp) / "gateway.json", internal)
    if code not in _STOPPED:
        raise ServerFailed(f"The scoring server exited with code {code}; see its output above.")


def _transparent_gateway(name: str, settings: DeploymentSettings, port: int, internal: str,
                         folder: Path) -> GatewayConfig:
    return GatewayConfig(
        endpoint=name, port=port, admin_socket=str(folder / "admin.sock"), mode=TRANSPARENT,
        auth_mode="none", max_request_bytes=int(settings.max_request_mb * 1024 * 1024),
        deployments={name: Route(upstreams=(internal,))})


def _run(config_path: Path, python: str, front: GatewayConfig, front_path: Path,
         internal: str) -> int:
    """Start the server, then (once it answers) its gateway; wait until either exits, then
    stop the other. SIGTERM, SIGHUP and SIGINT sent to us alone (``timeout``, an IDE's stop
    button, a container runtime) are passed on to both; Ctrl-C in a terminal reaches all three
    processes at once. Returns the exit code of the one that exited first."""
    children: List[subprocess.Popen] = []
    stopping = []

    def stop_all(signum=None, frame=None):
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, stop_all)
                for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        server = supervisor.start_attached(config_path, python=python)
        children.append(server)
        while server.poll() is None and not stopping and not supervisor.is_healthy(internal, 1):
            time.sleep(0.05)  # the model loads: nothing to wait on but its answer
        if server.poll() is None and not stopping:
            children.append(gateways.start_attached(front, front_path))
            print(f"Serving the model at http://{supervisor.HOST}:{front.port}/score "
                  "(Ctrl-C stops it)", flush=True)
        return _first_to_exit(children).returncode
    finally:
        stop_all()
        for child in children:
            child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _first_to_exit(children: List[subprocess.Popen]) -> subprocess.Popen:
    while True:
        for child in children:
            try:
                child.wait(timeout=0.2)
                return child
            except subprocess.TimeoutExpired:
                continue
