"""env_manager conda: the model's ``conda.yaml`` locked with conda-lock and installed from the lock,
where a real conda, mamba or micromamba is on PATH (without one, a clear error that suggests uv).

Steps, mirroring the uv path (build.py), so that a conda env is cached, reused and deployed like
a venv:

1. the conda-lock input: the model's ``conda.yaml`` as conda reads it (its conda packages stay conda
   packages, mapped or not), with the scoring server's packages (``inference_requirements``, the
   same list the uv path adds) in its ``pip:`` list. The model's pins win: an exact pin the server
   cannot run on is a RequirementConflict; a package the model installs with conda is not added
   again with pip; one the model lists under ``pip:`` gets a single line (conda-lock keeps only the
   last line of a name, so two lines would let ours replace theirs). A model with only
   ``python_env.yaml`` / ``requirements.txt`` gets ``python=X.Y`` + ``pip:`` from them.
2. the lock: ``conda-lock lock --platform <this machine's subdir>``, memoised by the hash of the
   input file and the platform (as lock.py memoises uv's: the input carries the wheel's dependency
   list, not the wheel's content hash, so editing scoring/ rebuilds envs but does not re-lock);
   ``refresh`` locks again.
3. the env, keyed by hash(lock, "conda", wheel hash), built as every env is (build.build_env):
   ``conda-lock install --prefix`` into ``.building/<key>-*``, the project wheel with ``pip
   install --no-deps``, then renamed into place. conda writes the install prefix into text and binary files (it
   replaces the packages' placeholders at install time); they are rewritten for the final folder
   the way conda itself does (binary strings padded with NULs), using the placeholders each
   package records in ``conda-meta/*.json``, so the rename leaves a working env.

This module never imports mlflow.
"""
import contextlib
import functools
import importlib.util
import json
import os
import platform as _platform
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import yaml
from packaging.requirements import InvalidRequirement, Requirement

from mlflow_deploy.envs.build import EnvBuilder, python_version_of
from mlflow_deploy.envs.cache import BuildCache, EnvCache, atomic_write, memoised, sha256_text
from mlflow_deploy.envs.conda_names import CONDA_TO_PYPI
from mlflow_deploy.envs.environment import BuildContext, Request, venv_python
from mlflow_deploy.envs.errors import BuildFailed, ManagerUnavailable, RequirementsError
from mlflow_deploy.envs.indexes import IndexOptions
from mlflow_deploy.envs.inference import inference_requirements
from mlflow_deploy.envs.lock import Lock, read_memo
from mlflow_deploy.envs.managers import require_conda
from mlflow_deploy.envs.pythons import parse_python_version
from mlflow_deploy.envs.requirements import (ModelRequirements, load_yaml, mlmodel_python,
                                             requirement_lines, canonical_name, conda_to_pip,
                                             read_model_requirements)
from mlflow_deploy.envs.runner import find_uv, run
from mlflow_deploy.envs.wheel import project_wheel

__all__ = ["CondaInput", "conda_lock_input", "conda_subdir", "find_conda_lock",
           "require_conda_lock", "lock_conda", "conda_environment_key", "relocate_prefix",
           "CondaManager"]

#: conda-lock's input format for the memo key: bump when the input file's layout changes.
_INPUT_FORMAT = "conda-lock-input-1"
#: pip options conda-lock understands in an environment file, and the key they become.
_PIP_REPOSITORY_OPTIONS = ("--extra-index-url", "--index-url", "-i")


# --- tools -----------------------------------------------------------------------------------

def find_conda_lock() -> Optional[List[str]]:
    """How to run conda-lock: ``python -m conda_lock`` with this interpreter if it can import it,
    else ``conda-lock`` on PATH, else None."""
    if importlib.util.find_spec("conda_lock") is not None:
        return [sys.executable, "-m", "conda_lock"]
    found = shutil.which("conda-lock")
    return [found] if found else None


def require_conda_lock() -> List[str]:
    tool = find_conda_lock()
    if tool is None:
        raise ManagerUnavailable(
            "env_manager conda locks conda.yaml with conda-lock, which was found neither in this "
            "Python ({}) nor on PATH: pip install 'mlflow-deploy[conda]' (or pip install "
            "conda-lock), or use env_manager: uv".format(sys.executable))
    return tool


