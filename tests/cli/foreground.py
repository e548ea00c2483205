"""The CLI's foreground servers (`mlflow-deploy serve`, `mlflow deployments run-local`) in real
processes: started in a session of their own, stopped the way a terminal stops them."""
import os
import signal
import subprocess
import time

from mlflow_deploy.online import supervisor
from tests.connections import accepted, wait_until


def serve_until_ready(command, port, timeout=180):
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=dict(os.environ),
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read())
        if supervisor.is_healthy(supervisor.http_address(port), timeout=1):
            return proc
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("not ready")


def ctrl_c(proc, port):
    """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group, once the
    server is done with every request (a SIGINT mid-request logs its stack)."""
    try:
        wait_until(lambda: not accepted(port), message="a request is still open on the server")
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        output = proc.stdout.read()
        proc.stdout.close()
    return code, output
