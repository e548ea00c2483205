"""The control plane's error tree.

Every error is a ``click.ClickException``, so both ``mlflow deployments ...`` and ``mlflow-deploy
...`` print one line ``Error: ...`` and exit with the class's code instead of a traceback. Messages
name the key, argument or URI scheme at fault and never quote the user's values. They speak to
every caller, the Python API's included, so they name no command-line flag: an error about one
argument of the function raised from says which (``argument``), and the CLI adds the flag that
gave it (cli/__init__.py).

This module does not import mlflow, and must not: every ``mlflow-deploy`` command imports it, and
importing mlflow costs about 1.7 s, far more than commands like ``env build`` on a cached env take
themselves. Each class therefore names its MLflow error code (``mlflow_error_code``, also readable
as ``error.error_code``) as a string, the name of a code in ``mlflow.protos.databricks_pb2``.

MLflow's users still get instances of ``MlflowException``: at the MLflow boundary (the
``azureml-local`` plugin's client methods and ``run_local``) :func:`mlflow_exceptions` re-raises a
``DeployError`` as :func:`as_mlflow_exception` of it, an instance of a class deriving from BOTH the
error's own class and ``MlflowException``. ``except NotFound`` and ``except MlflowException`` both
catch it, ``serialize_as_json()`` and ``get_http_status_code()`` give its code, and, still being a
``ClickException``, ``mlflow deployments ...`` prints it as one line.
"""

import functools
from typing import Any, Callable, ClassVar, Dict, Optional, Type, TypeVar

import click

__all__ = [
    "DeployError",
    "InvalidParameter",
    "NotFound",
    "AlreadyExists",
    "InvalidState",
    "ServerFailed",
    "PredictionFailed",
    "name_taken",
    "from_scoring_error",
    "as_mlflow_exception",
    "mlflow_exceptions",
]


class DeployError(click.ClickException):
    """Base of every error the control plane raises on purpose."""

    #: Name of the MLflow error code (in ``mlflow.protos.databricks_pb2``) the error carries as an
    #: ``MlflowException``; also its ``error_code``.
    mlflow_error_code: ClassVar[str] = "INTERNAL_ERROR"
    #: Process exit code when the error ends a CLI command.
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, argument: Optional[str] = None, **json_kwargs: Any):
        super().__init__(message)
        # the same attribute MlflowException sets (a code's name), so callers read it either way
        self.error_code: str = self.mlflow_error_code
        self.json_kwargs: Dict[str, Any] = json_kwargs
        #: the parameter at fault of the function that raised it (``name``, ``endpoint``, ...)
        self.argument = argument

    def __str__(self) -> str:
        return self.message


class InvalidParameter(DeployError):
    """A flag, config key, name or model URI the user gave is not acceptable."""

    mlflow_error_code = "INVALID_PARAMETER_VALUE"
    exit_code = 2


class NotFound(DeployError):
    """A deployment, endpoint, registered model, version, alias, run or path does not exist."""

    mlflow_error_code = "RESOURCE_DOES_NOT_EXIST"
    exit_code = 3


class AlreadyExists(DeployError):
    mlflow_error_code = "RESOURCE_ALREADY_EXISTS"
    exit_code = 4


def name_taken(what: str, argument: str, update: bool = True) -> AlreadyExists:
    """The error of a create whose name is taken (``what``: "A deployment", ...), with the next
    step: updating it instead (``update``: the resource can be updated), or deleting it first."""
    step = "update it instead, or delete it first" if update else "delete it first"
    return AlreadyExists(f"{what} with this name already exists: {step}.", argument=argument)


class InvalidState(DeployError):
    """The operation does not fit the resource's current state (e.g. a port already in use)."""

    mlflow_error_code = "INVALID_STATE"
    exit_code = 5


class ServerFailed(DeployError):
    """A scoring server did not start, did not become ready, or died."""

    mlflow_error_code = "INTERNAL_ERROR"
    exit_code = 6


class PredictionFailed(DeployError):
    """A scoring server answered a prediction with a non-200 status; carries its message."""

    exit_code = 1

    def __init__(self, message: str, status: Optional[int] = None):
        self.status = status
        # 4xx: the caller's input was rejected; anything else is the server's fault.
        if status is not None and 400 <= status < 500:
            self.mlflow_error_code = "INVALID_PARAMETER_VALUE"
        super().__init__(message)


def from_scoring_error(error) -> PredictionFailed:
    """Wrap a ``mlflow_deploy.scoring.errors.ScoringError`` (which knows no MLflow, no click)."""
    status = getattr(error, "status", 500)
    return PredictionFailed(f"{status}: {getattr(error, 'message', str(error))}", status=status)


# ---- the MLflow boundary ----------------------------------------------------------------------

_MLFLOW_CLASSES: Dict[type, type] = {}


def _mlflow_class(cls: Type[DeployError]) -> type:
    """``cls`` + ``MlflowException``, made once per class (mlflow imported only now)."""
    combined = _MLFLOW_CLASSES.get(cls)
    if combined is None:
        from mlflow.exceptions import MlflowException

        combined = _MLFLOW_CLASSES.setdefault(cls, type(cls.__name__, (cls, MlflowException), {
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "__reduce__": _reduce,
        }))
    return combined


def as_mlflow_exception(error: DeployError) -> DeployError:
    """``error`` as an instance of its own class AND of ``MlflowException`` (same message, exit
    code and attributes; ``error_code`` and ``serialize_as_json()`` give its MLflow code).

    Imports mlflow: call it only where MLflow is in use already (the plugin's boundary). An error
    that is an ``MlflowException`` already is returned as it is."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, ErrorCode

    if isinstance(error, MlflowException):
        return error
    combined = _mlflow_class(type(error))
    converted = combined.__new__(combined, error.message)
    converted.__dict__.update(error.__dict__)  # message, show_color, status, ...
    try:
        code = ErrorCode.Value(error.mlflow_error_code)
    except ValueError:  # a name this mlflow does not know
        code = INTERNAL_ERROR
    # sets error_code (the same name), message, error_class, sqlstate, json_kwargs and args;
    # its super().__init__ is Exception's here, so ClickException's state above stays as copied
    MlflowException.__init__(converted, error.message, error_code=code,
                             **getattr(error, "json_kwargs", {}))
    return converted


def _reduce(self):
    """Pickle a converted error as its plain class and convert it again when unpickled."""
    plain = type(self).__mro__[1]
    return _unpickle_mlflow_exception, (plain, self.message, dict(self.__dict__))


def _unpickle_mlflow_exception(cls: Type[DeployError], message: str, state: Dict[str, Any]):
    plain = cls.__new__(cls, message)
    plain.args = (message,)
    plain.__dict__.update(state)
    return as_mlflow_exception(plain)


F = TypeVar("F", bound=Callable[..., Any])


def mlflow_exceptions(function: F) -> F:
    """Decorate the plugin's entry points: a ``DeployError`` leaves them as
    :func:`as_mlflow_exception` of itself, with the original's traceback and cause."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except DeployError as error:
            converted = as_mlflow_exception(error)
            if converted is error:
                raise
            raise converted.with_traceback(error.__traceback__) from error.__cause__

    return wrapper  # type: ignore[return-value]
