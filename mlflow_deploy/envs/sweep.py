"""What ``mlflow-deploy env prune`` removes besides environments, once it has removed those.

* Project wheels in the per-user build cache (cache.BuildCache) of other sources than the installed
  ones that no env of this env cache records (its ``wheel_hash``); with ``--older-than``, only those
  not used for that long (a wheel folder's mtime is stamped at each use). Each is removed under its
  hash's exclusive lock, taken without waiting: a build that is about to install a wheel holds it
  shared (wheel.project_wheel), and the wheel is then kept and said so. Scratch folders of killed
  wheel builds go the same way.
* Wheels in the env cache's ``.wheels/``, where versions before the build cache kept them (under
  the lock ``wheel`` those versions build with).
* Resolution memos (``.resolved/``) whose lock is no env's of this cache (a ``<key>.lock`` beside
  the envs, including envs being built), older than ``--older-than`` (default: any age), each under
  its ``resolve-<inputs>`` lock taken without waiting (a build holds it shared from reading the
  memo until its env is built: lock.resolve); and the scratch of killed resolves.
  The memo of every env that stays is kept, so reusing it still needs no network.
* Lock files (``.mutex/``) of both caches that nobody holds (cache.try_remove_lock_file).

Nothing here waits for a build (only for an older version's wheel build, on ``.wheels/``): what a
build holds is kept (and said so, for wheels).
"""
import contextlib
import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Set

from mlflow_deploy.envs.cache import (BuildCache, EnvCache, remove_aside, tree_size,
                                      try_remove_lock_file)
from mlflow_deploy.envs.lock import read_memo

__all__ = ["Swept", "sweep", "WHEEL", "RESOLUTION", "SCRATCH", "LOCK_FILE"]

WHEEL, RESOLUTION, SCRATCH, LOCK_FILE = "wheel", "resolution", "scratch", "lock file"
_WHEEL_HASH = re.compile(r"^[0-9a-f]{16}$")


@dataclass(frozen=True)
class Swept:
    kind: str  # WHEEL, RESOLUTION, SCRATCH (a killed build's or resolve's folder), LOCK_FILE
    name: str
    size: int  # bytes freed (or that would be)
    last_used: Optional[float] = None
    kept: Optional[str] = None  # why it was left in place; None: removed (or would be)


def sweep(cache: EnvCache, build: BuildCache, cutoff: Optional[float], dry_run: bool,
          current_wheel: Optional[str], gone: Iterable[str] = ()) -> List[Swept]:
    """Remove (or with ``dry_run`` list) what no env of ``cache`` needs any more. ``cutoff``: a
    time; wheels and memos used since then stay. ``current_wheel``: the installed sources' hash,
    whose wheel always stays. ``gone``: env keys to count as removed (a dry run's)."""
    gone = set(gone)
    swept = _wheels(cache, build, cutoff, dry_run, current_wheel, gone)
    swept += _legacy_wheels(cache, dry_run)
    swept += _resolutions(cache, cutoff, dry_run, gone)
    for folder in (cache.mutex_dir(), build.mutex_dir()):
        swept += _lock_files(folder, dry_run)
    return swept


def _wheels(cache: EnvCache, build: BuildCache, cutoff: Optional[float], dry_run: bool,
            current_wheel: Optional[str], gone: Set[str]) -> List[Swept]:
    used: Set[str] = {str(cache.read_metadata(key).get("wheel_hash")) for key in cache.keys()
                      if key not in gone}
    if current_wheel:
        used.add(current_wheel)
    swept = []
    for digest in build.wheel_hashes():
        folder = build.wheel_dir(digest)
        last = _mtime(folder)
        if digest in used or (cutoff is not None and last is not None and last >= cutoff):
            continue
        with build.wheel_mutex(digest, blocking=False) as got:
            if not got:
                swept.append(Swept(WHEEL, digest, 0, last, kept="in use by a build"))
                continue
            if not folder.is_dir():  # removed by a concurrent prune
                continue
            size = tree_size(folder)
            if not dry_run:
                remove_aside(folder, folder.parent, ".tmp-{}-removing-".format(digest))
        swept.append(Swept(WHEEL, digest, size, last))
    wheels = build.wheels_dir()
    for scratch in sorted(wheels.glob(".tmp-*")) + sorted(wheels.glob(".src-*")):
        digest = scratch.name.split("-")[1] if scratch.name.count("-") >= 2 else ""
        if not _WHEEL_HASH.match(digest):
            continue
        with build.wheel_mutex(digest, blocking=False) as got:
            if got and scratch.exists():  # no build of that hash runs: a killed one's
                swept.append(Swept(SCRATCH, scratch.name, tree_size(scratch)))
                if not dry_run:
                    shutil.rmtree(str(scratch), ignore_errors=True)
    return swept