def conda_subdir() -> str:
    """This machine's conda platform (subdir), e.g. linux-64: the one the lock is made for."""
    system, machine = sys.platform, _platform.machine().lower()
    arch = {"x86_64": "64", "amd64": "64", "aarch64": "aarch64", "arm64": "arm64",
            "ppc64le": "ppc64le", "s390x": "s390x"}.get(machine, "64")
    if system.startswith("linux"):
        return "linux-" + arch
    if system == "darwin":
        return "osx-arm64" if arch in ("arm64", "aarch64") else "osx-64"
    if system in ("win32", "cygwin"):
        return "win-64"
    return "linux-64"


def _tool_flags(conda: str) -> List[str]:
    """conda-lock's options naming the conda-family tool found on PATH: ``--conda PATH`` is used
    as is when it exists; the mamba/micromamba switch only matters to conda-lock's own fallback
    search (which downloads a tool when none is given), so it is set to match."""
    name = os.path.basename(conda)
    flags = ["--conda", conda]
    if name.startswith("micromamba"):
        flags.append("--micromamba")
    elif name.startswith("mamba"):
        flags.append("--mamba")
    return flags


# --- the conda-lock input ----------------------------------------------------------------------

@dataclass(frozen=True)
class CondaInput:
    """The conda-lock input file for a model, and what went into it."""

    text: str  # the environment file handed to ``conda-lock lock --file``
    model: ModelRequirements  # the model's pins as PyPI requirements (conflict checks, messages)
    added: List[str]  # the scoring server's lines (before merging into the model's pip: lines)
    source: str  # the model's file(s) it was made from

    @property
    def data(self) -> Dict[str, Any]:
        return yaml.safe_load(self.text)


def conda_lock_input(model_dir, wheel_requires: List[str]) -> CondaInput:
    """The model's conda.yaml (or its python_env.yaml / requirements.txt as one) with the scoring
    server's packages added to ``pip:`` without overriding the model's pins."""
    model_dir = Path(model_dir)
    conda_file = model_dir / "conda.yaml"
    if conda_file.is_file():
        data, source = load_yaml(conda_file), conda_file.name
        conda_specs, pip_lines = _split_dependencies(data, model_dir, source)
        python = _conda_python(conda_specs, source) or mlmodel_python(model_dir)
        if python is not None and not any(_conda_name(s) == "python" for s in conda_specs):
            conda_specs.insert(0, "python={}.{}".format(*python))
    else:  # MLflow always writes conda.yaml; older or hand-made models may only have the others
        own = read_model_requirements(model_dir)
        data, source = {"channels": ["conda-forge"]}, own.source
        conda_specs = ["python={}.{}".format(*own.python)] if own.python else []
        pip_lines, python = list(own.lines), own.python
    if not any(_conda_name(s) == "pip" for s in conda_specs):
        conda_specs.append("pip")
    model = ModelRequirements(python=python, lines=pip_lines + _mapped(conda_specs),
                              source=source)
    added = inference_requirements(model, wheel_requires)  # RequirementConflict on a bad pin
    pip_list, repositories, allow_pypi = _pip_options(
        _merge_pip(pip_lines, added, _conda_pypi_names(conda_specs)), source)

    out: Dict[str, Any] = {"name": data.get("name") or "mlflow-env",
                           "channels": list(data.get("channels") or ["conda-forge"]),
                           "dependencies": conda_specs + [{"pip": pip_list}]}
    if repositories:
        out["pip-repositories"] = repositories
    if not allow_pypi:
        out["allow-pypi-requests"] = False
    header = ("# conda-lock input written by mlflow-deploy: the model's {} with the scoring "
              "server's packages added to pip:\n".format(source))
    return CondaInput(header + yaml.safe_dump(out, sort_keys=False, default_flow_style=False),
                      model, added, source)


