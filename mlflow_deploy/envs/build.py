"""Create a locked venv atomically: build it aside, then rename it into place.

Under the env's file lock: if the env appeared meanwhile (a concurrent build of the same key) it is
reused; leftovers of a killed build are removed; the venv is made in ``.building/``, installed from
the lock (hashes checked) plus the project wheel with ``--no-deps``, its scripts re-pointed at the
final path, and renamed into ``<key>/`` in one step. A failed build removes its folder, so a
half-built env is never seen.
"""
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from mlflow_deploy.envs.cache import EnvCache, atomic_write
from mlflow_deploy.envs.indexes import IndexOptions
from mlflow_deploy.envs.pythons import Interpreter
from mlflow_deploy.envs.runner import run
from mlflow_deploy.envs.wheel import ProjectWheel

__all__ = ["Installer", "UvInstaller", "PipInstaller", "build_env", "venv_python"]


def venv_python(root: Path) -> Path:
    return root / "bin" / "python"


@dataclass(frozen=True)
class BuildRequest:
    key: str
    lock_text: str
    interpreter: Interpreter
    wheel: ProjectWheel
    indexes: IndexOptions


class Installer(Protocol):
    """A backend that makes a venv and installs a lock into it (pypa/build's env Protocol idea)."""

    name: str

    def create(self, root: Path, request: BuildRequest) -> None: ...

    def install(self, root: Path, lock_path: Path, request: BuildRequest) -> None: ...


class UvInstaller:
    name = "uv"

    def __init__(self, uv: str = "uv"):
        self.uv = uv

    def create(self, root: Path, request: BuildRequest) -> None:
        run([self.uv, "venv", "--quiet", "--no-project", "--python", request.interpreter.path,
             str(root)], what="creating the venv (uv venv)", env=request.indexes.uv_env())

    def install(self, root: Path, lock_path: Path, request: BuildRequest) -> None:
        python = str(venv_python(root))
        env = request.indexes.uv_env()
        # no --compile-bytecode: compiling every module of the env took 19-42 of a 27-49 s build
        # (bench/RESULTS.md); the server writes bytecode for what it imports on its first start
        # (supervisor.server_env)
        run([self.uv, "pip", "sync", "--quiet", "--python", python,
             "--require-hashes",
             *request.indexes.uv_args(), str(lock_path)],
            what="installing the locked requirements (uv pip sync)", env=env)
        run([self.uv, "pip", "install", "--quiet", "--python", python,
             "--no-deps",
             *request.indexes.uv_args(), str(request.wheel.path)],
            what="installing the mlflow-deploy wheel (uv pip install --no-deps)", env=env)


class PipInstaller:
    """venv + pip, for machines without uv (resolution is still done by lock.py)."""

    name = "virtualenv"

    def create(self, root: Path, request: BuildRequest) -> None:
        run([request.interpreter.path, "-m", "venv", str(root)],
            what="creating the venv (python -m venv)")

    def install(self, root: Path, lock_path: Path, request: BuildRequest) -> None:
        python = str(venv_python(root))
        quiet = ["--quiet", "--disable-pip-version-check", "--no-input", "--no-compile"]
        run([python, "-m", "pip", "install", *quiet, "--require-hashes", "--no-deps",
             *request.indexes.pip_args(), "-r", str(lock_path)],
            what="installing the locked requirements (pip install --require-hashes)")
        run([python, "-m", "pip", "install", *quiet, "--no-deps", *request.indexes.pip_args(),
             str(request.wheel.path)],
            what="installing the mlflow-deploy wheel (pip install --no-deps)")


def build_env(cache: EnvCache, request: BuildRequest, installer: Installer,
              progress: Callable[[str], None] = lambda msg: None) -> bool:
    """Make sure ``<key>/`` exists. Returns True if this call built it, False if it was there.
    The caller holds ``cache.mutex(request.key)``."""
    final = cache.env_dir(request.key)
    if venv_python(final).exists():
        return False
    building = cache.building_dir()
    building.mkdir(parents=True, exist_ok=True)
    for leftover in building.glob(request.key + "-*"):  # a killed build's; we hold the lock
        shutil.rmtree(str(leftover), ignore_errors=True)
    if final.exists():  # not a venv (no interpreter): never ours to trust
        shutil.rmtree(str(final), ignore_errors=True)
    lock_path = cache.lock_file(request.key)
    atomic_write(lock_path, request.lock_text)
    scratch = Path(tempfile.mkdtemp(prefix=request.key + "-", dir=str(building)))
    os.chmod(str(scratch), 0o755)  # mkdtemp's 0700 would hide the env from other users
    try:
        progress("creating the venv with Python {} ({})".format(request.interpreter.version,
                                                              installer.name))
        installer.create(scratch, request)
        progress("installing the locked requirements")
        installer.install(scratch, lock_path, request)
        _repoint_scripts(scratch, final)
        os.rename(str(scratch), str(final))
    except BaseException:
        shutil.rmtree(str(scratch), ignore_errors=True)
        raise
    return True


def _repoint_scripts(scratch: Path, final: Path) -> None:
    """Console scripts and activate files name the folder they were installed into; point them
    at the final folder so ``<key>/bin/gunicorn`` works after the rename."""
    old, new = str(scratch).encode(), str(final).encode()
    for path in [scratch / "pyvenv.cfg", *(scratch / "bin").iterdir()]:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 1_000_000:
            continue
        data = path.read_bytes()
        if old in data and b"\0" not in data[:1024]:
            mode = path.stat().st_mode
            path.write_bytes(data.replace(old, new))
            os.chmod(str(path), mode)
