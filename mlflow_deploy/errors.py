"""The control plane's error tree.

Every error is an ``MlflowException`` (so MLflow's client code and REST layers treat it as one, with
the right error code) and a ``click.ClickException`` (so both ``mlflow deployments ...`` and
``mlflow-deploy ...`` print one line ``Error: ...`` and exit with the class's code instead of a
traceback). Messages name the key, flag or URI scheme at fault and never quote the user's values.
"""

from typing import ClassVar, Optional

import click
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
    INVALID_STATE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
)

__all__ = [
    "DeployError",
    "InvalidParameter",
    "NotFound",
    "AlreadyExists",
    "InvalidState",
    "ServerFailed",
    "PredictionFailed",
    "from_scoring_error",
]


class DeployError(MlflowException, click.ClickException):
    """Base of every error the control plane raises on purpose."""

    #: MLflow error code (``mlflow.protos.databricks_pb2``) carried by ``get_json()``.
    mlflow_error_code: ClassVar[int] = INTERNAL_ERROR
    #: Process exit code when the error ends a CLI command.
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, **json_kwargs):
        # MlflowException.__init__ ends in super().__init__(message), which is ClickException's in
        # this MRO, so both bases are initialised (message, show_color, error_code).
        MlflowException.__init__(self, message, error_code=self.mlflow_error_code, **json_kwargs)

    def __str__(self) -> str:
        return self.message


class InvalidParameter(DeployError):
    """A flag, config key, name or model URI the user gave is not acceptable."""

    mlflow_error_code = INVALID_PARAMETER_VALUE
    exit_code = 2


class NotFound(DeployError):
    """A deployment, endpoint, registered model, version, alias, run or path does not exist."""

    mlflow_error_code = RESOURCE_DOES_NOT_EXIST
    exit_code = 3


class AlreadyExists(DeployError):
    mlflow_error_code = RESOURCE_ALREADY_EXISTS
    exit_code = 4


class InvalidState(DeployError):
    """The operation does not fit the resource's current state (e.g. a port already in use)."""

    mlflow_error_code = INVALID_STATE
    exit_code = 5


class ServerFailed(DeployError):
    """A scoring server did not start, did not become ready, or died."""

    mlflow_error_code = INTERNAL_ERROR
    exit_code = 6


class PredictionFailed(DeployError):
    """A scoring server answered a prediction with a non-200 status; carries its message."""

    exit_code = 1

    def __init__(self, message: str, status: Optional[int] = None):
        self.status = status
        # 4xx: the caller's input was rejected; anything else is the server's fault.
        if status is not None and 400 <= status < 500:
            self.mlflow_error_code = INVALID_PARAMETER_VALUE
        super().__init__(message)


def from_scoring_error(error) -> PredictionFailed:
    """Wrap a ``mlflow_deploy.scoring.errors.ScoringError`` (which knows no MLflow, no click)."""
    status = getattr(error, "status", 500)
    return PredictionFailed(f"{status}: {getattr(error, 'message', str(error))}", status=status)
