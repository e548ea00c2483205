"""What one revision of a deployment serves or scores with, online or batch alike: its files
(the model, a scoring script's code) laid out under the deployment's folder, and the environment
its server or batch workers run in.

    <deployment>/model/<rev>/        an MLflow model (no script), or AZUREML_MODEL_DIR (a script)
    <deployment>/code/<rev>/         a copy of the script's code folder (edits need an update)
    <deployment>/environment/<rev>/  the script's conda.yaml or requirements.txt, as built

Everything of a revision lives in those three folders, so a failed update removes them and the
previous revision is untouched.

Online and batch deployments each have their own settings; this module reads only the fields of
``RevisionSettings`` from them, so it depends on neither.
"""

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Protocol, Tuple

from mlflow_deploy import envs
from mlflow_deploy.errors import InvalidState
from mlflow_deploy.model import is_mlflow_model, load_model, place_model
from mlflow_deploy.progress import say
from mlflow_deploy.settings import ScriptSettings
from mlflow_deploy.store import Store

__all__ = [
    "RevisionSettings",
    "PreviousFiles",
    "Staged",
    "stage_revision",
    "staged_then_locked",
    "STAGE_ATTEMPTS",
    "build_environment",
    "environment_record",
    "remove_revision",
    "remove_revisions_except",
]

REVISION_FOLDERS = ("model", "code", "environment")

if TYPE_CHECKING:
    from mlflow_deploy.envs import Environment

Staged = Tuple[Dict[str, Optional[str]], "Environment"]


class RevisionSettings(ScriptSettings, Protocol):
    """The settings a revision is staged by: a scoring script's code folder, script and
    environment file (absolute paths, or None) or a package, and how its environment is built."""

    @property
    def env_manager(self) -> str: ...
    @property
    def python_version_policy(self) -> str: ...
    @property
    def exclude_newer(self) -> Optional[str]: ...


class PreviousFiles(Protocol):
    """Where the revision before keeps its model (a ServerConfig, or a batch deployment's
    files): an update that brings no model serves it again."""

    @property
    def model_dir(self) -> Optional[str]: ...
    @property
    def azureml_model_dir(self) -> Optional[str]: ...


def build_environment(source: Path, settings: RevisionSettings, local: bool = False,
                      model_uri: Optional[str] = None) -> "Environment":
    """The environment built from the requirement files in ``source`` (envs.prepare_environment), reused from
    the cache when it was built before. A build prints progress on stderr: it can take a minute.
    ``local``: this Python (env_manager local), whatever the settings say. ``model_uri``: the
    model as the user named it, which `env list` shows as a user of the env (``source`` is a
    staging folder of ours)."""
    extra = {"package": settings.package} if settings.package and not local else {}
    # envs' builders load here, on first use: a scale or a delete never builds (the online
    # package imports this module, and the builders cost a tenth of a scale-up's start)
    return envs.prepare_environment(
        source,
        manager="local" if local else settings.env_manager,
        python_version_policy=settings.python_version_policy,
        progress=say,
        exclude_newer=settings.exclude_newer,
        model_ref=model_uri,
        **extra,
    )


def environment_record(env: "Environment") -> Dict[str, Any]:
    """What a deployment keeps of its environment (get_deployment shows it)."""
    return {
        "key": env.key,
        "python": env.python,
        "python_version": env.python_version,
        "manager": env.manager,
        "root": env.root,
        "lock": env.lock_path,
    }


def stage_revision(
    root: Path,
    revision: int,
    model_uri: Optional[str],
    settings: RevisionSettings,
    previous: Optional[PreviousFiles] = None,
) -> Staged:
    """Fetch what revision ``revision`` serves into ``root`` (the deployment's folder, or a
    temporary one) and build its environment. ``model_uri`` None keeps ``previous``'s model.
    Returns where the files are (model_dir, code_dir, scoring_script, azureml_model_dir: the
    fields of a server's ServerConfig and of a batch deployment's files), and the environment."""
    model_root = root / "model" / str(revision)
    if not settings.scoring_script:
        if model_uri:
            model_dir = load_model(model_uri, model_root, copy_local=True).path
        else:
            model_dir = Path(previous.model_dir)
        files = {"model_dir": str(model_dir), "code_dir": None, "scoring_script": None,
                 "azureml_model_dir": None}
        return files, build_environment(model_dir, settings, model_uri=model_uri)

    if model_uri:
        model_path = place_model(model_uri, model_root)
        azureml_model_dir = model_root
    else:
        model_path = Path(previous.model_dir)
        azureml_model_dir = Path(previous.azureml_model_dir or previous.model_dir)
    code_dir = root / "code" / str(revision)
    shutil.copytree(settings.code, code_dir)
    env = _script_environment(settings, model_path, code_dir, root / "environment" / str(revision),
                              model_uri)
    files = {"model_dir": str(model_path), "code_dir": str(code_dir),
             "scoring_script": settings.scoring_script,
             "azureml_model_dir": str(azureml_model_dir)}
    return files, env


#: how many times a revision is staged again when `env prune` removed its environment meanwhile
STAGE_ATTEMPTS = 3


@contextmanager
def staged_then_locked(
    store: Store, stage: Callable[[], Staged], unstage: Callable[[], None]
) -> Iterator[Staged]:
    """Stage a revision (fetch its files, build its environment: minutes for a first build)
    without the store's lock, then hold the lock while the caller starts and records it.
    `env prune` removes the environments no deployment records, under that lock: one built just
    before may be gone once the lock is ours, and the revision is then staged again."""
    for _ in range(STAGE_ATTEMPTS):
        files, env = stage()
        with store.lock():
            if os.path.exists(env.python):
                yield files, env
                return
        unstage()
    raise InvalidState(
        "The model's environment was removed (env prune) as soon as it was built; run the "
        "command again."
    )


def _script_environment(
    settings: RevisionSettings, model_path: Path, code_dir: Path, source: Path,
    model_uri: Optional[str],
) -> "Environment":
    """A script's environment, as Azure picks it: the given conda file, else the code folder's
    requirements.txt, else the MLflow model's own environment, else this Python (with a notice,
    since Azure would refuse a deployment without an environment here)."""
    source.mkdir(parents=True, exist_ok=True)
    if settings.conda_file:
        shutil.copy2(settings.conda_file, source / "conda.yaml")
        return build_environment(source, settings, model_uri=model_uri)
    if (code_dir / "requirements.txt").is_file():
        shutil.copy2(code_dir / "requirements.txt", source / "requirements.txt")
        return build_environment(source, settings, model_uri=model_uri)
    if is_mlflow_model(model_path):
        say("the scoring script has no environment of its own (conda_file, code/requirements.txt):"
            " it runs in the MLflow model's environment")
        return build_environment(model_path, settings, model_uri=model_uri)
    say("the scoring script has no environment of its own (conda_file, code/requirements.txt) and "
        f"the model is no MLflow model: it runs in this Python ({sys.executable}, env_manager local)")
    (source / "requirements.txt").write_text("")
    return build_environment(source, settings, local=True)


def remove_revision(root: Path, revision: int) -> None:
    for folder in REVISION_FOLDERS:
        shutil.rmtree(root / folder / str(revision), ignore_errors=True)


def remove_revisions_except(root: Path, keep: int, folders=REVISION_FOLDERS) -> None:
    for folder in folders:
        if (root / folder).is_dir():
            for path in (root / folder).iterdir():
                if path.name != str(keep):
                    shutil.rmtree(path, ignore_errors=True)
