"""What Linux's /proc tells about a process: its state, a field of its stat line or of its status
(resident memory, threads), its open files, environment, working directory and command line, its
children, and which pids there are.

Each reader takes a pid and returns None when the process is gone or cannot be read (another
user's), and never raises: a process may exit between any two reads. ``scan`` walks every process
with one reader, for the callers that look for processes by what they run.
"""

import os
from typing import Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

__all__ = [
    "PPID",
    "PGRP",
    "SESSION",
    "UTIME",
    "STIME",
    "pids",
    "scan",
    "state",
    "stat_field",
    "is_running",
    "children",
    "status_field",
    "fd_count",
    "environ",
    "cwd",
    "cmdline",
]

T = TypeVar("T")

PROC = "/proc"

#: indexes of stat_field (fields after the command name, counted from 0 = the state); UTIME and
#: STIME are CPU time in clock ticks (os.sysconf("SC_CLK_TCK") a second)
PPID, PGRP, SESSION, UTIME, STIME = 1, 2, 3, 11, 12

#: states of a process that has exited: a zombie (not yet reaped) or dead
_EXITED = ("Z", "X", "x")


def pids() -> Iterator[int]:
    """Every pid in /proc now (none where there is no /proc)."""
    try:
        entries = os.listdir(PROC)
    except OSError:
        return
    for entry in entries:
        if entry.isdigit():
            yield int(entry)


def scan(read: Callable[[int], Optional[T]]) -> Iterator[Tuple[int, T]]:
    """``(pid, read(pid))`` for every process ``read`` can read, e.g. ``scan(cmdline)``."""
    for pid in pids():
        value = read(pid)
        if value is not None:
            yield pid, value


def _read(pid: int, name: str) -> Optional[bytes]:
    try:
        with open(f"{PROC}/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return None


def _stat(pid: int) -> Optional[List[str]]:
    """The fields of /proc/<pid>/stat after the command name. That name is in parentheses and may
    hold spaces and parentheses itself, so the fields start after the last ')'."""
    raw = _read(pid, "stat")
    if raw is None:
        return None
    fields = raw.decode("ascii", "replace").rsplit(")", 1)
    return fields[1].split() if len(fields) == 2 else None


def state(pid: int) -> Optional[str]:
    """The one-letter state (R, S, D, Z, ...)."""
    fields = _stat(pid)
    return fields[0] if fields else None


def stat_field(pid: int, index: int) -> Optional[int]:
    """A numeric field of the stat line, counting after the command name from 0 (the state):
    PPID, PGRP, SESSION, UTIME, STIME."""
    fields = _stat(pid)
    try:
        return int(fields[index]) if fields else None
    except (IndexError, ValueError):
        return None


def is_running(pid: int) -> bool:
    """The process exists and has not exited (a zombie has, though it is not reaped yet)."""
    current = state(pid)
    return current is not None and current not in _EXITED


def children(pid: int) -> List[int]:
    """The running processes whose parent is ``pid`` (a gunicorn master's workers), in pid
    order."""
    return sorted(child for child, parent in scan(lambda p: stat_field(p, PPID))
                  if parent == pid and is_running(child))


def status_field(pid: int, name: str) -> Optional[int]:
    """A numeric field of /proc/<pid>/status by its name, its unit dropped: ``VmRSS`` (resident
    memory, kB), ``Threads``."""
    raw = _read(pid, "status")
    if raw is None:
        return None
    prefix = name.encode() + b":"
    for line in raw.splitlines():
        if line.startswith(prefix):
            try:
                return int(line[len(prefix):].split()[0])
            except (IndexError, ValueError):
                return None
    return None


def fd_count(pid: int) -> Optional[int]:
    """How many file descriptors the process has open."""
    try:
        return len(os.listdir(f"{PROC}/{pid}/fd"))
    except OSError:
        return None


def environ(pid: int) -> Optional[Dict[str, str]]:
    """The environment the process was started (exec'd) with."""
    raw = _read(pid, "environ")
    if raw is None:
        return None
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def cwd(pid: int) -> Optional[str]:
    """The process's working directory."""
    try:
        return os.readlink(f"{PROC}/{pid}/cwd")
    except OSError:
        return None


def cmdline(pid: int) -> Optional[List[str]]:
    """The process's argv (empty for a zombie or a kernel thread)."""
    raw = _read(pid, "cmdline")
    if raw is None:
        return None
    if not raw:
        return []
    # each argument ends with a NUL; a process that rewrote its title may have left off the last
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return raw.decode("utf-8", "replace").split("\0")
