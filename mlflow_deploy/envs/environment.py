"""What every env manager shares: the request it gets, the Environment it returns, the frozen
context of one build, and the EnvManager protocol (as pypa/build's env backends: the caller picks
one by name and only calls the protocol).

    prepare_environment(model_dir, manager=NAME) -> MANAGER().prepare(Request) -> Environment

The managers: uv and virtualenv (build.py: a venv from a lock resolved by uv), conda (conda.py:
a conda env from a conda-lock lock), local (managers.py: the current interpreter, checked).
"""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Protocol, Tuple

from mlflow_deploy.envs.cache import EnvCache
from mlflow_deploy.envs.indexes import IndexOptions
from mlflow_deploy.envs.pythons import Interpreter
from mlflow_deploy.envs.wheel import ProjectWheel

__all__ = ["Environment", "Request", "BuildContext", "EnvManager", "venv_python"]


def venv_python(root: Path) -> Path:
    """The interpreter of the env (venv or conda prefix) at ``root``."""
    return root / "bin" / "python"


@dataclass
class Environment:
    python: str  # interpreter that runs the scoring server (flask, gunicorn, mlflow_deploy, model)
    key: str  # cache hash ("local" for env_manager local)
    root: str  # the venv folder (sys.prefix for local)
    manager: str
    python_version: str
    lock_path: Optional[str] = None
    built: bool = False  # False: reused from the cache (or local)
    resolved: bool = False  # True: the resolver ran (network) during this call
    seconds: float = 0.0
    requirements: List[str] = field(default_factory=list)  # resolver input lines (model + ours)


@dataclass(frozen=True)
class Request:
    """What prepare_environment was asked for (its docstring says what each option means)."""

    model_dir: Path  # resolved
    model_ref: str  # what the env's metadata records as the model
    progress: Callable[[str], None]
    started: float  # time.monotonic() when the call began: Environment.seconds counts from it
    python_version_policy: str = "exact"
    refresh: bool = False
    home: Optional[os.PathLike] = None
    wheelhouse: Optional[os.PathLike] = None
    uv: Optional[str] = None
    package: Optional[os.PathLike] = None
    exclude_newer: Optional[str] = None
    lock: Optional[str] = None  # a lock made elsewhere, installed as it is
    python_version: Optional[str] = None  # the Python ``lock`` was made for


@dataclass(frozen=True)
class BuildContext:
    """One env of the cache, as a manager's plan makes it: what is built (the lock, the Python,
    our wheel, where packages come from), and what the env's record of this use says."""

    request: Request
    cache: EnvCache
    key: str  # the env's cache key: hash of what it is built from
    lock_text: str
    wheel: ProjectWheel
    indexes: IndexOptions
    interpreter: Optional[Interpreter]  # a venv's base Python; None: the lock brings its own
    resolved: bool  # the lock was resolved by this call (network)
    requirements: Tuple[str, ...]  # the resolver's input lines (model + ours)
    metadata: Mapping[str, Any]  # the manager's own fields for the env's metadata

    @property
    def final(self) -> Path:
        """Where the env lives once built."""
        return self.cache.env_dir(self.key)

    @property
    def lock_path(self) -> Path:
        return self.cache.lock_file(self.key)

    @property
    def python_version(self) -> Optional[str]:
        """The env's Python version when known before it is built (its base interpreter's)."""
        return self.interpreter.version if self.interpreter is not None else None


class EnvManager(Protocol):
    """One ``env_manager``: how a model's environment is found or made."""

    name: str
    installs_packages: bool  # can build from an offline package (``mlflow-deploy package``)

    def prepare(self, request: Request) -> Environment:
        """The model's environment: reused, built, or (local) checked."""
