"""Resolve requirements into a lock file with hashes (``uv pip compile --generate-hashes``),
memoised so that preparing an env whose inputs did not change never reaches the network.

The memo key is the resolver's whole input: the model's requirement lines plus the inference
additions (which carry the wheel's dependency list), the interpreter, and the package sources. It
deliberately does not include the wheel's content hash: editing scoring/ rebuilds envs (the env key
has the wheel hash) but does not re-resolve.

``lock_requirements`` is every step before an install (the interpreter, our wheel, the scoring
server's packages, the lock): what env_manager uv and virtualenv build from, what ``mlflow-deploy
check`` runs, and what ``mlflow-deploy package`` packs.
"""
import contextlib
import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from mlflow_deploy.envs.cache import BuildCache, EnvCache, atomic_write, memoised, sha256_text
from mlflow_deploy.envs.errors import BuildFailed
from mlflow_deploy.envs.indexes import IndexOptions
from mlflow_deploy.envs.inference import inference_requirements
from mlflow_deploy.envs.pythons import Interpreter, choose_interpreter
from mlflow_deploy.envs.requirements import ModelRequirements, read_model_requirements
from mlflow_deploy.envs.runner import find_uv, run
from mlflow_deploy.envs.wheel import ProjectWheel, project_wheel

__all__ = ["Lock", "Locked", "lock_requirements", "resolve", "requirements_input",
           "environment_key", "read_memo"]


@dataclass(frozen=True)
class Lock:
    text: str  # what `uv pip sync` / `pip install --require-hashes -r` installs
    inputs_hash: str
    resolved: bool  # True: the resolver ran now; False: taken from the memo

    @property
    def digest(self) -> str:
        return sha256_text(self.text)


def environment_key(lock_text: str, interpreter: Interpreter, wheel_hash: str) -> str:
    """The env cache key: what was locked, the interpreter it was locked for, the scoring wheel."""
    return sha256_text(lock_text, interpreter.identity(), wheel_hash)[:16]


def requirements_input(model_lines: List[str], added: List[str], source: str) -> str:
    """The resolver's input file: the model's lines first, then the scoring server's."""
    return "".join(["# from the model ({})\n".format(source)] + [l + "\n" for l in model_lines]
                   + ["# added for the scoring server\n"] + [l + "\n" for l in added])


def resolve(input_text: str, interpreter: Interpreter, indexes: IndexOptions, cache: EnvCache,
            refresh: bool = False, progress: Callable[[str], None] = lambda msg: None,
            uv: Optional[str] = None, hold: Optional[contextlib.ExitStack] = None) -> Lock:
    """The memoised lock for these inputs, resolving (under the inputs' exclusive lock) if there is
    none or ``refresh``. ``hold``: keep a shared lock on the memo until that stack closes
    (prepare_environment: until the env's own lock file is written), so ``env prune`` does not take
    the memo of an env being built for unused."""
    if hold is None:
        with contextlib.ExitStack() as brief:
            return resolve(input_text, interpreter, indexes, cache, refresh, progress, uv, brief)
    uv = uv or find_uv()
    inputs_hash = sha256_text(input_text, interpreter.identity(), indexes.identity())[:16]
    memo = cache.resolved_file(inputs_hash)

    def make() -> None:
        progress("resolving the model's requirements for Python {} (uv pip compile)".format(
            interpreter.version))
        atomic_write(memo, _compile(input_text, interpreter, indexes, memo.parent, inputs_hash,
                                    uv))

    text, resolved = memoised(functools.partial(cache.mutex, "resolve-" + inputs_hash),
                              lambda: read_memo(memo), make, hold, refresh)
    return Lock(text, inputs_hash, resolved=resolved)


def _compile(input_text: str, interpreter: Interpreter, indexes: IndexOptions, folder: Path,
             inputs_hash: str, uv: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-{}-".format(inputs_hash),
                                     dir=str(folder)) as scratch:
        Path(scratch, "requirements.in").write_text(input_text, encoding="utf-8")
        run([uv, "pip", "compile", "requirements.in", "--generate-hashes", "--no-header",
             "--quiet", "--python", interpreter.path, "--output-file", "requirements.lock",
             *indexes.uv_args(constraints=True)],
            what="resolving the model's requirements (uv pip compile)", cwd=scratch,
            env=indexes.uv_env())
        text = Path(scratch, "requirements.lock").read_text(encoding="utf-8")
    options = [line for line in input_text.splitlines() if line.startswith("-")]
    if options:  # the model's own index options: the installer needs them too
        text = "".join(o + "\n" for o in options) + text
    if "--hash=" not in text:
        raise BuildFailed("the resolver produced a lock without hashes:\n" + text[:2000])
    return text


def read_memo(memo: Path) -> Optional[str]:
    """The memo's lock, or None if there is none (``env prune`` may just have removed it)."""
    try:
        return memo.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


@dataclass
class Locked:
    """The model's requirements resolved for one interpreter: everything but the install."""

    model: ModelRequirements
    interpreter: Interpreter
    wheel: ProjectWheel
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
