"""The access log: one line per request in the server's log, written once the answer is sent.

    [2026-12-02 15:57:07 +0000] [4242] [ACCESS] request_id=3f2c... method=POST route=/score
    status=400 latency_ms=2.1 reason="missing required columns 'sex', 'bmi'"

(one line). ``request_id`` is the x-request-id the client was answered with; ``route`` the rule
that matched ("-" for none: never the raw path, which is the client's text); ``reason``, for a
4xx or 5xx, the first line of our own error message, which never quotes the client's data (an
answer a scoring script made itself has none). The requests the app never answers have theirs
too, with "-" for what is not known: those gunicorn refuses before the app (worker.py, new
request ids) and those the master's watchdog answers 504 for a stuck worker (watchdog.py).

A healthy answer of the liveness route ``GET /`` has no line: the gateway's liveness and
readiness probes each ask it every second by default, and the control plane while it waits for
a server, so its lines would bury the requests of an idle deployment (two a second, some 20 MB a
day).

Written by a hook of the Flask app (app.py) rather than by gunicorn's access log: the reason is
known only inside the app, and gunicorn builds a dict of every header and environ value per
request to format its line. The line is one ``os.write`` to stderr, the O_APPEND log every
process of the server shares: a line is never split or interleaved with another process's, and
costs no lock and no logging machinery.
"""
import json
import os
import time
from typing import Optional

from .logfile import token

#: routes whose 200s are not logged
UNLOGGED = frozenset({"/"})


def write(request_id: str, method: str, route: str, status: int, reason: Optional[str],
          latency_ms: Optional[float]) -> None:
    """Write the line of a request answered with ``status``."""
    line = "{} [{}] [ACCESS] request_id={} method={} route={} status={} latency_ms={}{}\n"\
        .format(time.strftime("[%Y-%m-%d %H:%M:%S %z]"), os.getpid(), token(request_id),
                token(method), route, status,
                "-" if latency_ms is None else "{:.1f}".format(latency_ms),
                " reason=" + json.dumps(reason.split("\n", 1)[0]) if reason else "")
    emit(line)


def emit(line: str) -> None:
    """Write one whole line to the log (stderr) in one call: the servers' access lines, and the
    gateway's, which has its own format."""
    try:
        os.write(2, line.encode("utf-8", "replace"))
    except OSError:
        pass  # a full disk loses the line, never the answer
