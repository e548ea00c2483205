"""prepare_environment: a model folder -> a ready interpreter for its scoring server.

Steps, each memoised so that a second call for the same inputs only hashes and stats files:
read the model's requirements -> pick the interpreter -> the project wheel (per-user build cache,
shared by every home) -> add the scoring server's packages -> lock (memo in the env cache: no
network on reuse) -> env key = hash(lock, interpreter, wheel) -> build aside and rename, under the
key's file lock.

From an offline package (``package=DIR``, see package.py) the lock, the interpreter's Python
version and the project wheel come from the package instead, and the installer runs offline on
its wheelhouse: no resolver, no wheel build, no network.
"""
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from mlflow_deploy.envs.build import (BuildRequest, PipInstaller, UvInstaller, build_env,
                                      venv_python)
from mlflow_deploy.envs.cache import BuildCache, EnvCache, tree_size
from mlflow_deploy.envs.errors import ManagerUnavailable, PythonNotFound
from mlflow_deploy.envs.indexes import IndexOptions
from mlflow_deploy.envs.inference import inference_requirements
from mlflow_deploy.envs.lock import Lock, environment_key, requirements_input, resolve
from mlflow_deploy.envs.managers import MANAGERS, check_local
from mlflow_deploy.envs.package import Package, check_model, read_package
from mlflow_deploy.envs.pythons import Interpreter, choose_interpreter, find_interpreters
from mlflow_deploy.envs.runner import find_uv
from mlflow_deploy.envs.requirements import ModelRequirements, read_model_requirements
from mlflow_deploy.envs.wheel import ProjectWheel, project_wheel

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
    """
    started = time.monotonic()
    say = progress or (lambda msg: None)
    if manager not in MANAGERS:
        raise ManagerUnavailable("env_manager must be one of {}, not '{}'".format(
            "|".join(MANAGERS), manager))
    model_dir = Path(model_dir).resolve()
    model_ref = model_ref or str(model_dir)

    if package is not None and manager not in ("uv", "virtualenv"):
        raise ManagerUnavailable("a package is installed with env_manager uv or virtualenv")
    if manager == "conda":  # reads conda.yaml itself: conda packages need no PyPI name there
        from mlflow_deploy.envs.conda import prepare_conda
        return prepare_conda(model_dir, refresh, say, started, model_ref, home=home, uv=uv,
                             wheelhouse=wheelhouse)
    model = read_model_requirements(model_dir)
    if manager == "local":
        return _local(model, started)
    if package is not None:
        return _from_package(model, read_package(package), manager, say, started, model_ref,
                             home=home, uv=uv, model_dir=model_dir)

    with contextlib.ExitStack() as hold:  # wheel and memo stay locked (shared) until installed
        locked = lock_requirements(model, python_version_policy, refresh, say, home=home,
                                   wheelhouse=wheelhouse, uv=uv, hold=hold,
                                   exclude_newer=exclude_newer)
        installer = UvInstaller(locked.uv) if manager == "uv" else PipInstaller()
        return _install(locked.cache, locked.lock.text, locked.interpreter, locked.wheel,
                        locked.indexes, installer, say, started, model_ref,
                        resolved=locked.lock.resolved, requirements=model.lines + locked.added,
                        manager=manager, metadata={"inputs_hash": locked.lock.inputs_hash},
                        model_dir=model_dir)


def _from_package(model: ModelRequirements, package: Package, manager: str,
                  say: Callable[[str], None], started: float, model_ref: str, *,
                  home: Optional[os.PathLike], uv: Optional[str],
                  model_dir: Path) -> Environment:
    check_model(package, model)
    interpreter = _package_interpreter(package, say)
    if manager == "uv":
        installer = UvInstaller(uv or find_uv())
    else:
        installer = PipInstaller()
    wheel = ProjectWheel(path=package.project_wheel,
                         source_hash=str(package.manifest.get("wheel_hash")), requires=[])
    lock_text = package.lock_path.read_text(encoding="utf-8")
    say("using the package's lock and wheelhouse (offline)")
    return _install(EnvCache(home), lock_text, interpreter, wheel,
                    IndexOptions.wheelhouse(package.wheelhouse), installer, say, started,
                    model_ref, resolved=False, requirements=list(model.lines), manager=manager,
                    metadata={"package": str(package.root)}, model_dir=model_dir)


def _package_interpreter(package: Package, say: Callable[[str], None]) -> Interpreter:
    """The package's wheels are for one Python minor version: that one, or a clear error."""
    try:
        return choose_interpreter(package.python, "exact", say)
    except PythonNotFound:
        wanted = "{}.{}".format(*package.python)
        raise PythonNotFound(
            "the package was made for Python {} and no Python {} interpreter was found here "
            "(found: {}; looked in pyenv, uv-managed pythons and PATH): install Python {}, or "
            "make the package with a Python this machine has".format(
                wanted, wanted, ", ".join(find_interpreters()) or "none", wanted)) from None