def _legacy_wheels(cache: EnvCache, dry_run: bool) -> List[Swept]:
    legacy = cache.root / ".wheels"
    if not legacy.is_dir():
        return []
    with cache.mutex("wheel"):
        if not legacy.is_dir():
            return []
        swept = [Swept(WHEEL, "{} (in {}, left by an older version)".format(entry.name, legacy),
                       tree_size(Path(entry.path)), _mtime(Path(entry.path)))
                 for entry in os.scandir(str(legacy)) if entry.is_dir(follow_symlinks=False)
                 and not entry.name.startswith(".")]
        leftovers = tree_size(legacy) - sum(s.size for s in swept)
        if leftovers > 0:
            swept.append(Swept(SCRATCH, str(legacy), leftovers))
        if not dry_run:
            remove_aside(legacy, legacy.parent, ".wheels-removing-")
    return swept


def _resolutions(cache: EnvCache, cutoff: Optional[float], dry_run: bool,
                 gone: Set[str]) -> List[Swept]:
    resolved = cache.root / ".resolved"
    if not resolved.is_dir():
        return []
    swept = []
    with contextlib.ExitStack() as held:
        candidates = []
        for memo in sorted(resolved.glob("*.lock")):
            last = _mtime(memo)
            if cutoff is not None and last is not None and last >= cutoff:
                continue
            # a build holds its memo (shared) from reading it until its env's lock is written
            if held.enter_context(cache.mutex("resolve-" + memo.name[: -len(".lock")],
                                              blocking=False)):
                candidates.append((memo, last))
        in_use = _env_locks(cache, gone)  # read with the candidates locked: no build is between
        for memo, last in candidates:
            text = read_memo(memo)
            if text is None or _digest(text) in in_use:
                continue
            swept.append(Swept(RESOLUTION, memo.name[: -len(".lock")], _size(memo), last))
            if not dry_run:
                memo.unlink()
    for scratch in sorted(resolved.glob(".tmp-*")):
        rest = scratch.name[len(".tmp-"):]
        if "-" not in rest:  # an older version's, not named after its inputs
            continue
        with cache.mutex("resolve-" + rest.rsplit("-", 1)[0], blocking=False) as got:
            if got and scratch.exists():  # no resolve of those inputs runs: a killed one's
                swept.append(Swept(SCRATCH, scratch.name, tree_size(scratch)))
                if not dry_run:
                    shutil.rmtree(str(scratch), ignore_errors=True)
    return swept


def _env_locks(cache: EnvCache, gone: Set[str]) -> Set[str]:
    """Digests of the locks beside the envs: built ones and those being built."""
    digests = set()
    if not cache.root.is_dir():
        return digests
    for entry in os.scandir(str(cache.root)):
        if entry.name.endswith(".lock") and not entry.name.startswith(".") and entry.is_file() \
                and entry.name[: -len(".lock")] not in gone:
            text = read_memo(Path(entry.path))
            if text is not None:
                digests.add(_digest(text))
    return digests


def _lock_files(folder: Path, dry_run: bool) -> List[Swept]:
    if not folder.is_dir():
        return []
    return [Swept(LOCK_FILE, entry.name, 0) for entry in sorted(os.scandir(str(folder)),
                                                                 key=lambda e: e.name)
            if entry.is_file(follow_symlinks=False)
            and try_remove_lock_file(Path(entry.path), dry_run=dry_run)]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _mtime(path: Path) -> Optional[float]:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_blocks * 512
    except OSError:
        return 0
