"""The env managers' names, ``local`` (the EnvManager that builds nothing), and finding conda.

``local`` runs the server with the current interpreter after checking that the model's
requirements (and the server's) are installed in it. ``conda`` (conda.py) needs a real conda,
mamba or micromamba: a binary of that name is asked for ``info --json``, which conda's tools
answer with a JSON object and an unrelated program (PyPI has a test runner called mamba) does not.
"""
import json
import shutil
import subprocess
import sys
import time
from importlib import metadata
from typing import List, Optional

from packaging.requirements import InvalidRequirement, Requirement

from mlflow_deploy.envs import MANAGERS
from mlflow_deploy.envs.environment import Environment, Request
from mlflow_deploy.envs.errors import ManagerUnavailable, UnsatisfiedRequirements
from mlflow_deploy.envs.requirements import read_model_requirements

__all__ = ["MANAGERS", "LocalManager", "find_conda", "check_local", "unsatisfied"]

_CONDA_TOOLS = ("micromamba", "mamba", "conda")
_CONDA_INFO_KEYS = {"conda_version", "mamba_version", "micromamba version", "root_prefix",
                    "base environment", "platform"}


def find_conda() -> Optional[str]:
    """Path of a working conda-family tool on PATH, or None."""
    for name in _CONDA_TOOLS:
        path = shutil.which(name)
        if path and _is_conda_tool(path):
            return path
    return None


def _is_conda_tool(path: str) -> bool:
    try:
        out = subprocess.run([path, "info", "--json"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=30)
        info = json.loads(out.stdout.decode("utf-8", "replace") or "null")
    except (OSError, subprocess.SubprocessError, ValueError):
        return False
    return out.returncode == 0 and isinstance(info, dict) and bool(_CONDA_INFO_KEYS & set(info))


def require_conda() -> str:
    conda = find_conda()
    if conda is None:
        found = [p for p in (shutil.which(n) for n in _CONDA_TOOLS) if p]
        note = " ({} is not conda's)".format(", ".join(found)) if found else ""
        raise ManagerUnavailable(
            "env_manager conda needs conda, mamba or micromamba on PATH and none was found{}; "
            "use env_manager: uv (the default), which builds from the same conda.yaml".format(note))
    return conda


def unsatisfied(requirements: List[str]) -> List[str]:
    """The requirements (PEP 508 strings) the current interpreter does not satisfy, each with
    what is installed instead."""
    missing = []
    for line in requirements:
        if line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except ValueError:
            missing.append("{} (cannot be checked)".format(line))
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append("{} (not installed)".format(requirement))
            continue
        if requirement.specifier and not requirement.specifier.contains(installed,
                                                                         prereleases=True):
            missing.append("{} (installed: {})".format(requirement, installed))
    return missing


def check_local(requirements: List[str], source: str) -> None:
    missing = unsatisfied(requirements)
    if missing:
        raise UnsatisfiedRequirements(
            "env_manager local: the current Python does not satisfy {} of the requirements ({}): "
            "{}".format(len(missing), source, "; ".join(missing)))


class LocalManager:
    """The current interpreter, if it has the model's packages and the server's. setuptools is
    left out: MLflow lists it among python_env.yaml's build dependencies, which a venv made by uv
    lacks and a running model does not need."""

    name = "local"
    installs_packages = False

    def prepare(self, request: Request) -> Environment:
        model = read_model_requirements(request.model_dir)
        runtime = [line for line in model.lines if not _is_setuptools(line)]
        check_local(runtime + ["flask", "gunicorn", "mlflow-skinny" if not _has("mlflow")
                               else "mlflow"], model.source)
        return Environment(python=sys.executable, key="local", root=sys.prefix, manager="local",
                           python_version="{}.{}.{}".format(*sys.version_info[:3]),
                           seconds=time.monotonic() - request.started,
                           requirements=list(model.lines))


def _is_setuptools(line: str) -> bool:
    try:
        return Requirement(line).name.lower() == "setuptools"
    except InvalidRequirement:
        return False


def _has(distribution: str) -> bool:
    try:
        metadata.version(distribution)
        return True
    except metadata.PackageNotFoundError:
        return False
