"""prepare_environment: a model folder -> a ready interpreter for its scoring server.

Steps, each memoised so that a second call for the same inputs only hashes and stats files:
read the model's requirements -> pick the interpreter -> the project wheel -> add the scoring
server's packages -> lock (memo: no network on reuse) -> env key = hash(lock, interpreter, wheel)
-> build aside and rename, under the key's file lock.
"""
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional

from mlflow_deploy.envs.build import (BuildRequest, PipInstaller, UvInstaller, build_env,
                                      venv_python)
from mlflow_deploy.envs.cache import EnvCache, sha256_text
from mlflow_deploy.envs.errors import ManagerUnavailable
from mlflow_deploy.envs.indexes import IndexOptions
from mlflow_deploy.envs.inference import inference_requirements
from mlflow_deploy.envs.lock import Lock, requirements_input, resolve
from mlflow_deploy.envs.managers import MANAGERS, check_local, require_conda
from mlflow_deploy.envs.pythons import Interpreter, choose_interpreter
from mlflow_deploy.envs.requirements import ModelRequirements, read_model_requirements
from mlflow_deploy.envs.wheel import project_wheel

__all__ = ["Environment", "Locked", "lock_requirements", "prepare_environment",
           "environment_key"]


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


def environment_key(lock_text: str, interpreter: Interpreter, wheel_hash: str) -> str:
    return sha256_text(lock_text, interpreter.identity(), wheel_hash)[:16]


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
) -> Environment:
    """Return the environment for the model in ``model_dir``, building it if needed.

    ``refresh`` re-resolves the requirements (new versions within the model's pins).
    ``wheelhouse``: resolve and install from that folder only, offline (for packaged models).
    ``home``: the cache root (default ``$MLFLOW_DEPLOY_HOME`` or ``~/.mlflow-deploy``).
    """
    started = time.monotonic()
    say = progress or (lambda msg: None)
    if manager not in MANAGERS:
        raise ManagerUnavailable("env_manager must be one of {}, not '{}'".format(
            "|".join(MANAGERS), manager))
    model_dir = Path(model_dir).resolve()
    model = read_model_requirements(model_dir)

    if manager == "local":
        return _local(model, started)
    if manager == "conda":
        require_conda()
        raise ManagerUnavailable("env_manager conda is not supported yet by this version; use "
                                 "env_manager: uv, which builds from the same conda.yaml")

    locked = lock_requirements(model, python_version_policy, refresh, say, home=home,
                               wheelhouse=wheelhouse, uv=uv)
    cache, indexes, interpreter, wheel, lock = (locked.cache, locked.indexes, locked.interpreter,
                                                locked.wheel, locked.lock)
    added, uv = locked.added, locked.uv
    key = environment_key(lock.text, interpreter, wheel.source_hash)
    installer = UvInstaller(uv) if manager == "uv" else PipInstaller()
    request = BuildRequest(key=key, lock_text=lock.text, interpreter=interpreter, wheel=wheel,
                           indexes=indexes)
    with cache.mutex(key):
        built = build_env(cache, request, installer, say)
        cache.record_use(key, [str(model_dir)], python=str(venv_python(cache.env_dir(key))),
                         python_version=interpreter.version, base_python=interpreter.path,
                         manager=installer.name if built else
                         cache.read_metadata(key).get("manager", installer.name),
                         wheel_hash=wheel.source_hash, inputs_hash=lock.inputs_hash)
    seconds = time.monotonic() - started
    say("{} env {} in {:.1f} s".format("built" if built else "reusing", key, seconds))
    return Environment(python=str(venv_python(cache.env_dir(key))), key=key,
                       root=str(cache.env_dir(key)), manager=manager,
                       python_version=interpreter.version, lock_path=str(cache.lock_file(key)),
                       built=built, resolved=lock.resolved, seconds=seconds,
                       requirements=model.lines + added)


@dataclass
class Locked:
    """The model's requirements resolved for one interpreter: everything but the install."""

    model: ModelRequirements
    interpreter: Interpreter
    wheel: Any
    added: List[str]
    lock: Lock
    cache: EnvCache
    indexes: IndexOptions
    uv: str  # the uv that resolved it, and installs it


def lock_requirements(model, python_version_policy: str = "exact", refresh: bool = False,
                      progress: Optional[Callable[[str], None]] = None, *,
                      home: Optional[os.PathLike] = None,
                      wheelhouse: Optional[os.PathLike] = None,
                      uv: Optional[str] = None) -> Locked:
    """Pick the interpreter and resolve the model's requirements plus the scoring server's.

    ``model`` is a model folder or its ModelRequirements. Also what `mlflow-deploy check` runs to
    tell whether the pins are installable, without building anything.
    """
    say = progress or (lambda msg: None)
    if not isinstance(model, ModelRequirements):
        model = read_model_requirements(Path(model).resolve())
    uv = uv or shutil.which("uv") or _uv_beside_python()
    if uv is None:
        raise ManagerUnavailable("uv is needed to lock the model's requirements and was not "
                                 "found on PATH: pip install uv")
    cache = EnvCache(home)
    indexes = IndexOptions.wheelhouse(wheelhouse) if wheelhouse else IndexOptions.from_pip_config()
    interpreter = choose_interpreter(model.python, python_version_policy, say)
    wheel = project_wheel(cache, indexes, say, uv=uv)
    added = inference_requirements(model, wheel.requires)
    input_text = requirements_input(model.lines, added, model.source)
    lock = resolve(input_text, interpreter, indexes, cache, refresh=refresh, progress=say, uv=uv)
    return Locked(model, interpreter, wheel, added, lock, cache, indexes, uv)


def _local(model, started: float) -> Environment:
    """The current interpreter, if it has the model's packages and the server's."""
    check_local(model.lines + ["flask", "gunicorn", "mlflow-skinny" if not _has("mlflow")
                               else "mlflow"], model.source)
    return Environment(python=sys.executable, key="local", root=sys.prefix, manager="local",
                       python_version="{}.{}.{}".format(*sys.version_info[:3]),
                       seconds=time.monotonic() - started, requirements=list(model.lines))


def _has(distribution: str) -> bool:
    from importlib import metadata
    try:
        metadata.version(distribution)
        return True
    except metadata.PackageNotFoundError:
        return False


def _uv_beside_python() -> Optional[str]:
    candidate = Path(sys.executable).parent / "uv"
    return str(candidate) if candidate.exists() else None
