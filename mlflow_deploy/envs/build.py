"""Building an env into the cache, shared by every manager that builds one (uv, virtualenv, conda),
and the two venv managers themselves.

``EnvBuilder.prepare``: the manager's ``plan`` says what to build (a BuildContext: the lock, the
Python, our wheel, the key), then ``build_env``, under the key's file lock: if the env appeared
meanwhile (a concurrent build of the same key) it is reused; else the manager's ``build`` makes it
in a scratch folder of ``.building/`` that is renamed into ``<key>/`` in one step
(cache.build_aside: a killed build's leftovers are removed first, a failed build's folder is
removed, so a half-built env is never seen or reused), and a venv is then smoke-tested in place
(``smoke_test``: import the server, load the model) while the lock is still held; a failed smoke
test removes the env.

The venv managers install the lock plus the project wheel in one installer call (every hash
checked, the wheel's too; nothing resolved, so the wheel's dependencies are the lock's: ``--no-deps``
semantics) and re-point the venv's scripts at the final path before the rename.
"""
import contextlib
import os
import re
import time
from pathlib import Path
from typing import List, Optional

from mlflow_deploy.envs.cache import BuildCache, EnvCache, atomic_write, build_aside
from mlflow_deploy.envs.environment import BuildContext, Environment, Request, venv_python
from mlflow_deploy.envs.errors import BuildFailed, PythonNotFound
from mlflow_deploy.envs.indexes import IndexOptions
from mlflow_deploy.envs.lock import environment_key, lock_requirements
from mlflow_deploy.envs.package import Package, check_model, read_package
from mlflow_deploy.envs.pythons import (Interpreter, choose_interpreter, find_interpreters,
                                        parse_python_version)
from mlflow_deploy.envs.requirements import ModelRequirements, read_model_requirements
from mlflow_deploy.envs.runner import find_uv, readable_tail, run, run_unchecked
from mlflow_deploy.envs.wheel import ProjectWheel, project_wheel, wheel_requirement

__all__ = ["EnvBuilder", "UvManager", "VirtualenvManager", "build_env", "smoke_test",
           "venv_python", "python_version_of"]


#: the project wheel's requirements file, inside the venv while it is being installed
_WHEEL_REQUIREMENT = "mlflow-deploy-wheel.txt"


class EnvBuilder:
    """The EnvManager of a manager that builds its envs into the cache: ``plan`` (what to build),
    then ``build_env``, which calls ``build`` (how) when the env is not there yet. A manager object
    serves one prepare_environment call: it keeps the tools its plan found for its build."""

    name: str
    installs_packages = False
    smoke_tested = True  # a new env runs smoke_test before it is used

    def prepare(self, request: Request) -> Environment:
        with contextlib.ExitStack() as hold:  # wheel and memo stay locked (shared) until installed
            return build_env(self, self.plan(request, hold))

    def plan(self, request: Request, hold: contextlib.ExitStack) -> BuildContext:
        """Everything but the install (the lock, our wheel, the key). ``hold``: what must stay
        locked (shared) against ``env prune`` until the env is installed."""
        raise NotImplementedError

    def build(self, root: Path, ctx: BuildContext) -> Optional[str]:
        """Make the env in the empty folder ``root``, so that it works once renamed to
        ``ctx.final``. Returns its Python version if the build asked the env for it."""
        raise NotImplementedError


def build_env(manager: EnvBuilder, ctx: BuildContext) -> Environment:
    """Reuse the env of ``ctx`` or build it with ``manager``, under the key's mutex, and record
    this use in its metadata."""
    cache, key, say = ctx.cache, ctx.key, ctx.request.progress
    python = venv_python(ctx.final)
    with cache.mutex(key):
        built = not python.exists()
        version = ctx.python_version
        if built:
            atomic_write(ctx.lock_path, ctx.lock_text)
            with build_aside(ctx.final, cache.building_dir(), key + "-") as scratch:
                version = manager.build(scratch, ctx) or version
            if manager.smoke_tested:
                _smoke_test_in_place(ctx)
        recorded = {} if built else cache.read_metadata(key)
        version = version or recorded.get("python_version") or python_version_of(python)
        fields = dict(ctx.metadata, python=str(python), python_version=version,
                      # uv and virtualenv share keys: the env keeps the manager that built it
                      manager=recorded.get("manager", manager.name),
                      wheel_hash=ctx.wheel.source_hash)
        cache.record_use(key, [ctx.request.model_ref], [str(ctx.request.model_dir)], **fields)
    seconds = time.monotonic() - ctx.request.started
    say("{} env {} in {:.1f} s".format("built" if built else "reusing", key, seconds))
    return Environment(python=str(python), key=key, root=str(ctx.final), manager=manager.name,
                       python_version=version, lock_path=str(ctx.lock_path), built=built,
                       resolved=ctx.resolved, seconds=seconds,
                       requirements=list(ctx.requirements))


