"""A server's or gateway's log, kept to a size: past ``max_bytes`` it is copied to ``<log>.1``
(the older copies moved up to ``<log>.<backups>``, the oldest dropped) and emptied.

Why copy-then-truncate, by one thread of one process: a scoring server's log is written by the
gunicorn master and every worker, through the one file description ``detached.start`` (or the
fork server) opened with O_APPEND and handed to all of them as stdout and stderr, and by whatever
the model or a scoring script prints. Renaming the file away would leave every writer appending
to the renamed file until each reopened it, which workers and user code never do; a
RotatingFileHandler in each process would rename under the others' feet. Truncating in place
is safe with O_APPEND writers: each write lands at the file's end as it is at that moment, so
after the truncation they go on at offset 0, without a hole. The price, as with logrotate's
copytruncate: a line written between the end of the copy and the truncation (microseconds) is
lost. Two masters of one instance (an update's handover) may both watch the file: an exclusive
lock on a file description of its own makes one rotation at a time, and the size is checked
again under it. Readers (get-logs) follow a rotation by the inode of ``<log>.1``.

Standard library only: it runs in the master of every model's environment, and in the gateway.
"""
import fcntl
import json
import os
import re
import shutil
import threading
import time
from typing import List, Optional, Tuple

#: the log a detached process of ours writes to (set by whoever starts it): the one it rotates
LOG_FILE_ENV = "MLFLOW_DEPLOY_LOG_FILE"
#: the size a log is rotated at, and how many old copies are kept: the defaults, and the
#: environment variables that override them (in the environment the server is started with)
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3
MAX_BYTES_ENV = "MLFLOW_DEPLOY_LOG_MAX_BYTES"
BACKUPS_ENV = "MLFLOW_DEPLOY_LOG_BACKUPS"
#: how often the size is looked at (one fstat)
CHECK_S = 0.5
_PLAIN = re.compile(r"[!#-~]{1,200}")  # printable, no space or '"': written as is


def token(value: str) -> str:
    """A client's value (a request id, a method) as one token of a log line: JSON-quoted and
    escaped unless plain, so no value can end the line or pass for another field."""
    return value if _PLAIN.fullmatch(value) else json.dumps(value)


def limits() -> Tuple[int, int]:
    """(max_bytes, backups): the environment's where they are positive integers, else the
    defaults (a server never fails to start over its log's size)."""
    return _positive(MAX_BYTES_ENV, MAX_BYTES), _positive(BACKUPS_ENV, BACKUPS)


def _positive(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


def rotated(path: str, index: int) -> str:
    """The ``index``-th old copy of ``path`` (1 is the newest)."""
    return "{}.{}".format(path, index)


def files(path: str, backups: Optional[int] = None) -> List[str]:
    """``path`` and its old copies that exist, oldest first."""
    count = limits()[1] if backups is None else backups
    old = [rotated(path, k) for k in range(count, 0, -1)]
    return [p for p in old if os.path.exists(p)] + [path]


def rotate(path: str, max_bytes: int, backups: int) -> bool:
    """Rotate ``path`` if it is larger than ``max_bytes``; whether it was."""
    try:
        source = open(path, "r+b")  # read to copy, written only to be truncated
    except OSError:
        return False
    with source:
        try:
            fcntl.flock(source, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # another process rotates it now
        if os.fstat(source.fileno()).st_size <= max_bytes:
            return False  # it just did
        for k in range(backups - 1, 0, -1):
            if os.path.exists(rotated(path, k)):
                os.replace(rotated(path, k), rotated(path, k + 1))
        partial = rotated(path, 1) + ".tmp"
        with open(partial, "wb") as copy:
            shutil.copyfileobj(source, copy, 1 << 20)
            rest = source.read()  # what was appended during the copy
            os.ftruncate(source.fileno(), 0)  # at once: a line appended since then is lost
            copy.write(rest)
        # after the truncation: a reader that sees a new <log>.1 finds the log emptied already
        os.replace(partial, rotated(path, 1))
    return True


def keep_rotated(path: Optional[str] = None) -> Optional[threading.Thread]:
    """Start the daemon thread that rotates this process's log (``path``, else the one named by
    LOG_FILE_ENV; nothing where neither is given: a server in a terminal)."""
    path = path or os.environ.get(LOG_FILE_ENV)
    if not path:
        return None
    max_bytes, backups = limits()

    def run() -> None:
        while True:
            time.sleep(CHECK_S)
            try:
                if os.stat(path).st_size > max_bytes:
                    rotate(path, max_bytes, backups)
            except OSError:
                pass  # gone (the deployment is being deleted) or unwritable: try again later

    thread = threading.Thread(target=run, name="mlflow-deploy-log-rotation", daemon=True)
    thread.start()
    return thread
