"""`mlflow-deploy serve` / `validate`, `mlflow deployments run-local`, and the error tree: one-line
output, and MlflowExceptions at the MLflow boundary."""

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import click
import pytest
import requests
from click.testing import CliRunner
from mlflow.exceptions import MlflowException

from mlflow_deploy.cli import cli
from mlflow_deploy.envs.errors import BuildFailed, PythonNotFound
from mlflow_deploy.errors import (
    AlreadyExists,
    DeployError,
    InvalidParameter,
    NotFound,
    PredictionFailed,
    ServerFailed,
    as_mlflow_exception,
    from_scoring_error,
    mlflow_exceptions,
)
from mlflow_deploy.online import supervisor
from tests.online.fixtures import private_home

COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
ROW = [0.038, 0.05, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017]
SPLIT = {"input_data": {"columns": COLUMNS, "data": [ROW]}}


ERROR_CLASSES = [
    (InvalidParameter, "INVALID_PARAMETER_VALUE", 2),
    (NotFound, "RESOURCE_DOES_NOT_EXIST", 3),
    (AlreadyExists, "RESOURCE_ALREADY_EXISTS", 4),
    (ServerFailed, "INTERNAL_ERROR", 6),
    (BuildFailed, "INTERNAL_ERROR", 7),
    (PythonNotFound, "INVALID_PARAMETER_VALUE", 7),
]


@pytest.mark.parametrize("cls, code, exit_code", ERROR_CLASSES)
def test_errors_are_click_exceptions_naming_their_mlflow_code(cls, code, exit_code):
    """Plain errors know no mlflow (the CLI starts without it) but name their MLflow code."""
    error = cls("Config 'port' must be an integer.")
    assert isinstance(error, click.ClickException) and not isinstance(error, MlflowException)
    assert (
        str(error) == error.message == error.format_message() == "Config 'port' must be an integer."
    )
    assert error.error_code == cls.mlflow_error_code == code and error.exit_code == exit_code
    out = io.StringIO()
    error.show(out)
    assert out.getvalue() == "Error: Config 'port' must be an integer.\n"


@pytest.mark.parametrize("cls, code, exit_code", ERROR_CLASSES)
def test_at_the_mlflow_boundary_errors_become_mlflow_exceptions(cls, code, exit_code):
    error = as_mlflow_exception(cls("Config 'port' must be an integer."))
    assert isinstance(error, cls) and isinstance(error, MlflowException)
    assert isinstance(error, click.ClickException)
    assert (
        str(error) == error.message == error.format_message() == "Config 'port' must be an integer."
    )
    assert error.error_code == code and error.exit_code == exit_code
    assert json.loads(error.serialize_as_json())["error_code"] == code
    out = io.StringIO()
    error.show(out)
    assert out.getvalue() == "Error: Config 'port' must be an integer.\n"
    assert type(as_mlflow_exception(cls("again"))) is type(error)  # one class per error class
    assert as_mlflow_exception(error) is error
    copied = pickle.loads(pickle.dumps(error))
    assert type(copied) is type(error) and copied.message == error.message
    assert copied.error_code == code


def test_every_error_code_is_one_mlflow_knows():
    from mlflow.protos.databricks_pb2 import ErrorCode

    def tree(cls):
        yield cls
        for sub in cls.__subclasses__():
            yield from tree(sub)

    classes = {c for c in tree(DeployError) if not issubclass(c, MlflowException)}
    assert {InvalidParameter, NotFound, BuildFailed, PythonNotFound} <= classes
    for cls in classes:
        ErrorCode.Value(cls.mlflow_error_code)  # raises ValueError for an unknown name


def test_prediction_errors_carry_the_status():
    assert PredictionFailed("400: bad", status=400).error_code == "INVALID_PARAMETER_VALUE"
    assert PredictionFailed("500: boom", status=500).error_code == "INTERNAL_ERROR"
    from mlflow_deploy.scoring.errors import SchemaError

    wrapped = from_scoring_error(SchemaError("column 'age' is missing"))
    assert str(wrapped) == "400: column 'age' is missing" and wrapped.status == 400
    converted = as_mlflow_exception(wrapped)
    assert isinstance(converted, PredictionFailed) and converted.status == 400
    assert converted.error_code == "INVALID_PARAMETER_VALUE"
    assert converted.get_http_status_code() == 400
    assert as_mlflow_exception(PredictionFailed("500: boom", status=500)).error_code == (
        "INTERNAL_ERROR"
    )


def test_the_boundary_decorator_converts_only_deploy_errors():
    @mlflow_exceptions
    def lookup(error):
        raise error

    with pytest.raises(NotFound) as caught:
        lookup(NotFound("No deployment with this name (--name)."))
    assert isinstance(caught.value, MlflowException)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(KeyError) as other:
        lookup(KeyError("x"))
    assert not isinstance(other.value, MlflowException)
    assert lookup.__name__ == "lookup"


@pytest.fixture
def deploy_home(tmp_path, monkeypatch):
    yield from private_home(tmp_path, monkeypatch)


