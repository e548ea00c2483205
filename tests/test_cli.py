"""`mlflow-deploy serve` killed alone, not its process group: its gunicorn master and workers stop
with it. The other tests of the command line are in tests/cli/, one file per command module."""

import os
import signal
import sys
import time

import pytest

from mlflow_deploy.online import supervisor
from tests.cli.foreground import serve_until_ready


def session_members(sid):
    """Pids of the living processes in session ``sid`` (zombies are dead)."""
    from mlflow_deploy import processes

    return [pid for pid in processes.pids()
            if processes.stat_field(pid, processes.SESSION) == sid and processes.is_running(pid)]


def wait_until(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_serve_stops_with_its_children_when_killed_alone(example_model_dirs, signum):
    """`timeout`, an IDE's stop button or a container runtime signal `serve` alone, not its
    process group: its gunicorn master and workers stop too (SIGTERM is passed on; after a
    SIGKILL the kernel tells the master), and the port is free again."""
    port = supervisor.free_port()
    command = [sys.executable, "-m", "mlflow_deploy.cli", "serve", example_model_dirs["diabetes"],
               "--port", str(port), "--workers", "2", "--env-manager", "local"]
    proc = serve_until_ready(command, port)
    try:
        wait_until(lambda: len(session_members(proc.pid)) >= 4)  # serve, the master, 2 workers
        os.kill(proc.pid, signum)
        proc.wait(timeout=60)
        wait_until(lambda: not session_members(proc.pid))
        assert supervisor.wait_port_free(port)
        if signum == signal.SIGTERM:
            assert proc.returncode == 0 and "Traceback" not in proc.stdout.read()
    finally:
        for pid in session_members(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.stdout.close()