def _install(cache: EnvCache, lock_text: str, interpreter: Interpreter, wheel: ProjectWheel,
             indexes: IndexOptions, installer, say: Callable[[str], None], started: float,
             model_ref: str, *, resolved: bool, requirements: List[str], manager: str,
             metadata: Dict[str, Any], model_dir: Path) -> Environment:
    """Build the env for this lock under its key's mutex (or reuse it) and record the use."""
    key = environment_key(lock_text, interpreter, wheel.source_hash)
    request = BuildRequest(key=key, lock_text=lock_text, interpreter=interpreter, wheel=wheel,
                           indexes=indexes, model_dir=model_dir)
    with cache.mutex(key):
        built = build_env(cache, request, installer, say)
        if built:  # a venv does not change once built: measure it once, for `env list`
            metadata = dict(metadata, size_bytes=tree_size(cache.env_dir(key)))
        cache.record_use(key, [model_ref], python=str(venv_python(cache.env_dir(key))),
                         python_version=interpreter.version, base_python=interpreter.path,
                         manager=installer.name if built else
                         cache.read_metadata(key).get("manager", installer.name),
                         wheel_hash=wheel.source_hash, **metadata)
    seconds = time.monotonic() - started
    say("{} env {} in {:.1f} s".format("built" if built else "reusing", key, seconds))
    return Environment(python=str(venv_python(cache.env_dir(key))), key=key,
                       root=str(cache.env_dir(key)), manager=manager,
                       python_version=interpreter.version, lock_path=str(cache.lock_file(key)),
                       built=built, resolved=resolved, seconds=seconds,
                       requirements=requirements)


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
                      uv: Optional[str] = None,
                      hold: Optional[contextlib.ExitStack] = None,
                      exclude_newer: Optional[str] = None) -> Locked:
    """Pick the interpreter and resolve the model's requirements plus the scoring server's.

    ``model`` is a model folder or its ModelRequirements. Also what `mlflow-deploy check` runs to
    tell whether the pins are installable, without building anything. ``hold``: keep the project
    wheel (from the per-user build cache) and the resolution memo locked (shared) against ``env
    prune`` until that stack closes.
    """
    say = progress or (lambda msg: None)
    if not isinstance(model, ModelRequirements):
        model = read_model_requirements(Path(model).resolve())
    uv = uv or find_uv()
    cache = EnvCache(home)
    indexes = IndexOptions.wheelhouse(wheelhouse) if wheelhouse else \
        IndexOptions.from_pip_config(exclude_newer)
    interpreter = choose_interpreter(model.python, python_version_policy, say)
    wheel = project_wheel(BuildCache(), indexes, say, uv=uv, hold=hold)
    added = inference_requirements(model, wheel.requires)
    input_text = requirements_input(model.lines, added, model.source)
    lock = resolve(input_text, interpreter, indexes, cache, refresh=refresh, progress=say, uv=uv,
                   hold=hold)
    return Locked(model, interpreter, wheel, added, lock, cache, indexes, uv)


def _local(model, started: float) -> Environment:
    """The current interpreter, if it has the model's packages and the server's. setuptools is
    left out: MLflow lists it among python_env.yaml's build dependencies, which a venv made by uv
    lacks and a running model does not need."""
    runtime = [line for line in model.lines if not _is_setuptools(line)]
    check_local(runtime + ["flask", "gunicorn", "mlflow-skinny" if not _has("mlflow")
                           else "mlflow"], model.source)
    return Environment(python=sys.executable, key="local", root=sys.prefix, manager="local",
                       python_version="{}.{}.{}".format(*sys.version_info[:3]),
                       seconds=time.monotonic() - started, requirements=list(model.lines))


def _is_setuptools(line: str) -> bool:
    from packaging.requirements import InvalidRequirement, Requirement
    try:
        return Requirement(line).name.lower() == "setuptools"
    except InvalidRequirement:
        return False


def _has(distribution: str) -> bool:
    from importlib import metadata
    try:
        metadata.version(distribution)
        return True
    except metadata.PackageNotFoundError:
        return False
