"""``mlflow-deploy env build|list|show|prune``: the model environments of ``mlflow_deploy.envs``
from the command line.

The cache is ``EnvCache()`` ($MLFLOW_DEPLOY_ENV_CACHE, else $MLFLOW_DEPLOY_HOME/envs); the project
wheel comes from the per-user ``BuildCache()`` ($MLFLOW_DEPLOY_BUILD_CACHE, else
~/.cache/mlflow-deploy), which prune also tidies (envs/sweep.py). list and
show read each env's ``<key>.json`` and weigh its files (a file hard-linked several times, as uv
links them from its cache into every env, counted once), and import the control plane
(``mlflow_deploy.online``) only when a deployment store exists.
What uses an env: the models recorded in its metadata (as their users named them), the
deployments of this home's store and of the other homes whose deployments' staging folders the
env's metadata recorded (a cache shared through $MLFLOW_DEPLOY_ENV_CACHE), and, for prune, any
live process started from the env's interpreter (``mlflow-deploy serve`` records nothing in the
store). Nothing here imports mlflow (about 1.7 s), except ``load_model`` for a model
URI that is not a local folder: `env build DIR` on a built env takes a fraction of a second.
"""
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import click

from mlflow_deploy import processes
from mlflow_deploy.envs import EnvCache, PythonVersionWarning, prepare_environment
from mlflow_deploy.envs.build import venv_python
from mlflow_deploy.envs.cache import BuildCache, disk_use, tree_size
from mlflow_deploy.errors import InvalidParameter, NotFound

from .common import (EXCLUDE_NEWER, OUTPUT, PYTHON_VERSION_POLICY, remember_output,
                     checked_date, human, print_json, say)
from .progress import steps

__all__ = ["env_group"]

_BUILD_MANAGERS = ["uv", "virtualenv", "conda"]  # local builds nothing to cache


def _when(timestamp: Optional[float]) -> Optional[str]:
    if not timestamp:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(timestamp))


@click.group("env")
def env_group():
    """Build, list, inspect and prune the models' cached environments."""


@env_group.command("build")
@click.argument("model_uri")
@click.option("--env-manager", type=click.Choice(_BUILD_MANAGERS), default="uv",
              show_default=True, help="uv, virtualenv (venv + pip; the lock still uses uv), or "
              "conda (conda-lock and conda, mamba or micromamba on PATH).")
@PYTHON_VERSION_POLICY
@click.option("--refresh", is_flag=True, help="Resolve the requirements again (newer versions "
              "within the model's pins).")
@click.option("--package", "package_dir", default=None, metavar="DIR",
              help="Build offline from a folder written by `mlflow-deploy package`.")
@EXCLUDE_NEWER
def build_command(model_uri: str, env_manager: str, python_version_policy: str, refresh: bool,
                  package_dir: Optional[str], exclude_newer: Optional[str]):
    """Build (or reuse) the environment of MODEL_URI and print where its Python is."""
    options = dict(manager=env_manager, python_version_policy=python_version_policy,
                   refresh=refresh, progress=say, package=package_dir,
                   exclude_newer=checked_date(exclude_newer))
    with warnings.catch_warnings(), steps():
        warnings.simplefilter("ignore", PythonVersionWarning)  # progress already says it
        folder = Path(model_uri).expanduser()
        if folder.is_dir():
            env = prepare_environment(folder, **options)
        else:
            from mlflow_deploy.model import load_model  # imports mlflow's model API

            with tempfile.TemporaryDirectory(prefix="mlflow-deploy-env-") as tmp:
                info = load_model(model_uri, Path(tmp) / "model")
                env = prepare_environment(info.path, model_ref=model_uri, **options)
    click.echo("key: {}\npython: {}\npython_version: {}\nstatus: {}\nseconds: {:.2f}".format(
        env.key, env.python, env.python_version, "built" if env.built else "reused",
        env.seconds))


_TABLE = [("HASH", lambda r: r["key"]), ("PYTHON", lambda r: r["python_version"] or "?"),
          ("SIZE", lambda r: human(r["size_bytes"])),
          ("LAST USED", lambda r: (r["last_used"] or "-")[:16].replace("T", " ")),
          ("MODELS", lambda r: r["models"]), ("DEPLOYMENTS", lambda r: r["deployments"])]


@env_group.command("list")
@OUTPUT
# the option before -o, kept for the scripts that use it
@click.option("--format", type=click.Choice(["table", "json"]), default=None, hidden=True,
              expose_value=False, callback=remember_output)
def list_command():
    """List the cached environments (JSON, or a table with -o table): what each weighs, the
    models and deployments that use it; and what they weigh together, on stderr, a file
    hard-linked into several environments counted once."""
    cache = EnvCache()
    in_use = _deployments_using(cache)
    keys = cache.keys()
    sizes, total = disk_use(cache.env_dir(key) for key in keys)
    print_json([_describe(cache, key, in_use, size) for key, size in zip(keys, sizes)], _TABLE)
    say("{} environment{}: {} on disk".format(len(keys), "" if len(keys) == 1 else "s",
                                              human(total)))


