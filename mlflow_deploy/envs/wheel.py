"""The project's own wheel, built from the installed sources and cached by a hash of them.

Every model env gets it with ``--no-deps`` (its dependencies go through the resolver with the
model's pins instead), and its hash is part of the env's cache key, so an edited ``scoring/`` never
runs stale. Only what runs in a model env is hashed: ``scoring/`` (a leaf: it imports
nothing else of ours, tests/test_imports.py keeps it so), the package's ``__init__`` and the build
files; an edit to the control plane does not rebuild every env. Building takes a second or two;
reuse only hashes the sources (milliseconds).

The wheel is a build artifact of the sources, not of a home: it lives in the per-user build cache
(cache.BuildCache, ``$MLFLOW_DEPLOY_BUILD_CACHE``, default ``~/.cache/mlflow-deploy``) under
``wheels/<src-hash>/``, so every home and env cache shares one build. It is built aside and
renamed (cache.build_aside) under the hash's exclusive lock; a caller that passes ``hold`` keeps a
shared lock on it until the ExitStack closes (prepare_environment: until the env is installed),
so ``env prune`` never removes a wheel a live build is about to install.
"""
import contextlib
import email.parser
import functools
import hashlib
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from packaging.requirements import Requirement
from packaging.utils import parse_wheel_filename

import mlflow_deploy
from mlflow_deploy.envs.cache import BuildCache, build_aside, memoised, sha256_text
from mlflow_deploy.envs.errors import BuildFailed
from mlflow_deploy.envs.indexes import IndexOptions
from mlflow_deploy.envs.requirements import canonical_name
from mlflow_deploy.envs.runner import find_uv, run

__all__ = ["ProjectWheel", "project_wheel", "project_root", "source_hash", "wheel_requirement"]

_BUILD_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in")
#: what a model env runs of ours, relative to the checkout
_RUNTIME = ("mlflow_deploy/__init__.py", "mlflow_deploy/scoring")
#: extras of pyproject.toml installed into every model env: optional for the scoring server (it
#: works without them), but where a wheel exists they make it faster (orjson: a 1000-row request
#: costs 40% more CPU with the json module) or let a batch job read what Azure's no-code MLflow
#: batch reads (pyarrow: CSV and Parquet, read typed and single-threaded; Pillow: images); the same
#: env serves a model online and in batch, so both get them
MODEL_ENV_EXTRAS = ("fast", "batch")
#: dependencies of the control plane that a model env never needs
CONTROL_PLANE_ONLY = {"uv", "aiohttp", "uvloop", "httptools", "rich"}
_NOT_SOURCES = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*", "build", "*.egg-info")


@dataclass(frozen=True)
class ProjectWheel:
    path: Path
    source_hash: str  # hash of the sources it was built from: part of every env's key
    requires: List[str]  # what the scoring server needs in a model env (wheel_requires)


