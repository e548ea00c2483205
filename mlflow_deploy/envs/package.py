"""Offline packages: a model with its lock and every wheel the lock names, so that its environment
can be built later with no network at all (``mlflow-deploy package``, then
``prepare_environment(model_dir, package=DIR)``).

Layout of a package folder::

    model/              the MLflow model (the caller writes it: envs/ does not resolve model URIs)
    requirements.lock   the lock with hashes, for one Python minor version on one platform
    wheelhouse/         a wheel for every locked requirement, plus the mlflow-deploy wheel
    package.json        manifest: format, Python, platform, model URI, mlflow-deploy version, the
                        project wheel and its source hash, the model's requirements hash, env key

Wheels are fetched by pip (uv has no download command) running on the target interpreter, so pip
picks the wheels that interpreter can install and reads the machine's pip configuration itself.
A requirement published only as an sdist is built into a wheel on the way, and the packaged lock
gains that wheel's hash: the offline install still checks every hash.
"""
import hashlib
import json
import re
import shutil
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

import mlflow_deploy
from mlflow_deploy.envs.environment import venv_python
from mlflow_deploy.envs.cache import atomic_write, sha256_text
from mlflow_deploy.envs.errors import BuildFailed, PackageError
from mlflow_deploy.envs.lock import environment_key
from mlflow_deploy.envs.requirements import ModelRequirements
from mlflow_deploy.envs.runner import run

__all__ = ["FORMAT_VERSION", "MANIFEST", "LOCK", "WHEELHOUSE", "Package", "write_package",
           "read_package", "requirements_hash"]

FORMAT_VERSION = 1
MANIFEST = "package.json"
LOCK = "requirements.lock"
WHEELHOUSE = "wheelhouse"
MODEL = "model"

#: What installing needs from the manifest (the rest is for people and `env show`).
_MANIFEST_KEYS = ("python", "platform", "project_wheel", "wheel_hash", "requirements_hash")
_REQUIREMENT_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class Package:
    root: Path
    manifest: Dict[str, Any]

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK

    @property
    def wheelhouse(self) -> Path:
        return self.root / WHEELHOUSE

    @property
    def model_dir(self) -> Path:
        return self.root / MODEL

    @property
    def project_wheel(self) -> Path:
        return self.wheelhouse / self.manifest["project_wheel"]

    @property
    def python(self) -> Tuple[int, int]:
        major, minor = str(self.manifest["python"]).split(".")[:2]
        return int(major), int(minor)


def requirements_hash(model: ModelRequirements) -> str:
    """What ties a package to its model: the requirement lines and the Python asked for."""
    return sha256_text(repr(model.python), *model.lines)[:16]


