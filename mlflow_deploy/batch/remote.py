"""What a Dask worker on another machine needs to score a job's mini-batches, and how it gets it.

Only the revision's files (the model, a script's code folder) and the lock of its environment
travel: ``pack`` reads them on the job's machine into a ``Shipment`` (a tar archive in memory,
as Dask moves bytes between machines), and ``localize``, in the Dask worker, turns a WorkerSpec
whose paths do not exist there into one whose paths do: the archive unpacked once per digest
under the worker's own home, and the environment reused from its own env cache or built from the
lock (``prepare_environment(lock=...)``: nothing resolved, the same key for the same interpreter
and sources). A worker that sees the paths (the job's machine, a shared filesystem) fetches
nothing. The input files themselves are not shipped: like Azure's datastores, they must be
readable at the same path on every worker.
"""
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Optional, Tuple

from mlflow_deploy.batch.worker import WorkerSpec, WorkerStartFailed
from mlflow_deploy.store import home_dir

__all__ = ["Shipment", "pack", "needs_shipment", "localize", "REBUILDABLE_MANAGERS"]

#: the folders of a WorkerSpec, as they are named inside a shipment's archive
_FOLDERS = ("model_dir", "code_dir", "azureml_model_dir")
#: env managers whose envs a worker can rebuild from the lock alone (conda's lock is another
#: format, and ``local`` is whatever interpreter ran the job)
REBUILDABLE_MANAGERS = ("uv", "virtualenv")
#: where shipments are unpacked, under the Dask worker's MLFLOW_DEPLOY_HOME
_SHIPPED = "shipped"


@dataclass(frozen=True)
class Shipment:
    digest: str                  # sha256 of ``archive``: the folder it is unpacked into
    archive: bytes               # tar of the spec's folders, each under its field's name
    nested: Dict[str, Tuple[str, str]]  # field -> (field it lies in, relative path)
    lock: Optional[str]          # the environment's lock file (None: it has none)


def pack(spec: WorkerSpec) -> Shipment:
    """The spec's folders and its environment's lock, read on the job's machine."""
    paths = {name: getattr(spec, name) for name in _FOLDERS if getattr(spec, name)}
    nested: Dict[str, Tuple[str, str]] = {}
    for name, path in paths.items():
        for outer, outer_path in paths.items():
            if outer != name and outer not in nested and _inside(path, outer_path):
                nested[name] = (outer, os.path.relpath(path, outer_path))
                break
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, path in paths.items():
            if name not in nested:
                tar.add(path, arcname=name)
    archive = buffer.getvalue()
    lock = None
    if spec.env_lock and os.path.isfile(spec.env_lock):
        lock = Path(spec.env_lock).read_text(encoding="utf-8")
    return Shipment(hashlib.sha256(archive).hexdigest()[:32], archive, nested, lock)


def needs_shipment(spec: WorkerSpec) -> bool:
    """True when this machine lacks a path of the spec: its interpreter or one of its folders."""
    paths = [spec.python] + [getattr(spec, name) for name in _FOLDERS]
    return any(path and not os.path.exists(path) for path in paths)


def localize(spec: WorkerSpec, shipment: Shipment,
             home: Optional[os.PathLike] = None) -> WorkerSpec:
    """``spec`` with paths that exist on this machine: unchanged when they all do, else the
    shipment unpacked and the environment rebuilt from its lock. Raises WorkerStartFailed when
    the environment cannot be rebuilt here."""
    if not needs_shipment(spec):
        return spec
    root = _unpack(shipment, Path(home) if home else home_dir())
    changes: Dict[str, str] = {}
    for name in _FOLDERS:
        path = getattr(spec, name)
        if path and not os.path.exists(path):
            outer, relative = shipment.nested.get(name, (name, "."))
            changes[name] = os.path.normpath(str(root / outer / relative))
    local = replace(spec, **changes)
    if not os.path.exists(spec.python):
        local = replace(local, python=_rebuild_env(local, shipment, home))
    return local


def _rebuild_env(spec: WorkerSpec, shipment: Shipment, home: Optional[os.PathLike]) -> str:
    if spec.env_manager not in REBUILDABLE_MANAGERS or not shipment.lock \
            or not spec.python_version:
        raise WorkerStartFailed(
            "the deployment's environment is not on this Dask worker, and only an environment "
            "of env_manager {} can be built here from its lock".format(
                " or ".join(REBUILDABLE_MANAGERS)))
    # imported here: the envs package is needed only where an environment is built
    from mlflow_deploy.envs import EnvError, prepare_environment

    try:
        env = prepare_environment(spec.model_dir or spec.code_dir or ".",
                                  manager=spec.env_manager, lock=shipment.lock,
                                  python_version=spec.python_version, home=home)
    except EnvError as exc:
        raise WorkerStartFailed("the deployment's environment could not be built on this Dask "
                                "worker: {}".format(exc)) from None
    return env.python


def _unpack(shipment: Shipment, home: Path) -> Path:
    """The shipment's folders under ``home/shipped/<digest>``, unpacked once: into a scratch
    folder renamed into place, so a reader never sees half of it and concurrent tasks agree."""
    target = home / _SHIPPED / shipment.digest
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".tmp-" + shipment.digest, dir=str(target.parent)))
    try:
        with tarfile.open(fileobj=io.BytesIO(shipment.archive), mode="r") as tar:
            _extract(tar, scratch)
        try:
            os.rename(scratch, target)
        except OSError:
            if not target.is_dir():  # not another task's rename: a real failure
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _extract(tar: tarfile.TarFile, into: Path) -> None:
    """Only what stays inside ``into``: the archive is ours, but it crossed a network."""
    try:
        if hasattr(tarfile, "data_filter"):  # refuses paths and links that leave, devices
            tar.extractall(str(into), filter="data")
            return
        root = str(into.resolve())
        for member in tar.getmembers():
            where = os.path.realpath(os.path.join(root, member.name))
            # a hard link names a member of the archive; a symbolic one, a path beside it
            target = where if not (member.issym() or member.islnk()) else os.path.realpath(
                os.path.join(root if member.islnk() else os.path.dirname(where),
                             member.linkname))
            if not (member.isfile() or member.isdir() or member.issym() or member.islnk()) \
                    or os.path.commonpath([root, where, target]) != root:
                raise tarfile.TarError(member.name)
        tar.extractall(root)
    except (tarfile.TarError, ValueError):
        raise WorkerStartFailed(
            "the deployment's files arrived damaged on this Dask worker") from None


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path != folder and os.path.commonpath([path, folder]) == folder
