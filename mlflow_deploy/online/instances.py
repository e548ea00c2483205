"""A deployment's instances: ``instance_count`` independent server process trees (each a
gunicorn master and its ``WORKER_COUNT`` workers, with a port of its own), as Azure runs them, so
a crashed instance leaves the others serving and a rollout replaces them one at a time.

Instance 0 lives in the deployment's folder and its row's ``port``/``pid`` (as every deployment
did before instances); instance k > 0 lives in ``instances/<k>/`` under it, with the same files
(``server.json``, ``gunicorn.pid``, ``ready.json``, ``server.log``, and the Unix socket
``server.sock`` the gateway forwards to), and its port and pid in the row's ``instances`` list.
``instances_of`` and ``record`` are the one place that knows this. An instance listens only on
its socket, in a folder only its owner can enter; its TCP port (instance 0's is the deployment's
own scoring URI) is its endpoint's gateway's, which passes what comes there through to it once
the whole request is read. The control plane's health checks and self-test go over the socket.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Dict, List, Optional, Tuple

from mlflow_deploy.online import supervisor
from mlflow_deploy.online.selftest import run_self_test
from mlflow_deploy.scoring.config import ServerConfig
from mlflow_deploy.store import Deployment

__all__ = ["SOCKET", "Instance", "instances_of", "record", "start", "hand_over", "restart", "stop",
           "state", "read_pidfile"]


SOCKET = "server.sock"  # in the instance's folder, which only its owner can enter


@dataclass
class Instance:
    index: int
    dir: Path
    port: int
    pid: Optional[int] = None

    @property
    def config_path(self) -> Path:
        return self.dir / "server.json"

    @property
    def pidfile(self) -> Path:
        return self.dir / "gunicorn.pid"

    @property
    def ready_file(self) -> Path:
        return self.dir / "ready.json"

    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    @property
    def address(self) -> str:
        """Where the gateway and the control plane reach it: its Unix socket, the one place it
        listens (its port is the gateway's own)."""
        return f"unix:{self.dir / SOCKET}"


def instance_dir(deployment_dir: Path, index: int) -> Path:
    return deployment_dir if index == 0 else deployment_dir / "instances" / str(index)


def instances_of(deployment: Deployment) -> List[Instance]:
    root = Path(deployment.dir)
    first = Instance(0, root, deployment.port, deployment.pid)
    return [first] + [Instance(k, instance_dir(root, k), extra["port"], extra.get("pid"))
                      for k, extra in enumerate(deployment.instances, 1)]


def record(deployment: Deployment, instances: List[Instance]) -> None:
    """Write the instances back into the deployment's row (not saved here)."""
    deployment.port, deployment.pid = instances[0].port, instances[0].pid
    deployment.instances = [{"port": i.port, "pid": i.pid} for i in instances[1:]]


def start(config: ServerConfig, instance: Instance) -> Tuple[int, Dict]:
    """Start a fresh master for ``config``, wait until it serves and passes its self-test;
    return its pid and the self-test's record. On failure nothing runs."""
    instance.dir.mkdir(parents=True, exist_ok=True)
    instance.dir.chmod(0o700)  # its socket takes no key: only its owner may reach it
    config.write(str(instance.config_path))
    instance.ready_file.unlink(missing_ok=True)
    supervisor.clear_stale_pidfile(str(instance.pidfile), instance.config_path)
    offset = supervisor.log_size(instance.log_path)
    pid = supervisor.start_server(instance.config_path, instance.log_path, python=config.python)
    try:
        ready = supervisor.wait_ready(config, instance.log_path, supervisor.started_alive(pid),
                                      offset, address=instance.address)
        return ready, run_self_test(config, instance.address, instance.log_path)
    except BaseException:
        supervisor.stop(pid, grace=5)
        raise


def hand_over(instance: Instance, new_config: ServerConfig) -> Tuple[int, Dict]:
    """USR2 the instance's running master; return the new master's pid (and its self-test) once
    it serves the new revision and passed the self-test. The old master keeps serving beside it
    until the caller stops it (``stop(..., group=False)``): stopping the new one instead is the
    rollback. On failure the old master keeps serving alone."""
    offset = supervisor.log_size(instance.log_path)
    new_config.write(str(instance.config_path))
    old_pid = instance.pid
    # a master re-exec'd by the previous update ignores USR2 until gunicorn promotes it
    supervisor.wait_promoted(instance.pidfile, old_pid)
    supervisor.reexec(old_pid)
    try:
        ready = supervisor.wait_ready(new_config, instance.log_path,
                                      supervisor.reexec_alive(old_pid), offset,
                                      address=instance.address)
        return ready, run_self_test(new_config, instance.address, instance.log_path)
    except BaseException:
        child = supervisor.reexec_child(old_pid)
        if child is not None:
            supervisor.stop(child, grace=5, group=False)
        raise


def restart(instance: Instance, new_config: ServerConfig) -> Tuple[int, Dict]:
    """Start a dead instance's server again (its port stays with the gateway)."""
    # anything left of the old process group (a worker orphaned by a killed master) goes first
    stop(instance, grace=5)
    return start(new_config, instance)


def stop(instance: Instance, grace: float = supervisor.STOP_GRACE_S) -> None:
    """Stop the instance's master (it finishes the requests it has) and what its group left."""
    for pid in (instance.pid, read_pidfile(instance.pidfile)):
        supervisor.stop(pid, grace=grace, config_path=instance.config_path)


def state(instance: Instance, busy: Callable[[], Collection[str]] = tuple) -> str:
    """Running, Unhealthy (alive but not answering its liveness route) or Dead. An instance
    whose every worker is busy answers nothing either: where its check times out, ``busy()``
    (the addresses of the instances answering its gateway's requests, asked only then) tells a
    busy one (Running, as the gateway's probes count it) from a hung one."""
    if not supervisor.is_alive(instance.pid, instance.config_path):
        return "Dead"
    live = supervisor.liveness(instance.address, timeout=2.0)
    if live is None:
        live = instance.address in busy()
    return "Running" if live else "Unhealthy"


def read_pidfile(pidfile: Optional[Path]) -> Optional[int]:
    if not pidfile:
        return None
    try:
        return int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return None
