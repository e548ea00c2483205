"""`mlflow-deploy serve` and `mlflow deployments run-local`: a foreground server in a real process,
stopped by Ctrl-C; a busy port is one line. (Killing `serve` alone: tests/test_cli.py.)"""
import gzip
import json
import socket
import sys

import pytest
import requests
from click.testing import CliRunner

from mlflow_deploy.cli import cli
from mlflow_deploy.online import supervisor

from .foreground import ctrl_c, serve_until_ready

COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
ROW = [0.038, 0.05, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017]
SPLIT = {"input_data": {"columns": COLUMNS, "data": [ROW]}}


@pytest.mark.slow
def test_serve_in_the_foreground_until_ctrl_c(example_model_dirs):
    port = supervisor.free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow_deploy.cli",
        "serve",
        example_model_dirs["diabetes"],
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    proc = serve_until_ready(command, port)
    # more clients trickling their bodies than there are workers: the gateway in front holds
    # them, and the workers keep answering the others
    stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    for sock in stalled:
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")
    # timeouts are bounds for a loaded machine, not expectations
    answer = requests.post(f"http://127.0.0.1:{port}/score", json=SPLIT, timeout=30)
    assert answer.status_code == 200 and len(answer.json()) == 1
    assert "azureml-model-deployment" not in answer.headers  # transparent: the server's answer
    # an encoded body reaches the server as sent, to be refused there as Azure's server would
    gzipped = requests.post(f"http://127.0.0.1:{port}/score", data=gzip.compress(
        json.dumps(SPLIT).encode()), timeout=30, headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert gzipped.status_code == 415, gzipped.text
    # an over-long request id: the server's own 431, passed through, the id never echoed
    long_id = requests.post(f"http://127.0.0.1:{port}/score", json=SPLIT, timeout=30,
                            headers={"x-request-id": "r" * 101})
    assert long_id.status_code == 431 and "r" * 101 not in repr(long_id.headers)
    assert long_id.headers["x-ms-run-function-failed"] == "True"  # the server's, not the gateway's
    for sock in stalled:
        sock.close()
    code, output = ctrl_c(proc, port)
    assert code == 0, output
    assert "Traceback" not in output and supervisor.port_is_free(port)


@pytest.mark.slow
def test_mlflow_run_local(example_models):
    port = supervisor.free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "deployments",
        "run-local",
        "-t",
        "azureml-local",
        "--name",
        "local",
        "-m",
        example_models["diabetes"],
        "-C",
        f"port={port}",
    ]
    proc = serve_until_ready(command, port)
    assert (
        requests.post(f"http://127.0.0.1:{port}/score", json=SPLIT, timeout=10).status_code == 200
    )
    code, output = ctrl_c(proc, port)
    assert code == 0, output
    assert "Traceback" not in output and supervisor.port_is_free(port)


def test_serve_refuses_a_busy_port(example_model_dirs):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", example_model_dirs["diabetes"], "--port",
                                          str(port)])
    assert result.exit_code == 5
    assert result.output == (f"Error: Port {port} is taken by another program: give another port "
                             "(--port).\n")