def write_package(locked, output: Path, *, model_uri: Optional[str] = None,
                  progress: Optional[Callable[[str], None]] = None) -> Package:
    """Write the lock, the wheelhouse and the manifest of ``locked`` (a ``Locked`` from
    ``lock_requirements``) into the folder ``output``; the caller puts the model in ``model/``."""
    say = progress or (lambda msg: None)
    output = Path(output)
    wheelhouse = output / WHEELHOUSE
    wheelhouse.mkdir(parents=True, exist_ok=True)
    interpreter = locked.interpreter
    say("downloading a wheel for each of the {} locked requirements for Python {} (pip wheel)"
        .format(len(_lock_entries(locked.lock.text)), interpreter.version))
    _pip_wheel(locked, wheelhouse)
    lock_text = _with_wheel_hashes(_without_options(locked.lock.text), wheelhouse)
    shutil.copy2(str(locked.wheel.path), str(wheelhouse / locked.wheel.path.name))
    atomic_write(output / LOCK, lock_text)
    manifest = {
        "format": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model_uri": model_uri,
        "mlflow_deploy_version": mlflow_deploy.__version__,
        "python": interpreter.minor_str,
        "python_version": interpreter.version,
        "implementation": interpreter.implementation,
        "platform": sysconfig.get_platform(),
        "project_wheel": locked.wheel.path.name,
        "wheel_hash": locked.wheel.source_hash,
        "requirements_hash": requirements_hash(locked.model),
        # the key the env gets when built from this package with this interpreter
        "env_key": environment_key(lock_text, interpreter, locked.wheel.source_hash),
    }
    atomic_write(output / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return Package(output, manifest)


def read_package(folder) -> Package:
    """The package in ``folder``, after checking it is complete and usable on this machine."""
    root = Path(folder).expanduser().resolve()
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackageError("the package folder has no {}: it was not written by `mlflow-deploy "
                           "package`".format(MANIFEST)) from None
    except (OSError, ValueError) as exc:
        raise PackageError("the package's {} is not readable JSON ({})".format(
            MANIFEST, type(exc).__name__)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        raise PackageError("the package's {} has format {}; this mlflow-deploy reads format {}"
                           .format(MANIFEST, manifest.get("format") if isinstance(manifest, dict)
                                   else None, FORMAT_VERSION))
    missing = [k for k in _MANIFEST_KEYS if not manifest.get(k)]
    if missing:
        raise PackageError("the package's {} lacks {}".format(
            MANIFEST, ", ".join("'{}'".format(k) for k in missing)))
    package = Package(root, manifest)
    for needed in (package.lock_path, package.project_wheel):
        if not needed.is_file():
            raise PackageError("the package is incomplete: {} is missing".format(
                needed.relative_to(root)))
    if manifest.get("platform") != sysconfig.get_platform():
        raise PackageError("the package's wheels are for {}, not for this machine ({}): make the "
                           "package on a machine like this one".format(
                               manifest.get("platform"), sysconfig.get_platform()))
    return package


def check_model(package: Package, model: ModelRequirements) -> None:
    """The model folder must ask for what the package was made for (any copy of it will do)."""
    if requirements_hash(model) != package.manifest.get("requirements_hash"):
        raise PackageError("the model's requirement files ({}) are not those the package was made "
                           "for: use the package's own model/ folder, or package this model"
                           .format(model.source))


def _pip_wheel(locked, wheelhouse: Path) -> None:
    """pip wheel --no-deps --require-hashes on the lock, with a pip for the target interpreter
    (a throwaway venv seeded by uv: the interpreter itself may have no pip, or an old one)."""
    interpreter, indexes = locked.interpreter, locked.indexes
    with tempfile.TemporaryDirectory(prefix="mlflow-deploy-package-") as scratch:
        venv = Path(scratch) / "pip"
        run([locked.uv, "venv", "--seed", "--quiet", "--no-project", "--python", interpreter.path,
             str(venv), *indexes.uv_args()],
            what="making a pip for Python {} (uv venv --seed)".format(interpreter.version),
            env=indexes.uv_env())
        lock_in = Path(scratch) / "requirements.lock"
        lock_in.write_text(locked.lock.text, encoding="utf-8")  # with the model's index options
        try:
            run([str(venv_python(venv)), "-m", "pip", "wheel", "--quiet", "--no-input",
                 "--disable-pip-version-check", "--no-deps", "--require-hashes",
                 "--wheel-dir", str(wheelhouse), *indexes.pip_args(), "-r", str(lock_in)],
                what="downloading the locked requirements' wheels (pip wheel)")
        except BuildFailed as exc:
            failed = sorted(set(re.findall(r"Failed building wheel for ([A-Za-z0-9][\w.\-]*)",
                                           str(exc))))
            if not failed:
                raise
            raise BuildFailed(
                "no wheel could be built for the locked requirement(s) {} (published as source "
                "only, and building it failed here); pin a version that has a wheel for Python "
                "{}. pip said:\n{}".format(", ".join("'{}'".format(n) for n in failed),
                                           interpreter.minor_str, str(exc).split("\n", 1)[-1])
            ) from None


def _without_options(lock_text: str) -> str:
    """The lock without the model's index options: a package installs from its wheelhouse."""
    return "".join(line for line in lock_text.splitlines(keepends=True)
                   if not line.startswith("-"))


def _lock_entries(lock_text: str) -> Dict[str, Set[str]]:
    """Canonical name of each locked requirement -> its hashes."""
    entries: Dict[str, Set[str]] = {}
    current: Optional[Set[str]] = None
    for line in lock_text.splitlines():
        match = _REQUIREMENT_LINE.match(line)
        if match:
            current = entries.setdefault(canonicalize_name(match.group(1)), set())
        if current is not None:
            current.update(_HASH.findall(line))
    return entries


def _with_wheel_hashes(lock_text: str, wheelhouse: Path) -> str:
    """Check that every locked requirement has its wheel, and add the hash of each wheel the lock
    does not list (built here from an sdist) so that hash checking still covers it."""
    wheels: Dict[str, Path] = {}
    for path in wheelhouse.glob("*.whl"):
        try:
            wheels[canonicalize_name(parse_wheel_filename(path.name)[0])] = path
        except InvalidWheelFilename:
            continue
    entries = _lock_entries(lock_text)
    missing = sorted(set(entries) - set(wheels))
    if missing:
        raise BuildFailed("pip left no wheel for the locked requirement(s) {}".format(
            ", ".join("'{}'".format(n) for n in missing)))
    extra: Dict[str, str] = {}
    for name in entries:
        digest = hashlib.sha256(wheels[name].read_bytes()).hexdigest()
        if digest not in entries[name]:
            extra[name] = digest
    out: List[str] = []
    for line in lock_text.splitlines(keepends=True):
        out.append(line)
        match = _REQUIREMENT_LINE.match(line)
        if match and canonicalize_name(match.group(1)) in extra:
            digest = extra[canonicalize_name(match.group(1))]
            if not line.rstrip("\n").endswith("\\"):
                out[-1] = line.rstrip("\n") + " \\\n"
                out.append("    --hash=sha256:{}\n".format(digest))
            else:
                out.append("    --hash=sha256:{} \\\n".format(digest))
    return "".join(out)
