"""Where built environments live, and the two primitives that keep the cache safe:
an fcntl file lock per entry and atomic writes (temp file + rename).

Layout under ``$MLFLOW_DEPLOY_HOME/envs/`` (default ``~/.mlflow-deploy/envs``, or
``$MLFLOW_DEPLOY_ENV_CACHE``)::

    <key>/                the venv (only ever appears whole: built aside, then renamed)
    <key>.lock            the requirements lock (with hashes) the venv was installed from
    <key>.json            metadata: python, manager, models that used it (as their users named
                          them: a URI or a folder), the folders they were read from (a
                          deployment's staging folder tells `env list` its home), created, last
                          used, wheel_hash, package (if built from one)
    .resolved/<inputs>.lock  memo: model requirement files + interpreter + wheel deps -> lock
                          (kept per env cache: a new env cache resolves afresh); ``env prune``
                          removes those of no remaining env (lock.py, sweep.py)
    .resolved/.tmp-<inputs>-*  a resolve's scratch
    .building/<key>-*     venvs being built (a killed build's leftovers are removed by the next)
                          or being removed by ``env prune`` (renamed here first, then deleted)
    .mutex/<name>         fcntl lock files: ``<key>`` (building, removing that env),
                          ``resolve-<inputs>`` (exclusive while resolving; shared by a build from
                          reading the memo until its env is installed); ``env prune`` removes
                          those nobody holds

Layout of the per-user build cache, ``$MLFLOW_DEPLOY_BUILD_CACHE`` (default
``${XDG_CACHE_HOME:-~/.cache}/mlflow-deploy``): what is built from the installed mlflow-deploy
sources rather than for a home, shared by every home and env cache of the user::

    wheels/<src-hash>/    the project's wheel built from the sources with that hash (wheel.py);
                          its folder's mtime is its last use (``env prune --older-than``)
    wheels/.tmp-<src-hash>-*  a wheel build's scratch, with its copy of the sources (killed:
                          removed by the next build of that hash, or by ``env prune``, which also
                          removes the ``.src-<src-hash>-*`` copies older versions made beside it)
    .mutex/wheel-<src-hash>  held exclusively while that wheel is built, shared by every
                          ``prepare_environment`` using it until its install is done, so ``env
                          prune`` never removes a wheel a live build is about to install
"""
import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, TypeVar, Union

T = TypeVar("T")

__all__ = ["HOME_ENV", "CACHE_ENV", "BUILD_CACHE_ENV", "EnvCache", "BuildCache", "file_lock",
           "memoised", "build_aside", "remove_aside", "try_remove_lock_file", "atomic_write",
           "sha256_text", "tree_size", "disk_use"]

#: Same variable as the control plane's store (mlflow_deploy.store.HOME_ENV).
HOME_ENV = "MLFLOW_DEPLOY_HOME"
#: Where the envs live when not under the home: one cache shared by several homes (a test suite,
#: or users who keep deployment state per project but build each environment once).
CACHE_ENV = "MLFLOW_DEPLOY_ENV_CACHE"
#: The per-user cache of what is built from our own sources (the project wheel).
BUILD_CACHE_ENV = "MLFLOW_DEPLOY_BUILD_CACHE"


def sha256_text(*parts: Union[str, bytes]) -> str:
    """A hex digest of several parts, each length-prefixed so that ("ab","c") != ("a","bc")."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        digest.update(str(len(data)).encode() + b":" + data)
    return digest.hexdigest()


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix="." + path.name + ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 is meant for secrets; these are not
        os.replace(tmp, str(path))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def file_lock(path: Path, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
    """Exclusive (or ``shared``) lock across processes, released by the kernel if the holder dies.
    Yields True; with ``blocking=False``, yields False at once (holding nothing) if it is taken.
    ``env prune`` deletes lock files nobody holds (try_remove_lock_file): a lock taken on a file
    that was unlinked meanwhile is no lock, so it is taken again on the file now at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
    while True:
        handle = open(str(path), "a+")
        try:
            fcntl.flock(handle.fileno(), mode)
            if _same_file(path, handle.fileno()):
                break
        except BlockingIOError:
            handle.close()
            yield False
            return
        except BaseException:
            handle.close()
            raise
        handle.close()
    try:
        yield True
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