@env_group.command("show")
@click.argument("hash_prefix", metavar="HASH")
@OUTPUT
def show_command(hash_prefix: str):
    """Show one environment (a unique prefix of its hash will do) as JSON."""
    cache = EnvCache()
    key = _find(cache, hash_prefix)
    info = _describe(cache, key, _deployments_using(cache), tree_size(cache.env_dir(key)))
    lock = cache.lock_file(key)
    info["lock"] = str(lock) if lock.is_file() else None
    info["requirements"] = _locked_requirements(lock)
    print_json(info, _TABLE)


@env_group.command("prune")
@click.option("--older-than", type=click.FloatRange(min=0), default=None, metavar="DAYS",
              help="Only environments (and wheels, resolutions) not used for DAYS days "
              "(default: every unused one).")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
def prune_command(older_than: Optional[float], dry_run: bool):
    """Remove cached environments that no deployment uses, then what no remaining environment
    needs: project wheels of other sources (the per-user build cache), resolutions, lock files.

    An environment recorded by a deployment (running or not) or run by a live process is never
    removed. Each removal holds the environment's lock, so a concurrent build of it is not broken;
    a wheel or resolution that a build is using is kept the same way. The space freed leaves out
    files the environment shares with uv's cache (hard links).
    """
    from mlflow_deploy.envs.sweep import LOCK_FILE, RESOLUTION, SCRATCH, WHEEL, sweep
    from mlflow_deploy.online import forkserver
    from mlflow_deploy.store import Store

    cache = EnvCache()
    cutoff = time.time() - older_than * 86400 if older_than is not None else None
    removed, freed, gone = 0, 0, []
    store = Store()
    with store.lock():  # deployments change under this lock: none starts using an env meanwhile
        in_use = _deployments_using(cache, store)
        # an env's fork server (online/forkserver.py) does not keep it: it is stopped with it
        fork_servers = forkserver.running()
        running = _running_envs(cache, ignore=fork_servers)
        for key in cache.keys():
            if not _unused_since(cache, key, cutoff):
                continue
            users = in_use.get(key, []) + ["process {}".format(p) for p in running.get(key, [])]
            if users:
                click.echo("kept {}: in use by {}".format(key, ", ".join(users)))
                continue
            last = _when(_last_used(cache, key)) or "never"
            with cache.mutex(key):
                if not _unused_since(cache, key, cutoff):  # a build used it while we waited
                    continue
                size = tree_size(cache.env_dir(key), exclusive=True)
                if not dry_run:
                    inside = str(cache.env_dir(key)) + os.sep
                    for pid, python in fork_servers.items():
                        if python.startswith(inside):
                            forkserver.stop(pid)
                    cache.remove(key)
            removed += 1
            freed += size
            gone.append(key)
            click.echo("{} {} (last used {}, {})".format(
                "would remove" if dry_run else "removed", key, last, human(size)))
    swept = sweep(cache, BuildCache(), cutoff, dry_run, _current_wheel_hash(), gone)
    verb = "would remove" if dry_run else "removed"
    for item in swept:
        if item.kind == WHEEL:
            click.echo("kept wheel {}: {}".format(item.name, item.kept) if item.kept else
                       "{} wheel {} (last used {}, {})".format(
                           verb, item.name, _when(item.last_used) or "never", human(item.size)))
    counts = {}
    for kind, one, many in ((RESOLUTION, "cached resolution", "cached resolutions"),
                            (SCRATCH, "leftover of a killed build", "leftovers of killed builds"),
                            (LOCK_FILE, "unused lock file", "unused lock files")):
        done = [item for item in swept if item.kind == kind and not item.kept]
        counts[kind] = len(done)
        if done:
            size = sum(item.size for item in done)
            click.echo("{} {} {}{}".format(verb, len(done), one if len(done) == 1 else many,
                                           " ({})".format(human(size)) if size else ""))
    wheels = len([item for item in swept if item.kind == WHEEL and not item.kept])
    freed += sum(item.size for item in swept if not item.kept)
    extra = "".join(", {} {}".format(n, noun if n == 1 else noun + "s") for n, noun in
                    ((wheels, "wheel"), (counts[RESOLUTION], "resolution")) if n)
    click.echo("{} {} ({} environment{}{})".format("would free" if dry_run else "freed",
                                                   human(freed), removed,
                                                   "" if removed == 1 else "s", extra))


def _current_wheel_hash() -> Optional[str]:
    """The hash of the installed sources (their wheel is always kept), if they are a checkout."""
    from mlflow_deploy.envs.errors import BuildFailed
    from mlflow_deploy.envs.wheel import source_hash

    try:
        return source_hash()
    except BuildFailed:
        return None


# --- what uses an env ---------------------------------------------------------------------------

