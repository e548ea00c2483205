"""The error tree (mlflow_deploy/errors.py): click exceptions that print one line and name their
MLflow code, and MlflowExceptions at the MLflow boundary."""

import io
import json
import os
import pickle
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from mlflow.exceptions import MlflowException

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
from tests.online.fixtures import private_home


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
    # the library's message names no flag: its callers have none
    assert caught.value.message == "No deployment with this name."
    assert caught.value.argument == "name"
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
    assert done.stderr == "Error: No deployment with this name.\n"


def test_a_raised_error_is_one_line_and_its_exit_code():
    @click.command()
    def broken():
        raise NotFound("No deployment with this name (--name).")

    result = CliRunner().invoke(broken)
    assert result.exit_code == 3
    assert result.output == "Error: No deployment with this name (--name).\n"
