"""The scoring timeout, enforced from outside the worker.

A sync worker stuck in native code (OpenMP after a fork, a C library waiting on a lock) never
returns to Python, so the in-worker deadline (app.deadline, a SIGALRM) cannot fire, and gunicorn's
own heartbeat timeout only kills the worker half a minute later, answering nothing and logging
"Perhaps out of memory?". Here every worker records, in a table shared with the gunicorn master,
when its current request started, the client socket's fd and the request ids; a thread in the
master checks the table and, for a request past its timeout:

1. stops the worker (SIGSTOP) and checks the request is still the same one;
2. takes a duplicate of the worker's client socket (``pidfd_getfd``, Linux 5.6+: the master is
   the worker's parent, which may) and answers it ``504 Scoring timeout after N ms`` with Azure's
   headers, as the worker would have;
3. kills the worker (SIGKILL); gunicorn forks a fresh one, and its "Perhaps out of memory?" line
   for that pid is rewritten to say why it died.

Where ``pidfd_getfd`` is unavailable the worker is still killed at the deadline; the client sees
the connection close. The timeout path that does return to Python keeps answering from the worker
(app.deadline): the master acts only ``GRACE_S`` later, when the worker has not.
"""
import ctypes
import logging
import mmap
import os
import signal
import socket
import struct
import threading
import time
from typing import Any, Dict, Optional, Set

from . import access, pipeline
from .errors import ScoringTimeout

log = logging.getLogger("mlflow_deploy.scoring")

#: the master acts this long after the deadline: the worker's own 504 comes first when it can
GRACE_S = 0.05
POLL_S = 0.02
MAX_WORKERS = 128
ROUTES = ("score", "invocations")
_ID = 112  # bytes kept of each request id (ids are at most 100 characters)
_SLOT = struct.Struct("qqqq{0}s{0}s".format(_ID))  # pid, started_ns, fd, route, rid, client rid
_SYS_PIDFD_GETFD = 438  # the same number on x86_64 and aarch64 (the generic syscall table)


class Watchdog:
    """The shared table (made in the master before it forks) and the master's thread."""

    def __init__(self, timeout_ms: int, metrics: Any = None):
        self.timeout_ms = int(timeout_ms)
        self.metrics = metrics
        self._table = mmap.mmap(-1, _SLOT.size * MAX_WORKERS)
        self._slot: Optional[int] = None  # in a worker: its row
        self._killed: Dict[int, str] = {}  # in the master: pid -> why
        self._claimed: Set[int] = set()
        self._lock = threading.Lock()

    # -- the master ---------------------------------------------------------------------------
    def assign(self, worker: Any) -> None:
        """gunicorn's pre_fork: give the worker about to be forked a free row."""
        with self._lock:
            free = next(i for i in range(MAX_WORKERS) if i not in self._claimed)
            self._claimed.add(free)
        _SLOT.pack_into(self._table, free * _SLOT.size, 0, 0, -1, 0, b"", b"")
        worker.watchdog_slot = free

    def release(self, worker: Any) -> None:
        """gunicorn's child_exit: the worker's row is free again."""
        slot = getattr(worker, "watchdog_slot", None)
        if slot is not None:
            _SLOT.pack_into(self._table, slot * _SLOT.size, 0, 0, -1, 0, b"", b"")
            with self._lock:
                self._claimed.discard(slot)

    def start(self) -> None:
        """The checking thread, in the master (gunicorn's when_ready)."""
        threading.Thread(target=self._run, name="mlflow-deploy-watchdog", daemon=True).start()
        logging.getLogger("gunicorn.error").addFilter(self._reword)

    def _run(self) -> None:
        limit_ns = int((self.timeout_ms / 1000.0 + GRACE_S) * 1e9)
        while True:
            time.sleep(POLL_S)
            now = time.monotonic_ns()
            for slot in range(MAX_WORKERS):
                pid, started, fd, route, rid, client = _SLOT.unpack_from(
                    self._table, slot * _SLOT.size)
                if pid and started and now - started > limit_ns:
                    try:
                        self._expire(slot, pid, started, fd, ROUTES[route], _text(rid),
                                     _text(client))
                    except Exception:  # noqa: BLE001 - the watchdog must outlive any one case
                        log.exception("the scoring watchdog failed on worker %s", pid)

    def _expire(self, slot: int, pid: int, started: int, fd: int, route: str, rid: str,
                client_rid: str) -> None:
        message = "Scoring timeout after {} ms".format(self.timeout_ms)
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            return
        if _SLOT.unpack_from(self._table, slot * _SLOT.size)[:2] != (pid, started):
            os.kill(pid, signal.SIGCONT)  # it finished just now
            return
        answered = _answer(pid, fd, message, rid, client_rid)
        self._killed[pid] = message
        _SLOT.pack_into(self._table, slot * _SLOT.size, pid, 0, -1, 0, b"", b"")
        os.kill(pid, signal.SIGKILL)
        log.error("request %s: %s in worker %s, stuck outside Python; %s and the worker was "
                  "killed (a fresh one replaces it)", rid, message, pid,
                  "answered 504" if answered else "the connection was closed")
        seconds = (time.monotonic_ns() - started) / 1e9
        access.write(rid, "-", "/" + route, 504, message, seconds * 1000.0)
        if self.metrics is not None:
            self.metrics.observe(route, 504, seconds)

    def _reword(self, record: logging.LogRecord) -> bool:
        """gunicorn guesses "Perhaps out of memory?" for any SIGKILLed worker: say why instead."""
        if "Perhaps out of memory" in str(record.msg) and record.args:
            why = self._killed.pop(record.args[0], None)
            if why is not None:
                record.msg = "Worker (pid:%s) was killed by the scoring watchdog: %s."
                record.args = (record.args[0], why)
        return True

    # -- a worker -----------------------------------------------------------------------------
    def attach(self, worker: Any) -> None:
        """gunicorn's post_fork, in the new worker: this row is ours."""
        self._slot = getattr(worker, "watchdog_slot", None)
        if self._slot is not None:
            _SLOT.pack_into(self._table, self._slot * _SLOT.size, os.getpid(), 0, -1, 0,
                            b"", b"")

    def begin(self, route: str, fd: int, rid: str, client_rid: str) -> None:
        if self._slot is not None:
            _SLOT.pack_into(self._table, self._slot * _SLOT.size, os.getpid(),
                            time.monotonic_ns(), fd, ROUTES.index(route),
                            rid.encode()[:_ID], client_rid.encode()[:_ID])

    def end(self) -> None:
        if self._slot is not None:
            # started = 0 first: the master reads a row that is no longer in a request
            _SLOT.pack_into(self._table, self._slot * _SLOT.size, os.getpid(), 0, -1, 0,
                            b"", b"")


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def _answer(pid: int, fd: int, message: str, rid: str, client_rid: str) -> bool:
    """Write the 504 on a duplicate of the stopped worker's client socket; False where the
    socket cannot be had (no pidfd_getfd, no fd recorded)."""
    if fd < 0 or not hasattr(os, "pidfd_open"):
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        dup = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
    except (OSError, AttributeError):
        return False
    finally:
        os.close(pidfd)
    if dup < 0:
        return False
    answer = pipeline.raw_answer(pipeline.error_result(ScoringTimeout(message)), rid, client_rid)
    with socket.socket(fileno=dup) as client:
        try:
            client.settimeout(1.0)
            client.sendall(answer)
            client.shutdown(socket.SHUT_RDWR)
        except OSError:
            return False
    return True