def project_root() -> Path:
    """The checkout holding mlflow_deploy/ and pyproject.toml."""
    root = Path(mlflow_deploy.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise BuildFailed("cannot build the mlflow-deploy wheel: {} is not a source checkout "
                          "(no pyproject.toml beside the mlflow_deploy package)".format(root))
    return root


def source_hash(root: Optional[Path] = None) -> str:
    """Hash of the files a model env runs (not caches) and of the build configuration."""
    root = root or project_root()
    parts = []
    for runtime in _RUNTIME:
        top = root / runtime
        walked = [(str(top.parent), [], [top.name])] if top.is_file() else os.walk(str(top))
        for directory, dirs, files in walked:
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            for name in sorted(files):
                if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                    continue
                path = Path(directory) / name
                parts += [str(path.relative_to(root)), path.read_bytes()]
    for name in _BUILD_FILES:
        if (root / name).is_file():
            parts += [name, (root / name).read_bytes()]
    return sha256_text(*parts)[:16]


def project_wheel(build: Optional[BuildCache] = None, indexes: Optional[IndexOptions] = None,
                  progress=lambda msg: None, uv: Optional[str] = None,
                  hold: Optional[contextlib.ExitStack] = None) -> ProjectWheel:
    """The cached wheel for the current sources, building it (under its lock) if needed.

    ``build``: the build cache (default: the user's). ``hold``: keep a shared lock on the wheel
    until that ExitStack closes, so that ``env prune`` leaves it alone while it is installed.
    """
    if hold is None:  # the lock only while the wheel is looked up
        with contextlib.ExitStack() as brief:
            return project_wheel(build, indexes, progress, uv, hold=brief)
    build = build or BuildCache()
    indexes = indexes or IndexOptions.from_pip_config()
    uv = uv or find_uv()
    root = project_root()
    digest = source_hash(root)
    target = build.wheel_dir(digest)
    path, _ = memoised(functools.partial(build.wheel_mutex, digest), lambda: _wheel_file(target),
                       lambda: _build(root, digest, target, indexes, progress, uv), hold)
    return _cached(target, path, digest)


def _build(root: Path, digest: str, target: Path, indexes: IndexOptions, progress,
           uv: str) -> None:
    """uv build into a scratch folder beside ``target`` (cache.build_aside), from a copy of the
    sources inside it. The caller holds the hash's exclusive lock."""
    progress("building the mlflow-deploy wheel from {}".format(root))
    with build_aside(target, target.parent, ".tmp-{}-".format(digest)) as scratch:
        sources = _clean_copy(root, scratch / "src")
        run([uv, "build", "--wheel", "--quiet", "--out-dir", str(scratch), *indexes.uv_args(),
             str(sources)],
            what="building the mlflow-deploy wheel (uv build)", env=indexes.uv_env())
        shutil.rmtree(str(sources))
        if not list(scratch.glob("*.whl")):
            raise BuildFailed("uv build produced no wheel in {}".format(scratch))


def wheel_requirement(path: Path) -> str:
    """A requirements-file line installing the wheel at ``path`` with its sha256, for an installer
    running with --require-hashes (``name @ file:///...whl --hash=sha256:...``)."""
    path = Path(path).resolve()
    name = parse_wheel_filename(path.name)[0]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return "{} @ {} --hash=sha256:{}\n".format(name, path.as_uri(), digest)


def _clean_copy(root: Path, dst: Path) -> Path:
    """The package and its build files, copied: setuptools builds in the source's ``build/``,
    where files deleted from the checkout would linger into the wheel, and where two caches
    building at once would collide."""
    shutil.copytree(str(root / "mlflow_deploy"), str(dst / "mlflow_deploy"), ignore=_NOT_SOURCES)
    for name in _BUILD_FILES + ("README.md",):
        if (root / name).is_file():
            shutil.copy2(str(root / name), str(dst / name))
    return dst


def _wheel_file(target: Path) -> Optional[Path]:
    wheels = sorted(target.glob("*.whl")) if target.is_dir() else []
    return wheels[0] if wheels else None


def _cached(target: Path, path: Path, digest: str) -> ProjectWheel:
    """The wheel ``path`` in ``target`` (held: the caller has its lock), its folder stamped as used
    now: ``env prune --older-than`` reads that stamp."""
    with contextlib.suppress(OSError):
        os.utime(str(target))
    return ProjectWheel(path=path, source_hash=digest, requires=wheel_requires(path))


def wheel_requires(path: Path) -> List[str]:
    """The wheel's Requires-Dist that a model env gets: the plain ones but the control plane's own
    (``CONTROL_PLANE_ONLY``), and those of ``MODEL_ENV_EXTRAS``, written without their ``extra ==``
    marker; the other extras' are left out. Other markers (``python_version``) stay for the
    resolver to evaluate against the model's Python."""
    with zipfile.ZipFile(str(path)) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))
    requires = []
    for line in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        if canonical_name(requirement.name) in CONTROL_PLANE_ONLY:
            continue
        if requirement.marker is None or "extra" not in str(requirement.marker):
            requires.append(line)
        elif any(requirement.marker.evaluate({"extra": e}) for e in MODEL_ENV_EXTRAS):
            requires.append("{}{}".format(requirement.name, requirement.specifier))
    return requires
