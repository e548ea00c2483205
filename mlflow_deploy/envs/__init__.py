"""Model environments: the model's conda.yaml / python_env.yaml / requirements.txt -> a locked,
cached venv that runs the scoring server, in its own interpreter with the model's pins.

    env = prepare_environment(model_dir, manager="uv", python_version_policy="exact")
    env.python   # runs `python -m gunicorn ... mlflow_deploy.scoring.wsgi:app`

    # offline: package once (network), build anywhere without it (package.py)
    write_package(lock_requirements(model_dir), "pkg")   # the caller copies the model to pkg/model
    env = prepare_environment("pkg/model", package="pkg")
"""
import importlib
from typing import Any

#: each public name and the module that defines it, imported on first use (PEP 562): a process
#: that needs only envs.cache's file lock (every online-* command, through the fork server's
#: module) does not import the builders, packaging and YAML (0.14 s of a scale-up)
_HOMES = {
    "prepare_environment": "prepare",
    "lock_requirements": "lock",
    "Locked": "lock",
    "environment_key": "lock",
    "Environment": "environment",
    "EnvManager": "environment",
    "Request": "environment",
    "BuildContext": "environment",
    "EnvCache": "cache",
    "EnvError": "errors",
    "RequirementsError": "errors",
    "PythonNotFound": "errors",
    "RequirementConflict": "errors",
    "UnsatisfiedRequirements": "errors",
    "ManagerUnavailable": "errors",
    "BuildFailed": "errors",
    "PackageError": "errors",
    "PythonVersionWarning": "pythons",
    "POLICIES": "pythons",
    "find_interpreters": "pythons",
    "Package": "package",
    "write_package": "package",
    "read_package": "package",
    "read_model_requirements": "requirements",
}
#: the environment managers, here rather than in managers.py: settings validation names them,
#: and every online-* command validates settings without building anything (managers.py
#: imports packaging and the builders)
MANAGERS = ("uv", "virtualenv", "local", "conda")
__all__ = list(_HOMES) + ["MANAGERS"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))
    value = getattr(importlib.import_module("mlflow_deploy.envs." + home), name)
    globals()[name] = value
    return value