def _smoke_test_in_place(ctx: BuildContext) -> None:
    """In place, so the bytecode it writes serves the first server start (and names real paths);
    a failure removes the env."""
    ctx.request.progress("checking that the new env imports the server and loads the model")
    try:
        smoke_test(venv_python(ctx.final), ctx.request.model_dir, ctx.lock_text,
                   ctx.cache.smoke_log(ctx.key))
    except BaseException:
        ctx.cache.remove(ctx.key)
        raise


def python_version_of(python: Path) -> str:
    """The version of the interpreter ``python`` (and that it runs)."""
    return run([str(python), "-c", "import platform; print(platform.python_version())"],
               what="asking the env's Python for its version").strip().splitlines()[-1]


# --- the venv managers -----------------------------------------------------------------------

class VenvManager(EnvBuilder):
    """A venv with the Python the model asks for, from the lock uv resolves for it (or from an
    offline package's lock and wheelhouse, with the Python it was made for). ``create`` and
    ``install`` are the installer's: uv, or venv + pip."""

    installs_packages = True
    uv: Optional[str] = None  # the uv that resolved the lock (None: it came from a package)

    def plan(self, request: Request, hold: contextlib.ExitStack) -> BuildContext:
        if request.lock is not None:
            return self._plan_lock(request, hold)
        model = read_model_requirements(request.model_dir)
        if request.package is not None:
            return self._plan_package(request, model, read_package(request.package))
        locked = lock_requirements(model, request.python_version_policy, request.refresh,
                                   request.progress, home=request.home,
                                   wheelhouse=request.wheelhouse, uv=request.uv, hold=hold,
                                   exclude_newer=request.exclude_newer)
        self.uv = locked.uv
        return BuildContext(
            request=request, cache=locked.cache,
            key=environment_key(locked.lock.text, locked.interpreter, locked.wheel.source_hash),
            lock_text=locked.lock.text, wheel=locked.wheel, indexes=locked.indexes,
            interpreter=locked.interpreter, resolved=locked.lock.resolved,
            requirements=tuple(model.lines + locked.added),
            metadata={"base_python": locked.interpreter.path,
                      "inputs_hash": locked.lock.inputs_hash})

    def _plan_package(self, request: Request, model: ModelRequirements,
                      package: Package) -> BuildContext:
        """The package's lock and wheels for its Python, installed offline: no resolver, no wheel
        build, no network."""
        check_model(package, model)
        interpreter = _package_interpreter(package, request)
        self.uv = request.uv
        wheel = ProjectWheel(path=package.project_wheel,
                             source_hash=str(package.manifest.get("wheel_hash")), requires=[])
        lock_text = package.lock_path.read_text(encoding="utf-8")
        request.progress("using the package's lock and wheelhouse (offline)")
        return BuildContext(
            request=request, cache=EnvCache(request.home),
            key=environment_key(lock_text, interpreter, wheel.source_hash), lock_text=lock_text,
            wheel=wheel, indexes=IndexOptions.wheelhouse(package.wheelhouse),
            interpreter=interpreter, resolved=False, requirements=tuple(model.lines),
            metadata={"base_python": interpreter.path, "package": str(package.root)})

    def _plan_lock(self, request: Request, hold: contextlib.ExitStack) -> BuildContext:
        """A lock made elsewhere, for its Python minor version, with this machine's indexes and
        project wheel: nothing resolved."""
        assert request.lock is not None and request.python_version is not None
        interpreter = choose_interpreter(
            parse_python_version(request.python_version, "the lock's Python version"), "exact",
            request.progress)
        self.uv = request.uv or find_uv()
        indexes = IndexOptions.wheelhouse(request.wheelhouse) if request.wheelhouse else \
            IndexOptions.from_pip_config(request.exclude_newer)
        wheel = project_wheel(BuildCache(), indexes, request.progress, uv=self.uv, hold=hold)
        request.progress("installing a lock made elsewhere (nothing resolved)")
        return BuildContext(
            request=request, cache=EnvCache(request.home),
            key=environment_key(request.lock, interpreter, wheel.source_hash),
            lock_text=request.lock, wheel=wheel, indexes=indexes, interpreter=interpreter,
            resolved=False, requirements=(), metadata={"base_python": interpreter.path})

    def build(self, root: Path, ctx: BuildContext) -> Optional[str]:
        say = ctx.request.progress
        say("creating the venv with Python {} ({})".format(ctx.python_version, self.name))
        self.create(root, ctx)
        say("installing the locked requirements")
        self.install(root, ctx)
        (root / _WHEEL_REQUIREMENT).unlink(missing_ok=True)
        _repoint_scripts(root, ctx.final)
        return None

    def create(self, root: Path, ctx: BuildContext) -> None:
        raise NotImplementedError

    def install(self, root: Path, ctx: BuildContext) -> None:
        """Install the lock (``ctx.lock_path``) and our wheel (``_wheel_file``) into ``root``."""
        raise NotImplementedError


