"""The env managers that do not build a venv with uv/pip: ``local`` and ``conda``.

``local`` runs the server with the current interpreter after checking that the model's
requirements (and the server's) are installed in it. ``conda`` needs a real conda, mamba or
micromamba: a binary of that name is asked for ``info --json``, which conda's tools answer with a
JSON object and an unrelated program (PyPI has a test runner called mamba) does not.
"""
import json
import shutil
import subprocess
from importlib import metadata
from typing import List, Optional

from packaging.requirements import Requirement

from mlflow_deploy.envs.errors import ManagerUnavailable, UnsatisfiedRequirements

__all__ = ["MANAGERS", "find_conda", "check_local", "unsatisfied"]

MANAGERS = ("uv", "virtualenv", "local", "conda")
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