@contextlib.contextmanager
def build_aside(target: Path, scratch_dir: Path, prefix: str) -> Iterator[Path]:
    """Make the folder ``target`` appear whole or not at all: yield a new empty folder
    ``<scratch_dir>/<prefix>*`` to build in, rename it onto ``target`` in one step when the block
    succeeds, remove it when the block fails or is interrupted. ``scratch_dir`` is on ``target``'s
    file system (the rename does not copy).

    The caller holds the lock that guards ``target`` and found no complete entry there: so any
    ``<prefix>*`` folder in ``scratch_dir`` is a killed build's, and a ``target`` that exists was
    left incomplete; both are removed first."""
    scratch_dir.mkdir(parents=True, exist_ok=True)
    for leftover in scratch_dir.glob(glob.escape(prefix) + "*"):
        shutil.rmtree(str(leftover), ignore_errors=True)
    if target.exists():
        shutil.rmtree(str(target), ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=str(scratch_dir)))
    try:
        yield scratch
        os.chmod(str(scratch), 0o755)  # mkdtemp's 0700 would hide it from other users
        os.rename(str(scratch), str(target))
    except BaseException:
        shutil.rmtree(str(scratch), ignore_errors=True)
        raise


def remove_aside(folder: Path, scratch_dir: Path, prefix: str) -> None:
    """Delete ``folder`` so that it leaves its lookup path in one step: renamed into
    ``<scratch_dir>/<prefix>*`` first, then removed there."""
    scratch_dir.mkdir(parents=True, exist_ok=True)
    doomed = Path(tempfile.mkdtemp(prefix=prefix, dir=str(scratch_dir)))
    os.rename(str(folder), str(doomed))  # onto the empty folder mkdtemp made
    shutil.rmtree(str(doomed), ignore_errors=True)


def memoised(mutex: Callable[..., Any], read: Callable[[], Optional[T]], make: Callable[[], None],
             hold: contextlib.ExitStack, refresh: bool = False) -> Tuple[T, bool]:
    """The cache's one protocol for an entry made once and then shared (a resolution memo, our
    wheel): ``read()`` under ``mutex(shared=True)``, kept in ``hold`` so that ``env prune`` (which
    takes ``mutex()`` exclusively) leaves the entry alone until ``hold`` closes; if there is none
    (or ``refresh``), ``make()`` it under ``mutex()``, once even when several callers race, then
    take it like any other reader. Returns (entry, whether this call made it)."""
    made = False
    while True:
        if not refresh:
            with contextlib.ExitStack() as shared:
                shared.enter_context(mutex(shared=True))
                value = read()
                if value is not None:
                    hold.enter_context(shared.pop_all())
                    return value, made
        with mutex():
            if refresh or read() is None:  # else made by a concurrent caller meanwhile
                make()
                made = True
        refresh = False  # made: loop to take it, shared, like any other reader


def _same_file(path: Path, fd: int) -> bool:
    try:
        at_path = os.stat(str(path))
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)


def try_remove_lock_file(path: Path, dry_run: bool = False) -> bool:
    """Delete the lock file ``path`` if nobody holds its lock; True if it was (or, with
    ``dry_run``, would be) removed. It is unlinked while held exclusively: with file_lock's check,
    whoever opened it meanwhile locks the new file at ``path`` instead."""
    try:
        fd = os.open(str(path), os.O_RDONLY)  # flock needs no write access
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not _same_file(path, fd):
            return False
        if not dry_run:
            os.unlink(str(path))
        return True
    finally:
        os.close(fd)  # releases the lock


def _inodes(path: Path) -> Dict[Tuple[int, int], List[int]]:
    """(st_dev, st_ino) -> [size, links, links under ``path``] of every file and symlink under
    ``path`` (symlinks themselves, not what they point to)."""
    found: Dict[Tuple[int, int], List[int]] = {}
    for directory, _dirs, files in os.walk(str(path)):
        for name in files:
            try:
                stat = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            entry = found.setdefault((stat.st_dev, stat.st_ino), [stat.st_size, stat.st_nlink, 0])
            entry[2] += 1
    return found


def tree_size(path: Path, exclusive: bool = False) -> int:
    """Bytes under ``path``, a file with several hard links counted once. uv hard-links installed
    files from its cache, so most of a venv is shared: ``exclusive`` counts only files with no
    link outside ``path``, i.e. what deleting the tree frees."""
    return sum(size for size, links, inside in _inodes(path).values()
               if not exclusive or inside >= links)


def disk_use(paths: Iterable[Path]) -> Tuple[List[int], int]:
    """What each tree weighs (tree_size) and what they weigh together: a file hard-linked into
    several (envs installed from the same uv cache) counted once, as the disk holds it once."""
    sizes, seen, total = [], set(), 0
    for path in paths:
        inodes = _inodes(path)
        sizes.append(sum(size for size, _links, _inside in inodes.values()))
        total += sum(inodes[inode][0] for inode in inodes.keys() - seen)
        seen.update(inodes)
    return sizes, total


