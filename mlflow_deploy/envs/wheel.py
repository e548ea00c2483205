"""The project's own wheel, built from this checkout and cached by a hash of its sources.

Every model env gets it with ``--no-deps`` (its dependencies go through the resolver with the
model's pins instead), and its hash is part of the env's cache key, so an edited ``scoring/`` never
runs stale (DESIGN §2). Only what runs in a model env is hashed: ``scoring/`` (a leaf: it imports
nothing else of ours, tests/test_imports.py keeps it so), the package's ``__init__`` and the build
files; an edit to the control plane does not rebuild every env. Building takes a few seconds;
reuse only hashes the sources (milliseconds).
"""
import email.parser
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import mlflow_deploy
from mlflow_deploy.envs.cache import EnvCache, sha256_text
from mlflow_deploy.envs.errors import BuildFailed
from mlflow_deploy.envs.indexes import IndexOptions
from mlflow_deploy.envs.runner import run

__all__ = ["ProjectWheel", "project_wheel", "project_root", "source_hash"]

_BUILD_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in")
#: what a model env runs of ours, relative to the checkout
_RUNTIME = ("mlflow_deploy/__init__.py", "mlflow_deploy/scoring")
_NOT_SOURCES = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*", "build", "*.egg-info")


@dataclass(frozen=True)
class ProjectWheel:
    path: Path
    source_hash: str  # hash of the sources it was built from: part of every env's key
    requires: List[str]  # its Requires-Dist without extras: the scoring server's dependencies


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


def project_wheel(cache: EnvCache, indexes: IndexOptions, progress=lambda msg: None,
                  uv: str = "uv") -> ProjectWheel:
    """The cached wheel for the current sources, building it (under a lock) if needed."""
    root = project_root()
    digest = source_hash(root)
    target = cache.wheel_dir(digest)
    found = _cached(target, digest)
    if found:
        return found
    with cache.mutex("wheel"):
        found = _cached(target, digest)
        if found:
            return found
        progress("building the mlflow-deploy wheel from {}".format(root))
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".tmp-", dir=str(target.parent)))
        sources = Path(tempfile.mkdtemp(prefix=".src-", dir=str(target.parent)))
        try:
            run([uv, "build", "--wheel", "--quiet", "--out-dir", str(scratch), *indexes.uv_args(),
                 str(_clean_copy(root, sources))],
                what="building the mlflow-deploy wheel (uv build)", env=indexes.uv_env())
            os.replace(str(scratch), str(target))
        finally:
            shutil.rmtree(str(scratch), ignore_errors=True)
            shutil.rmtree(str(sources), ignore_errors=True)
        found = _cached(target, digest)
        if not found:
            raise BuildFailed("uv build produced no wheel in {}".format(target))
        return found


def _clean_copy(root: Path, dst: Path) -> Path:
    """The package and its build files, copied: setuptools builds in the source's ``build/``,
    where files deleted from the checkout would linger into the wheel, and where two caches
    building at once would collide."""
    shutil.copytree(str(root / "mlflow_deploy"), str(dst / "mlflow_deploy"), ignore=_NOT_SOURCES)
    for name in _BUILD_FILES + ("README.md",):
        if (root / name).is_file():
            shutil.copy2(str(root / name), str(dst / name))
    return dst


def _cached(target: Path, digest: str) -> Optional[ProjectWheel]:
    wheels = sorted(target.glob("*.whl")) if target.is_dir() else []
    if not wheels:
        return None
    return ProjectWheel(path=wheels[0], source_hash=digest, requires=wheel_requires(wheels[0]))


def wheel_requires(path: Path) -> List[str]:
    """Requires-Dist of a wheel, leaving out those only wanted by an extra."""
    with zipfile.ZipFile(str(path)) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))
    return [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
