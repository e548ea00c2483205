"""Errors raised while preparing a model's environment.

All derive from ``EnvError``, itself a ``DeployError`` (a click exception, converted to an
``MlflowException`` at the MLflow boundary), so the CLI prints one line and MLflow clients see a
proper error code. Like ``mlflow_deploy.errors``, this module must not import mlflow (it is on the
path of every ``mlflow-deploy env`` command). Messages name the requirement, file, Python version
or installer at fault.
"""
from mlflow_deploy.errors import DeployError

__all__ = [
    "EnvError",
    "RequirementsError",
    "PythonNotFound",
    "RequirementConflict",
    "UnsatisfiedRequirements",
    "ManagerUnavailable",
    "BuildFailed",
    "PackageError",
]


class EnvError(DeployError):
    """Base: the model's environment could not be prepared."""

    mlflow_error_code = "INTERNAL_ERROR"
    exit_code = 7


class RequirementsError(EnvError):
    """The model's conda.yaml / python_env.yaml / requirements.txt cannot be used as they are."""

    mlflow_error_code = "INVALID_PARAMETER_VALUE"


class PythonNotFound(EnvError):
    """No interpreter on this machine has the Python version the model asks for."""

    mlflow_error_code = "INVALID_PARAMETER_VALUE"


class RequirementConflict(EnvError):
    """A model pin and a package the scoring server needs cannot both hold."""

    mlflow_error_code = "INVALID_PARAMETER_VALUE"


class UnsatisfiedRequirements(EnvError):
    """env_manager local: the current interpreter lacks some of the model's requirements."""

    mlflow_error_code = "INVALID_PARAMETER_VALUE"


class ManagerUnavailable(EnvError):
    """The env_manager asked for is unknown or its tool is not installed here."""

    mlflow_error_code = "INVALID_PARAMETER_VALUE"


class BuildFailed(EnvError):
    """The resolver or installer failed; the message carries its own output."""


class PackageError(EnvError):
    """A folder given as an offline package is not one, or not usable on this machine."""

    mlflow_error_code = "INVALID_PARAMETER_VALUE"
