"""Where built environments live, and the two primitives that keep the cache safe:
an fcntl file lock per entry and atomic writes (temp file + rename).

Layout under ``$MLFLOW_DEPLOY_HOME/envs/`` (default ``~/.mlflow-deploy/envs``)::

    <key>/                the venv (only ever appears whole: built aside, then renamed)
    <key>.lock            the requirements lock (with hashes) the venv was installed from
    <key>.json            metadata: python, manager, models that used it, created, last used
    .resolved/<inputs>.lock  memo: model requirement files + interpreter + wheel deps -> lock
    .wheels/<src-hash>/   the project's wheel built from these sources
    .building/<key>-*     venvs being built (a killed build's leftovers are removed by the next)
    .mutex/<name>         fcntl lock files
"""
import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Optional, Union

__all__ = ["HOME_ENV", "CACHE_ENV", "EnvCache", "file_lock", "atomic_write", "sha256_text"]

#: Same variable as the control plane's store (mlflow_deploy.store.HOME_ENV).
HOME_ENV = "MLFLOW_DEPLOY_HOME"
#: Where the envs live when not under the home: one cache shared by several homes (a test suite,
#: or users who keep deployment state per project but build each environment once).
CACHE_ENV = "MLFLOW_DEPLOY_ENV_CACHE"


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
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock across processes (released by the kernel if the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path), "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


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

    def wheel_dir(self, source_hash: str) -> Path:
        return self.root / ".wheels" / source_hash

    def building_dir(self) -> Path:
        return self.root / ".building"

    def mutex(self, name: str):
        return file_lock(self.root / ".mutex" / name)

    # metadata --------------------------------------------------------------------------------
    def read_metadata(self, key: str) -> Dict[str, Any]:
        try:
            return json.loads(self.metadata_file(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def record_use(self, key: str, models: Iterable[str], **fields: Any) -> Dict[str, Any]:
        """Merge ``fields`` into the env's metadata, add ``models`` and stamp ``last_used``.
        Callers hold the env's mutex, so concurrent users do not lose each other's models."""
        now = time.time()
        meta = self.read_metadata(key)
        meta.update(fields)
        meta.setdefault("key", key)
        meta.setdefault("created", now)
        meta["last_used"] = now
        meta["models"] = sorted(set(meta.get("models", [])) | set(models))
        atomic_write(self.metadata_file(key), json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return meta
