"""Model environments: the model's conda.yaml / python_env.yaml / requirements.txt -> a locked,
cached venv that runs the scoring server, in its own interpreter with the model's pins.

    env = prepare_environment(model_dir, manager="uv", python_version_policy="exact")
    env.python   # runs `python -m gunicorn ... mlflow_deploy.scoring.wsgi:app`

    # offline: package once (network), build anywhere without it (package.py)
    write_package(lock_requirements(model_dir), "pkg")   # the caller copies the model to pkg/model
    env = prepare_environment("pkg/model", package="pkg")
"""
from mlflow_deploy.envs.cache import EnvCache
from mlflow_deploy.envs.environment import BuildContext, EnvManager, Environment, Request
from mlflow_deploy.envs.errors import (BuildFailed, EnvError, ManagerUnavailable, PackageError,
                                       PythonNotFound, RequirementConflict, RequirementsError,
                                       UnsatisfiedRequirements)
from mlflow_deploy.envs.lock import Locked, environment_key, lock_requirements
from mlflow_deploy.envs.managers import MANAGERS
from mlflow_deploy.envs.package import Package, read_package, write_package
from mlflow_deploy.envs.prepare import prepare_environment
from mlflow_deploy.envs.pythons import POLICIES, PythonVersionWarning, find_interpreters
from mlflow_deploy.envs.requirements import read_model_requirements

__all__ = [
    "prepare_environment",
    "lock_requirements",
    "Locked",
    "Environment",
    "EnvManager",
    "Request",
    "BuildContext",
    "EnvCache",
    "EnvError",
    "RequirementsError",
    "PythonNotFound",
    "PythonVersionWarning",
    "RequirementConflict",
    "UnsatisfiedRequirements",
    "ManagerUnavailable",
    "BuildFailed",
    "PackageError",
    "Package",
    "write_package",
    "read_package",
    "MANAGERS",
    "POLICIES",
    "environment_key",
    "find_interpreters",
    "read_model_requirements",
]
