"""Create a locked venv atomically: build it aside, then rename it into place.

Under the env's file lock: if the env appeared meanwhile (a concurrent build of the same key) it is
reused; leftovers of a killed build are removed; the venv is made in ``.building/``, installed from
the lock plus the project wheel in one installer call (every hash checked, the wheel's too;
nothing resolved, so the wheel's dependencies are the lock's: ``--no-deps`` semantics), its scripts
re-pointed at the final path, and renamed into ``<key>/`` in one step, then smoke-tested there
(``smoke_test``: import the server, load the model) while the lock is still held. A failed build
or smoke test removes its folder, so a half-built env is never seen or reused.
"""
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Protocol

from mlflow_deploy.envs.cache import EnvCache, atomic_write
from mlflow_deploy.envs.errors import BuildFailed
from mlflow_deploy.envs.indexes import IndexOptions
from mlflow_deploy.envs.pythons import Interpreter
from mlflow_deploy.envs.runner import find_uv, readable_tail, run, run_unchecked
from mlflow_deploy.envs.wheel import ProjectWheel, wheel_requirement

__all__ = ["Installer", "UvInstaller", "PipInstaller", "build_env", "venv_python"]


#: the project wheel's requirements file, inside the venv while it is being installed
_WHEEL_REQUIREMENT = "mlflow-deploy-wheel.txt"


def venv_python(root: Path) -> Path:
    return root / "bin" / "python"


@dataclass(frozen=True)
class BuildRequest:
    key: str
    lock_text: str
    interpreter: Interpreter
    wheel: ProjectWheel
    indexes: IndexOptions
    model_dir: Optional[Path] = None  # the MLflow model the smoke test loads (None: no model)


class Installer(Protocol):
    """A backend that makes a venv and installs a lock into it (pypa/build's env Protocol idea)."""

    name: str

    def create(self, root: Path, request: BuildRequest) -> None: ...

    def install(self, root: Path, lock_path: Path, request: BuildRequest) -> None: ...


class UvInstaller:
    name = "uv"

    def __init__(self, uv: Optional[str] = None):
        self.uv = uv or find_uv()

    def create(self, root: Path, request: BuildRequest) -> None:
        run([self.uv, "venv", "--quiet", "--no-project", "--python", request.interpreter.path,
             str(root)], what="creating the venv (uv venv)", env=request.indexes.uv_env())

    def install(self, root: Path, lock_path: Path, request: BuildRequest) -> None:
        # no --compile-bytecode: compiling every module of the env took 19-42 of a 27-49 s build
        # (bench/RESULTS.md); the server writes bytecode for what it imports on its first start
        # (supervisor.server_env). `uv pip sync` installs exactly the files' lines, resolving
        # nothing: the wheel goes in with its hash and without its dependencies, saving the
        # separate `uv pip install --no-deps` call (about 0.13 s: one more uv start and env scan)
        args = [self.uv, "pip", "sync", "--quiet", "--python", str(venv_python(root)),
                "--require-hashes", *request.indexes.uv_args(), str(lock_path),
                str(_wheel_file(root, request))]
        what = "installing the locked requirements and the mlflow-deploy wheel (uv pip sync)"
        env = request.indexes.uv_env()
        if not request.indexes.offline:
            # Every file is pinned by its hash, so when uv's cache holds them all (a warm cache)
            # it installs them without asking the indexes again: uv revalidates each package's
            # index page otherwise, 0.4-0.6 s of a 1.1 s sync here. When the cache lacks one,
            # uv says so in about 0.1 s, before installing anything, and we install online.
            try:
                run(args + ["--offline"], what=what, env=env)
                return
            except BuildFailed:
                pass
        run(args, what=what, env=env)


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
             *request.indexes.pip_args(), "-r", str(lock_path),
             "-r", str(_wheel_file(root, request))],
            what="installing the locked requirements and the mlflow-deploy wheel "
                 "(pip install --require-hashes --no-deps)")


def _wheel_file(root: Path, request: BuildRequest) -> Path:
    """A requirements file naming the project wheel with its hash, written into the venv being
    built (removed with it if the build fails; deleted by build_env before the rename)."""
    path = root / _WHEEL_REQUIREMENT
    path.write_text(wheel_requirement(request.wheel.path), encoding="utf-8")
    return path


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
        (scratch / _WHEEL_REQUIREMENT).unlink(missing_ok=True)
        _repoint_scripts(scratch, final)
        os.rename(str(scratch), str(final))
    except BaseException:
        shutil.rmtree(str(scratch), ignore_errors=True)
        raise
    # in place, so the bytecode it writes serves the first server start (and names real paths)
    progress("checking that the new env imports the server and loads the model")
    try:
        smoke_test(venv_python(final), request.model_dir, request.lock_text,
                   cache.smoke_log(request.key))
    except BaseException:
        cache.remove(request.key)
        raise
    return True


#: the smoke test's own timeout: loading a large model may take minutes
SMOKE_TIMEOUT_S = 900


def smoke_test(python: Path, model_dir: Optional[Path], lock_text: str, log_path: Path) -> None:
    """Run ``mlflow_deploy.scoring.smoke`` with the env's interpreter; on failure raise
    BuildFailed with the first import error, the locked versions of the packages it names, and
    the path of the full output."""
    args = [str(python), "-m", "mlflow_deploy.scoring.smoke"]
    if model_dir is not None and (Path(model_dir) / "MLmodel").is_file():
        args.append(str(model_dir))
    returncode, output = run_unchecked(args, what="the new env's smoke test",
                                       timeout=SMOKE_TIMEOUT_S,
                                       env={"PYTHONNOUSERSITE": "1", "PYTHONPATH": ""})
    if returncode == 0:
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("$ {}\n{}".format(" ".join(args), output), encoding="utf-8")
    reason = _first_error(output)
    involved = _locked_versions(lock_text, reason + " " + " ".join(
        re.findall(r"site-packages/([A-Za-z_][\w]*)/", output)))
    raise BuildFailed("the new environment cannot run the scoring server: {}{} (full output: {}; "
                      "the env was not kept)".format(
                          reason, "; packages: " + ", ".join(involved) if involved else "",
                          log_path))


def _first_error(output: str) -> str:
    """The exception line of the first traceback (``ImportError: cannot import name ...``)."""
    for line in output.splitlines():
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*:", line):
            return line.strip()[:500]
    return readable_tail(output).strip().splitlines()[-1].strip()[:500]


def _locked_versions(lock_text: str, text: str) -> List[str]:
    """``name==version`` of the locked packages ``text`` names (the error line and the packages
    its traceback runs through), and of mlflow itself."""
    words = set(re.findall(r"[A-Za-z][\w-]*", text.replace(".", " ").lower().replace("_", "-")))
    found = []
    for match in re.finditer(r"^([A-Za-z0-9][\w.-]*)==(\S+)", lock_text, re.M):
        name = match.group(1).lower().replace("_", "-")
        if name in words or name in ("mlflow", "mlflow-skinny"):
            found.append("{}=={}".format(name, match.group(2)))
    return found


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