def test_mlflow_clients_get_mlflow_exceptions(deploy_home):
    from mlflow.deployments import get_deploy_client

    client = get_deploy_client("azureml-local")
    with pytest.raises(MlflowException) as caught:
        client.get_deployment("missing")
    assert isinstance(caught.value, NotFound) and isinstance(caught.value, click.ClickException)
    assert caught.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert caught.value.message == "No deployment with this name (--name)."
    with pytest.raises(NotFound) as endpoint:
        client.get_endpoint("missing")
    assert isinstance(endpoint.value, MlflowException)
    with pytest.raises(InvalidParameter) as bad:
        client.create_deployment("blue", "gopher://x/y")
    assert isinstance(bad.value, MlflowException)
    assert json.loads(bad.value.serialize_as_json())["error_code"] == "INVALID_PARAMETER_VALUE"


def test_mlflow_deployments_cli_prints_one_line(deploy_home):
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "deployments", "get", "-t", "azureml-local",
         "--name", "missing"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr == "Error: No deployment with this name (--name).\n"


def test_a_raised_error_is_one_line_and_its_exit_code():
    @click.command()
    def broken():
        raise NotFound("No deployment with this name (--name).")

    result = CliRunner().invoke(broken)
    assert result.exit_code == 3
    assert result.output == "Error: No deployment with this name (--name).\n"


def test_validate_accepts_a_good_payload(example_model_dirs, tmp_path):
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(SPLIT))
    result = CliRunner().invoke(cli, ["validate", example_model_dirs["diabetes"], str(payload)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: ") and len(result.output.splitlines()) == 1


@pytest.mark.parametrize("validation", ["compatible", "strict"])
def test_validate_gives_the_servers_message(example_model_dirs, tmp_path, validation):
    from mlflow_deploy.scoring.pipeline import score
    from mlflow_deploy.scoring.predictor import Predictor

    bad = {"input_data": {"columns": COLUMNS, "data": [["5.1"] + ROW[1:]]}}
    raw = json.dumps(bad).encode()
    expected = score(
        raw,
        "application/json",
        Predictor.load(example_model_dirs["diabetes"]),
        validation=validation,
    )
    payload = tmp_path / "payload.json"
    payload.write_bytes(raw)
    result = CliRunner().invoke(
        cli, ["validate", example_model_dirs["diabetes"], str(payload), "--validation", validation]
    )
    if expected.status == 200:
        assert result.exit_code == 0 and "coercion" in result.output
    else:
        message = json.loads(expected.body)["message"]
        assert result.exit_code == 1
        assert result.output == f"Error: {expected.status}: {message}\n"


def test_validate_errors_are_one_line(example_model_dirs, tmp_path):
    payload = tmp_path / "payload.json"
    payload.write_text("{not json")
    result = CliRunner().invoke(cli, ["validate", example_model_dirs["diabetes"], str(payload)])
    assert result.exit_code == 1 and result.output.startswith("Error: 400: POST body could not")
    result = CliRunner().invoke(cli, ["validate", "gopher://x/y", str(payload)])
    assert result.exit_code == 2
    assert result.output == (
        "Error: Unsupported model URI scheme 'gopher': use a local path, "
        "file:, runs:/, models:/ or azureml: URI.\n"
    )
    result = CliRunner().invoke(cli, ["validate", str(tmp_path), str(payload)])
    assert result.exit_code == 2 and "no MLmodel file" in result.output
    assert len(result.output.splitlines()) == 1


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
        if supervisor.is_healthy(port, timeout=1):
            return proc
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("not ready")


def ctrl_c(proc):
    """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group."""
    time.sleep(1)  # let the worker finish the last request (a SIGINT mid-request logs its stack)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        output = proc.stdout.read()
        proc.stdout.close()
    return code, output


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
    answer = requests.post(f"http://127.0.0.1:{port}/score", json=SPLIT, timeout=10)
    assert answer.status_code == 200 and len(answer.json()) == 1
    code, output = ctrl_c(proc)
    assert code == 0, output
    assert "Traceback" not in output and supervisor.port_is_free(port)


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
        assert len(session_members(proc.pid)) >= 4  # serve, the master, two workers
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
    code, output = ctrl_c(proc)
    assert code == 0, output
    assert "Traceback" not in output and supervisor.port_is_free(port)


def test_serve_refuses_a_busy_port(example_model_dirs):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = CliRunner().invoke(
            cli, ["serve", example_model_dirs["diabetes"], "--port", str(taken.getsockname()[1])]
        )
    assert result.exit_code == 5 and result.output.startswith("Error: The port is already in use")


def test_registry_errors_are_one_line(example_models, tmp_path):
    """A model the registry does not have: MLflow's lookup error becomes one line, exit 3."""
    payload = tmp_path / "p.json"
    payload.write_text("{}")
    result = CliRunner().invoke(cli, ["validate", "models:/not-registered/1", str(payload)])
    assert result.exit_code == 3
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "Traceback" not in result.output
    assert isinstance(DeployError("x"), click.ClickException)