def _split_dependencies(data: Dict[str, Any], model_dir: Path,
                        source: str) -> Tuple[List[str], List[str]]:
    conda_specs: List[str] = []
    pip_lines: List[str] = []
    for dep in data.get("dependencies") or []:
        if isinstance(dep, dict):
            if set(dep) - {"pip"}:
                raise RequirementsError("{}: unexpected entry {} in dependencies".format(
                    source, ", ".join("'{}'".format(k) for k in dep)))
            pip_lines.extend(requirement_lines([str(d) for d in dep.get("pip") or []],
                                                model_dir, source))
        else:
            conda_specs.append(str(dep).strip())
    return conda_specs, _dedupe(pip_lines)


def _conda_name(spec: str) -> str:
    return conda_to_pip(spec)[0]


def _conda_python(conda_specs: List[str], source: str) -> Optional[Tuple[int, int]]:
    for spec in conda_specs:
        name, version = conda_to_pip(spec)
        if name == "python" and version:
            return parse_python_version(version, source)
    return None


def _mapped(conda_specs: List[str]) -> List[str]:
    """The conda packages with a known PyPI name, as PyPI requirements: what the model pins."""
    lines = []
    for spec in conda_specs:
        name, version = conda_to_pip(spec)
        if name in CONDA_TO_PYPI:
            try:
                lines.append(str(Requirement(CONDA_TO_PYPI[name] + version)))
            except InvalidRequirement:
                lines.append(CONDA_TO_PYPI[name])
    return lines


def _conda_pypi_names(conda_specs: List[str]) -> Set[str]:
    """PyPI names of what conda installs for the model (unknown names as themselves)."""
    names = set()
    for spec in conda_specs:
        name = _conda_name(spec)
        names.add(canonical_name(CONDA_TO_PYPI.get(name, name)))
    return names


def _merge_pip(model_lines: List[str], added: List[str], from_conda: Set[str]) -> List[str]:
    """The model's pip lines with ours merged in: a name conda installs is left to the model's
    conda spec; a name the model lists gets one line with both specifiers (the model's extras,
    URL and markers kept; when it has a URL or markers, its line alone decides)."""
    out = list(model_lines)
    positions: Dict[str, List[int]] = {}
    for i, line in enumerate(out):
        requirement = _parse(line)
        if requirement is not None:
            positions.setdefault(canonical_name(requirement.name), []).append(i)
    for line in added:
        ours = Requirement(line)
        name = canonical_name(ours.name)
        if name in from_conda:
            continue
        where = positions.get(name)
        if not where:
            positions[name] = [len(out)]
            out.append(line)
            continue
        theirs = _parse(out[where[0]])
        if len(where) > 1 or theirs is None or theirs.url or theirs.marker or ours.marker:
            continue
        theirs.extras |= ours.extras
        theirs.specifier &= ours.specifier
        out[where[0]] = str(theirs)
    return out


def _pip_options(lines: List[str], source: str) -> Tuple[List[str], List[str], bool]:
    """Split pip option lines out of the pip list: index URLs become conda-lock's
    ``pip-repositories``; anything else conda-lock cannot do is a clear error."""
    requirements, repositories, allow_pypi = [], [], True
    for line in lines:
        if not line.startswith("-"):
            requirements.append(line)
            continue
        option, _, value = line.replace("=", " ", 1).partition(" ")
        if option in _PIP_REPOSITORY_OPTIONS and value.strip():
            repositories.append(value.strip())
            if option != "--extra-index-url":
                allow_pypi = False
            continue
        raise RequirementsError(
            "{}: conda-lock cannot use the pip option '{}'; remove it, or use env_manager: uv"
            .format(source, line))
    return requirements, repositories, allow_pypi


def _parse(line: str) -> Optional[Requirement]:
    if line.startswith("-"):
        return None
    try:
        return Requirement(line)
    except InvalidRequirement:
        return None


def _dedupe(lines: List[str]) -> List[str]:
    seen: Set[str] = set()
    return [l for l in lines if not (l in seen or seen.add(l))]


# --- lock --------------------------------------------------------------------------------------