class UvManager(VenvManager):
    name = "uv"

    def plan(self, request: Request, hold: contextlib.ExitStack) -> BuildContext:
        ctx = super().plan(request, hold)
        self.uv = self.uv or find_uv()
        return ctx

    def create(self, root: Path, ctx: BuildContext) -> None:
        run([self.uv, "venv", "--quiet", "--no-project", "--python", ctx.interpreter.path,
             str(root)], what="creating the venv (uv venv)", env=ctx.indexes.uv_env())

    def install(self, root: Path, ctx: BuildContext) -> None:
        # no --compile-bytecode: compiling every module of the env took 19-42 of a 27-49 s build
        # (bench/RESULTS.md); the server writes bytecode for what it imports on its first start
        # (supervisor.server_env). `uv pip sync` installs exactly the files' lines, resolving
        # nothing: the wheel goes in with its hash and without its dependencies, saving the
        # separate `uv pip install --no-deps` call (about 0.13 s: one more uv start and env scan)
        args = [self.uv, "pip", "sync", "--quiet", "--python", str(venv_python(root)),
                "--require-hashes", *ctx.indexes.uv_args(), str(ctx.lock_path),
                str(_wheel_file(root, ctx))]
        what = "installing the locked requirements and the mlflow-deploy wheel (uv pip sync)"
        env = ctx.indexes.uv_env()
        if not ctx.indexes.offline:
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


class VirtualenvManager(VenvManager):
    """venv + pip (the lock is still resolved by uv)."""

    name = "virtualenv"

    def create(self, root: Path, ctx: BuildContext) -> None:
        run([ctx.interpreter.path, "-m", "venv", str(root)],
            what="creating the venv (python -m venv)")

    def install(self, root: Path, ctx: BuildContext) -> None:
        python = str(venv_python(root))
        quiet = ["--quiet", "--disable-pip-version-check", "--no-input", "--no-compile"]
        run([python, "-m", "pip", "install", *quiet, "--require-hashes", "--no-deps",
             *ctx.indexes.pip_args(), "-r", str(ctx.lock_path),
             "-r", str(_wheel_file(root, ctx))],
            what="installing the locked requirements and the mlflow-deploy wheel "
                 "(pip install --require-hashes --no-deps)")


def _package_interpreter(package: Package, request: Request) -> Interpreter:
    """The package's wheels are for one Python minor version: that one, or a clear error."""
    try:
        return choose_interpreter(package.python, "exact", request.progress)
    except PythonNotFound:
        wanted = "{}.{}".format(*package.python)
        raise PythonNotFound(
            "the package was made for Python {} and no Python {} interpreter was found here "
            "(found: {}; looked in pyenv, uv-managed pythons and PATH): install Python {}, or "
            "make the package with a Python this machine has".format(
                wanted, wanted, ", ".join(find_interpreters()) or "none", wanted)) from None


def _wheel_file(root: Path, ctx: BuildContext) -> Path:
    """A requirements file naming the project wheel with its hash, written into the venv being
    built (removed with it if the build fails; deleted by VenvManager.build before the rename)."""
    path = root / _WHEEL_REQUIREMENT
    path.write_text(wheel_requirement(ctx.wheel.path), encoding="utf-8")
    return path


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


# --- the smoke test --------------------------------------------------------------------------

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
