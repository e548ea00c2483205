"""prepare_environment: a model folder -> a ready interpreter for its scoring server.

It picks the env manager by name and calls its EnvManager protocol (environment.py): uv and
virtualenv (build.py), conda (conda.py), local (managers.py). The building managers' steps are
each memoised, so that a second call for the same inputs only hashes and stats files: read the
model's requirements -> pick the interpreter -> the project wheel (per-user build cache, shared by
every home) -> add the scoring server's packages -> lock (memo in the env cache: no network on
reuse) -> env key = hash(lock, interpreter, wheel) -> build aside and rename, under the key's
file lock.

From an offline package (``package=DIR``, see package.py) the lock, the interpreter's Python
version and the project wheel come from the package instead, and the installer runs offline on
its wheelhouse: no resolver, no wheel build, no network.

From a lock made on another machine (``lock=TEXT, python_version=V``: a Dask worker rebuilding a
batch deployment's env) nothing is resolved either: the lock is installed as it is, with the
Python minor version it was made for and this machine's project wheel, so the same interpreter
path and sources give the same key.
"""
import os
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Type

from mlflow_deploy.envs.build import UvManager, VirtualenvManager
from mlflow_deploy.envs.conda import CondaManager
from mlflow_deploy.envs.environment import EnvManager, Environment, Request
from mlflow_deploy.envs.errors import ManagerUnavailable
from mlflow_deploy.envs.lock import Locked, environment_key, lock_requirements
from mlflow_deploy.envs.managers import MANAGERS, LocalManager

__all__ = ["Environment", "Locked", "lock_requirements", "prepare_environment",
           "environment_key"]

#: env_manager name -> its EnvManager (a new one for each call: it keeps the tools it found)
_MANAGERS: Dict[str, Type[EnvManager]] = {
    manager.name: manager for manager in (UvManager, VirtualenvManager, LocalManager,
                                          CondaManager)}


def prepare_environment(
    model_dir,
    manager: str = "uv",
    python_version_policy: str = "exact",
    refresh: bool = False,
    progress: Optional[Callable[[str], None]] = None,
    *,
    home: Optional[os.PathLike] = None,
    wheelhouse: Optional[os.PathLike] = None,
    uv: Optional[str] = None,
    package: Optional[os.PathLike] = None,
    model_ref: Optional[str] = None,
    exclude_newer: Optional[str] = None,
    lock: Optional[str] = None,
    python_version: Optional[str] = None,
) -> Environment:
    """Return the environment for the model in ``model_dir``, building it if needed.

    ``refresh`` re-resolves the requirements (new versions within the model's pins).
    ``wheelhouse``: resolve and install from that folder only, offline (for packaged models).
    ``package``: a folder written by ``mlflow-deploy package`` for this model (its ``model/`` or
    any copy of it): install its lock from its wheelhouse, offline, with the exact Python minor
    version it was made for (``python_version_policy`` and ``refresh`` do not apply).
    ``home``: the cache root (default ``$MLFLOW_DEPLOY_HOME`` or ``~/.mlflow-deploy``).
    ``model_ref``: what the env's metadata records as the model (default: the folder), e.g. the
    URI when ``model_dir`` is a temporary download.
    ``exclude_newer``: resolve as the indexes were on that date (indexes.IndexOptions).
    ``lock``: the text of a lock file (with hashes) to install instead of resolving the model's
    requirements, for Python ``python_version`` (``python_version_policy`` and ``refresh`` do not
    apply).
    """
    started = time.monotonic()
    if manager not in _MANAGERS:
        raise ManagerUnavailable("env_manager must be one of {}, not '{}'".format(
            "|".join(MANAGERS), manager))
    chosen = _MANAGERS[manager]()
    if (package is not None or lock is not None) and not chosen.installs_packages:
        raise ManagerUnavailable("a {} is installed with env_manager {}".format(
            "package" if package is not None else "lock",
            " or ".join(name for name, m in _MANAGERS.items() if m.installs_packages)))
    if lock is not None and not python_version:
        raise ManagerUnavailable("a lock is installed for the Python version it was made for: "
                                 "give python_version")
    model_dir = Path(model_dir).resolve()
    return chosen.prepare(Request(
        model_dir=model_dir, model_ref=model_ref or str(model_dir),
        progress=progress or (lambda msg: None), started=started,
        python_version_policy=python_version_policy, refresh=refresh, home=home,
        wheelhouse=wheelhouse, uv=uv, package=package, exclude_newer=exclude_newer, lock=lock,
        python_version=python_version))