def lock_conda(input_text: str, platform: str, cache: EnvCache, conda: str,
               conda_lock: List[str], refresh: bool = False,
               progress: Callable[[str], None] = lambda msg: None,
               hold: Optional[contextlib.ExitStack] = None) -> Lock:
    """``conda-lock lock`` the input for ``platform``, memoised under ``.resolved/conda-<inputs>``:
    the same input is locked once, and reuse never reaches the network (``refresh`` locks again).
    Same protocol as lock.resolve (so ``env prune`` treats both memos alike): locked under the
    exclusive ``resolve-conda-<inputs>`` lock; ``hold`` keeps it shared until that stack closes
    (until the env's own lock file is written)."""
    if hold is None:
        with contextlib.ExitStack() as brief:
            return lock_conda(input_text, platform, cache, conda, conda_lock, refresh, progress,
                              brief)
    inputs_hash = sha256_text(_INPUT_FORMAT, input_text, platform)[:16]
    name = "conda-" + inputs_hash
    memo = cache.resolved_file(name)

    def make() -> None:
        progress("locking conda.yaml for {} (conda-lock, with {})".format(platform, conda))
        atomic_write(memo, _conda_lock(input_text, platform, memo.parent, name, conda,
                                       conda_lock))

    text, resolved = memoised(functools.partial(cache.mutex, "resolve-" + name),
                              lambda: read_memo(memo), make, hold, refresh)
    return Lock(text, inputs_hash, resolved=resolved)


def _conda_lock(input_text: str, platform: str, folder: Path, name: str, conda: str,
                conda_lock: List[str]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    # named after the inputs, as lock.py's: `env prune` removes a killed lock's scratch
    with tempfile.TemporaryDirectory(prefix=".tmp-{}-".format(name), dir=str(folder)) as scratch:
        Path(scratch, "environment.yml").write_text(input_text, encoding="utf-8")
        run([*conda_lock, "lock", "--file", "environment.yml", "--platform", platform,
             "--lockfile", "conda-lock.yml", *_tool_flags(conda)],
            what="locking conda.yaml (conda-lock lock)", cwd=scratch)
        lockfile = Path(scratch, "conda-lock.yml")
        text = lockfile.read_text(encoding="utf-8") if lockfile.is_file() else ""
    _check_lock(text)
    return text


def _check_lock(text: str) -> None:
    try:
        data = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict) or not data.get("package"):
        raise BuildFailed("conda-lock produced no usable lock file (expected a conda-lock.yml "
                          "with packages):\n" + (text[:2000] or "  (empty)"))


def conda_environment_key(lock_text: str, wheel_hash: str) -> str:
    """The env cache key: what was locked (the lock names the platform and the Python) and the
    scoring wheel; "conda" keeps it apart from any venv key."""
    return sha256_text(lock_text, "conda", wheel_hash)[:16]


# --- relocation --------------------------------------------------------------------------------

def relocate_prefix(root: Path, final: Path) -> None:
    """Rewrite the files of the conda env in ``root`` that name ``root`` so they name ``final``,
    where it is about to be renamed: the files conda patched at install (``conda-meta/*.json``
    records each one's placeholder and whether it is text or binary), console scripts in
    ``bin/`` (pip's shebangs), symlinks into the prefix and conda's history. Binary files get the
    new path padded with NULs, as conda does, so ``final`` must not be longer than ``root``."""
    old, new = str(root).encode(), str(final).encode()
    if len(new) > len(old):
        raise BuildFailed("cannot move the conda env from {} to the longer path {}".format(
            root, final))
    recorded = dict(_recorded_prefix_files(root))
    for path in sorted((root / "bin").iterdir()) if (root / "bin").is_dir() else []:
        rel = str(path.relative_to(root))
        if path.is_symlink():
            target = os.readlink(str(path))
            if target.encode().startswith(old):
                path.unlink()
                os.symlink(new.decode() + target[len(old.decode()):], str(path))
        elif rel not in recorded:
            recorded[rel] = "script"
    recorded.setdefault(os.path.join("conda-meta", "history"), "text")
    for rel, mode in sorted(recorded.items()):
        path = root / rel
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old not in data:
            continue
        if mode == "binary":
            changed = _binary_replace(data, old, new)
        elif mode == "script" and (b"\0" in data[:1024] or len(data) > 1_000_000):
            continue  # a binary in bin/ that conda did not record: not a script of pip's
        else:
            changed = data.replace(old, new)
        if changed != data:
            _rewrite(path, changed)