class EnvCache:
    """Paths and metadata of the env cache rooted at ``<home>/envs``."""

    def __init__(self, home: Optional[os.PathLike] = None):
        if home is None and os.environ.get(CACHE_ENV):
            self.root = Path(os.environ[CACHE_ENV]).expanduser().resolve()
            return
        home = home or os.environ.get(HOME_ENV) or Path.home() / ".mlflow-deploy"
        self.root = Path(home).expanduser().resolve() / "envs"

    # paths -----------------------------------------------------------------------------------
    def env_dir(self, key: str) -> Path:
        return self.root / key

    def lock_file(self, key: str) -> Path:
        return self.root / (key + ".lock")

    def metadata_file(self, key: str) -> Path:
        return self.root / (key + ".json")

    def resolved_file(self, inputs_hash: str) -> Path:
        return self.root / ".resolved" / (inputs_hash + ".lock")

    def smoke_log(self, key: str) -> Path:
        """The output of the env's last failed smoke test (build.smoke_test)."""
        return self.root / ".logs" / (key + "-smoke.log")

    def building_dir(self) -> Path:
        return self.root / ".building"

    def mutex_dir(self) -> Path:
        return self.root / ".mutex"

    def mutex(self, name: str, shared: bool = False, blocking: bool = True):
        return file_lock(self.mutex_dir() / name, shared=shared, blocking=blocking)

    # metadata --------------------------------------------------------------------------------
    def read_metadata(self, key: str) -> Dict[str, Any]:
        try:
            return json.loads(self.metadata_file(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def record_use(self, key: str, models: Iterable[str], folders: Iterable[str] = (),
                   **fields: Any) -> Dict[str, Any]:
        """Merge ``fields`` into the env's metadata, add ``models`` and ``folders`` and stamp
        ``last_used``. Callers hold the env's mutex, so concurrent users do not lose each other's
        models."""
        now = time.time()
        meta = self.read_metadata(key)
        meta.update(fields)
        meta.setdefault("key", key)
        meta.setdefault("created", now)
        meta["last_used"] = now
        meta["models"] = sorted(set(meta.get("models", [])) | set(models))
        meta["folders"] = sorted(set(meta.get("folders", [])) | set(folders))
        atomic_write(self.metadata_file(key), json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return meta

    # listing and removal (``mlflow-deploy env list/show/prune``) ------------------------------
    def keys(self) -> List[str]:
        """Keys of the cached envs: a folder (the venv) or a ``<key>.json`` left of one."""
        if not self.root.is_dir():
            return []
        keys = set()
        for entry in os.scandir(str(self.root)):
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                keys.add(entry.name)
            elif entry.name.endswith(".json"):
                keys.add(entry.name[: -len(".json")])
        return sorted(keys)

    def remove(self, key: str) -> None:
        """Delete an env, its lock and its metadata. The caller holds ``mutex(key)``. The folder is
        first renamed into ``.building/`` so that it leaves its lookup path in one step."""
        if self.env_dir(key).exists():
            remove_aside(self.env_dir(key), self.building_dir(), key + "-removing-")
        for path in (self.lock_file(key), self.metadata_file(key)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def default_build_cache() -> Path:
    """``$XDG_CACHE_HOME/mlflow-deploy``, else ``~/.cache/mlflow-deploy`` (XDG: a relative
    XDG_CACHE_HOME is ignored)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "mlflow-deploy"


class BuildCache:
    """The per-user cache of what is built from the installed mlflow-deploy sources: the project
    wheel, keyed by the hash of those sources (wheel.py). Not under a home: a fresh
    MLFLOW_DEPLOY_HOME (or env cache) reuses the wheel its sources already have."""

    def __init__(self, root: Optional[os.PathLike] = None):
        root = root or os.environ.get(BUILD_CACHE_ENV) or default_build_cache()
        self.root = Path(root).expanduser().resolve()

    def wheels_dir(self) -> Path:
        return self.root / "wheels"

    def wheel_dir(self, source_hash: str) -> Path:
        return self.wheels_dir() / source_hash

    def wheel_hashes(self) -> List[str]:
        """Source hashes that have a wheel folder (built, or being removed by ``env prune``)."""
        if not self.wheels_dir().is_dir():
            return []
        return sorted(e.name for e in os.scandir(str(self.wheels_dir()))
                      if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))

    def mutex_dir(self) -> Path:
        return self.root / ".mutex"

    def wheel_mutex(self, source_hash: str, shared: bool = False, blocking: bool = True):
        """Exclusive while the wheel is built or removed; shared while a build installs it."""
        return file_lock(self.mutex_dir() / ("wheel-" + source_hash), shared=shared,
                         blocking=blocking)