def _deployments_using(cache: EnvCache, store=None) -> Dict[str, List[str]]:
    """Env key -> deployment names, online and batch (``endpoint:name``): this home's
    (``store``, else $MLFLOW_DEPLOY_HOME's, read only if it exists) and those of any other home
    whose deployment folders the cache recorded as models
    (``<home>/deployments/<name>/model/<revision>`` or
    ``<home>/batch/<endpoint>/<name>/model/<revision>``: a cache shared by several homes)."""
    from mlflow_deploy.store import Store, home_dir

    homes = set()
    for key in cache.keys():
        meta = cache.read_metadata(key)
        # before "folders", "models" held the staging folders
        for folder in meta.get("folders", []) + meta.get("models", []):
            home = _staging_home(folder)
            if home is not None:
                homes.add(home)
    stores = [store] if store is not None else []
    homes.add(home_dir())
    homes.discard(store.home if store is not None else None)
    stores += [Store(home) for home in sorted(homes) if (home / "state.db").is_file()]
    if not stores:
        return {}
    # the control plane: only when needed
    from mlflow_deploy.batch.deployments import environments_in_use as batch_in_use
    from mlflow_deploy.online import environments_in_use as online_in_use

    used: Dict[str, List[str]] = {}
    for each in stores:
        for in_use in (online_in_use, batch_in_use):
            for key, names in in_use(each).items():
                used.setdefault(key, []).extend(names)
    return used


def _staging_home(folder: str) -> Optional[Path]:
    """The home of a deployment's staging folder (``<home>/deployments/<name>/model/<revision>``
    or ``<home>/batch/<endpoint>/<name>/model/<revision>``), else None."""
    parts = Path(folder).parts
    if len(parts) >= 5 and parts[-2] == "model" and parts[-4] == "deployments":
        return Path(*parts[:-4])
    if len(parts) >= 6 and parts[-2] == "model" and parts[-5] == "batch":
        return Path(*parts[:-5])
    return None


# a folder of ours that a model was read from: <...>/model/<revision>[/<the model's folder>]
_STAGED = re.compile(r"/model/[0-9]+(/[^/]+)?$")


def _running_envs(cache: EnvCache, ignore: Iterable[int] = ()) -> Dict[str, List[int]]:
    """Env key -> pids of live processes whose command line runs something from that env,
    leaving out the pids in ``ignore``."""
    ignore = set(ignore)
    prefix = str(cache.root) + os.sep
    found: Dict[str, List[int]] = {}
    for pid, argv in processes.scan(processes.cmdline):
        if pid in ignore:
            continue
        for arg in argv:
            if arg.startswith(prefix):
                found.setdefault(arg[len(prefix):].split(os.sep, 1)[0], []).append(pid)
                break
    return found


# --- helpers ------------------------------------------------------------------------------------

def _find(cache: EnvCache, prefix: str) -> str:
    matches = [key for key in cache.keys() if key.startswith(prefix)] if prefix else cache.keys()
    if not matches:
        raise NotFound("No cached environment has a hash starting with the given prefix.")
    if len(matches) > 1:
        raise InvalidParameter("The hash prefix matches {} environments: give more of the hash."
                               .format(len(matches)))
    return matches[0]


def _last_used(cache: EnvCache, key: str) -> Optional[float]:
    meta = cache.read_metadata(key)
    if meta.get("last_used"):
        return float(meta["last_used"])
    try:  # no metadata (an env from an older version): its folder's age will do
        return cache.env_dir(key).stat().st_mtime
    except OSError:
        return None


def _unused_since(cache: EnvCache, key: str, cutoff: Optional[float]) -> bool:
    if cutoff is None:
        return True
    last = _last_used(cache, key)
    return last is None or last < cutoff


def _describe(cache: EnvCache, key: str, in_use: Dict[str, List[str]],
              size: int) -> Dict[str, Any]:
    """What list and show say of an env; ``size``: its weight in bytes (tree_size)."""
    meta = cache.read_metadata(key)
    root = cache.env_dir(key)
    python = venv_python(root)
    return {
        "key": key,
        "python_version": meta.get("python_version"),
        "python": str(python) if python.exists() else None,
        "manager": meta.get("manager"),
        "root": str(root),
        "size_bytes": size,
        "created": _when(meta.get("created")),
        "last_used": _when(_last_used(cache, key)),
        # staging folders of ours mean nothing to the user: the URIs recorded beside them do
        "models": [model for model in meta.get("models", []) if not _STAGED.search(model)],
        "deployments": sorted(in_use.get(key, [])),
        "package": meta.get("package"),
        "base_python": meta.get("base_python"),
        "wheel_hash": meta.get("wheel_hash"),
    }


def _locked_requirements(lock: Path) -> List[str]:
    """'name==version' (or 'name @ url') of each locked requirement, without hashes."""
    try:
        text = lock.read_text(encoding="utf-8")
    except OSError:
        return []
    return [line.rstrip("\\").strip() for line in text.splitlines()
            if re.match(r"^[A-Za-z0-9]", line)]