def _recorded_prefix_files(root: Path) -> Iterator[Tuple[str, str]]:
    """(relative path, "text"|"binary") of each file a package recorded a prefix placeholder in."""
    meta = root / "conda-meta"
    for record in sorted(meta.glob("*.json")) if meta.is_dir() else []:
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        paths = ((data.get("paths_data") or {}).get("paths") or []) if isinstance(data, dict) \
            else []
        for entry in paths:
            if isinstance(entry, dict) and entry.get("prefix_placeholder") and entry.get("_path"):
                yield entry["_path"], "binary" if entry.get("file_mode") == "binary" else "text"


def _binary_replace(data: bytes, old: bytes, new: bytes) -> bytes:
    """conda's binary prefix replacement: each NUL-terminated string that contains ``old`` gets
    ``new`` instead, padded with NULs to its former length, so offsets in the file do not move."""
    pattern = re.compile(re.escape(old) + b"(?:(?!\0).)*\0")

    def replace(match):
        text = match.group()
        padding = (len(old) - len(new)) * text.count(old)
        return text.replace(old, new) + b"\0" * padding

    changed = pattern.sub(replace, data)
    if len(changed) != len(data):  # cannot happen with len(new) <= len(old); never risk it
        raise BuildFailed("relocating the conda env changed the size of a binary file")
    return changed


def _rewrite(path: Path, data: bytes) -> None:
    """Replace the file (never write through it: conda hard-links files from its package cache)."""
    mode = path.stat().st_mode
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix="." + path.name + ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode & 0o7777)
        os.replace(tmp, str(path))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --- the manager -------------------------------------------------------------------------------

class CondaManager(EnvBuilder):
    """env_manager conda: plan = the conda-lock input and its lock; build = ``conda-lock install``
    into the scratch folder, our wheel with pip, the prefix rewritten for the final folder."""

    name = "conda"
    smoke_tested = False

    def __init__(self, conda: Optional[str] = None, conda_lock: Optional[List[str]] = None):
        self.conda, self.conda_lock = conda, conda_lock  # found by plan when not given

    def plan(self, request: Request, hold: contextlib.ExitStack) -> BuildContext:
        """Reads conda.yaml itself: conda packages need no PyPI name there."""
        self.conda = self.conda or require_conda()
        if request.wheelhouse is not None:
            raise ManagerUnavailable("an offline install from a wheelhouse needs env_manager uv "
                                     "or virtualenv; env_manager conda installs from conda "
                                     "channels")
        self.conda_lock = self.conda_lock or require_conda_lock()
        cache = EnvCache(request.home)
        indexes = IndexOptions.from_pip_config()
        wheel = project_wheel(BuildCache(), indexes, request.progress,
                              uv=request.uv or find_uv(), hold=hold)
        spec = conda_lock_input(request.model_dir, wheel.requires)
        platform = conda_subdir()
        lock = lock_conda(spec.text, platform, cache, self.conda, self.conda_lock,
                          refresh=request.refresh, progress=request.progress, hold=hold)
        return BuildContext(
            request=request, cache=cache, key=conda_environment_key(lock.text, wheel.source_hash),
            lock_text=lock.text, wheel=wheel, indexes=indexes, interpreter=None,
            resolved=lock.resolved, requirements=tuple(spec.model.lines + spec.added),
            metadata={"conda": self.conda, "platform": platform,
                      "inputs_hash": lock.inputs_hash})

    def build(self, root: Path, ctx: BuildContext) -> str:
        say = ctx.request.progress
        os.rmdir(str(root))  # the name is ours (we hold the key's lock); conda creates the prefix
        say("creating the conda env from the lock (conda-lock install, with {})".format(
            os.path.basename(self.conda)))
        run([*self.conda_lock, "install", *_tool_flags(self.conda), "--prefix", str(root),
             str(ctx.lock_path)], what="creating the conda env (conda-lock install)")
        python = venv_python(root)
        if not python.exists():
            raise BuildFailed("conda-lock install made no {}: does the model's conda.yaml ask "
                              "for python?".format(python))
        say("installing the mlflow-deploy wheel")
        run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-input", "--no-compile", "--no-index", "--no-deps", str(ctx.wheel.path)],
            what="installing the mlflow-deploy wheel (pip install --no-deps)")
        relocate_prefix(root, ctx.final)
        return python_version_of(python)  # and that it still runs after the rewrite
