"""Reading the logs of detached processes (servers, gateways, batch jobs): the last lines, and the
lines as they come, across the rotations of ``scoring/logfile.py`` (a log copied to ``<log>.1``
and emptied in place).

Shared by online/ and batch/, which may not import each other.
"""
import os
from typing import List, Optional, Tuple

from mlflow_deploy.scoring.logfile import files, rotated

__all__ = ["tail", "Follower"]

_BLOCK = 1 << 16


def tail(path: os.PathLike, lines: Optional[int] = None) -> Tuple[List[str], int]:
    """The last ``lines`` complete lines of the log at ``path`` (every line it still has, its
    old copies first, when None), and the offset in the current file just past them, where a
    ``Follower`` goes on. A line still being written is left for the follower."""
    path = os.fspath(path)
    end = _complete_end(path)
    found: List[bytes] = []
    for index, name in enumerate(reversed(files(path))):
        wanted = None if lines is None else lines - len(found)
        if wanted is not None and wanted <= 0:
            break
        found[:0] = _last_lines(name, wanted, end if index == 0 else None)
    return [_text(line) for line in found], end


class Follower:
    """The lines appended to a log since ``offset`` (its current end when None), a rotation
    included: when ``<log>.1`` is a new file, the lines not read yet are at the end of that copy
    and the log goes on from its start. At most one rotation between two reads is followed."""

    def __init__(self, path: os.PathLike, offset: Optional[int] = None):
        self.path = os.fspath(path)
        self.offset = _size(self.path) if offset is None else offset
        self.copy = _inode(rotated(self.path, 1))
        self.pending = b""

    def read(self) -> List[str]:
        """The complete lines appended since the last read."""
        copy = _inode(rotated(self.path, 1))
        data = b""
        if copy != self.copy:
            data = _read(rotated(self.path, 1), self.offset)
            self.copy, self.offset = copy, 0
        elif _size(self.path) < self.offset:
            return []  # emptied by a rotation whose copy is not in place yet: next time
        more = _read(self.path, self.offset)
        self.offset += len(more)
        *complete, self.pending = (self.pending + data + more).split(b"\n")
        return [_text(line) for line in complete]

    def rest(self) -> List[str]:
        """The line still without its end, for a log that is over (its process ended)."""
        rest, self.pending = self.pending, b""
        return [_text(rest)] if rest else []


def _last_lines(path: str, count: Optional[int], end: Optional[int]) -> List[bytes]:
    """The last ``count`` (all when None) lines of ``path`` before byte ``end`` (its end when
    None), reading backwards only as far as needed."""
    try:
        with open(path, "rb") as f:
            position = f.seek(0, os.SEEK_END) if end is None else end
            data = b""
            while position > 0 and (count is None or data.count(b"\n") <= count):
                step = min(_BLOCK, position)
                position -= step
                f.seek(position)
                data = f.read(step) + data
    except OSError:
        return []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if position > 0:
        lines = lines[1:]  # begun before the data read
    return lines if count is None else lines[-count:]


def _complete_end(path: str) -> int:
    """The offset just past the last newline of ``path``."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            position = size
            while position > 0:
                step = min(_BLOCK, position)
                position -= step
                f.seek(position)
                cut = f.read(step).rfind(b"\n")
                if cut >= 0:
                    return position + cut + 1
    except OSError:
        pass
    return 0


def _read(path: str, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return b""


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _inode(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace").rstrip("\r")
