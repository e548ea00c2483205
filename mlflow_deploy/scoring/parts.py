"""A batch job's part files: each written whole or not at all (a temporary file renamed into
place), made durable by whoever records it as done, and the formats a job's rows are written in.

Standard library only: the job's process (``batch/output.py``) and the batch worker in the
model's env both write parts with these, and the job imports neither pandas nor the driver.
"""
import os
import tempfile

__all__ = ["FORMATS", "write_part", "make_durable", "fsync_dir", "discard"]

#: the output formats of a job's rows: Azure's append_row lines, a CSV with a header, Parquet
#: (the worker also takes "none": summary_only writes no rows)
FORMATS = ("azure", "csv", "parquet")


def write_part(path: "os.PathLike[str] | str", data: bytes, sync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file beside it, fsync'ed, renamed into
    place, and the folder fsync'ed, so the file is there whole or not at all, even after a
    crash. ``sync`` False: renamed into place unsynced, whole for every process, and durable
    only once ``make_durable`` is called (by the one that records it as done)."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        discard(temp)
        raise
    if sync:
        fsync_dir(folder)


def make_durable(path: "os.PathLike[str] | str") -> None:
    """fsync a file written by ``write_part(..., sync=False)``, and its folder's rename."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(os.path.dirname(os.fspath(path)) or ".")


def fsync_dir(folder: "os.PathLike[str] | str") -> None:
    """Make a rename in ``folder`` durable (best effort: some filesystems refuse it)."""
    try:
        fd = os.open(os.fspath(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def discard(path: str) -> None:
    """Remove a temporary file if it is there."""
    try:
        os.unlink(path)
    except OSError:
        pass
