"""Processes that outlive the command that started them: scoring servers, endpoint gateways,
batch jobs. Each is started in its own session (a terminal's Ctrl-C or the end of the starting
command's process group does not reach it), with its output appended to a log, and kept here so
that this process reaps it once it exits: no zombies, and early death is seen at once.

Shared by online/ and batch/, which may not import each other.
"""

import os
import subprocess
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

__all__ = ["start", "adopt", "reap", "children"]

#: Popen objects of the detached children this process started, by pid
children: Dict[int, subprocess.Popen] = {}


def start(command: Sequence[str], log_path: os.PathLike, *,
          env: Optional[Mapping[str, str]] = None,
          cwd: Optional[os.PathLike] = None) -> subprocess.Popen:
    """Start ``command`` detached: its own session, no stdin, stdout and stderr appended to
    ``log_path`` (its folder made if need be), no file descriptor of ours inherited. Returns at
    once; the child is adopted."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(command),
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(cwd) if cwd is not None else None,
            start_new_session=True,
            close_fds=True,
        )
    adopt(proc)
    return proc


def adopt(proc: subprocess.Popen) -> None:
    """Keep a detached child this process started so it is reaped."""
    children[proc.pid] = proc


def reap(pid: int) -> None:
    """Collect every exited child of ours (not only ``pid``), and ``pid`` if it is an exited
    child we did not start through here."""
    for child, proc in list(children.items()):
        if proc.poll() is not None:
            children.pop(child, None)
    if pid in children:
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: its parent (or init) reaps it
