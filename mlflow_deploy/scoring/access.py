"""The access log: one line per request in the server's log, written once the answer is sent.

    [2026-12-02 15:57:07 +0000] [4242] [ACCESS] request_id=3f2c... method=POST route=/score
    status=400 latency_ms=2.1 reason="missing required columns 'sex', 'bmi'"

(one line). ``request_id`` is the x-request-id the client was answered with; ``route`` the rule
that matched ("-" for none: never the raw path, which is the client's text); ``reason``, for a
4xx or 5xx, the first line of our own error message, which never quotes the client's data (an
answer a scoring script made itself has none).

A healthy answer of the liveness route ``GET /`` has no line: the gateway's probes ask it every
second or so, and the control plane while it waits for a server, so its lines would bury the
requests of an idle deployment (an average of one a second, 13 MB a day).

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
          started: float) -> None:
    """Write the line of a request answered with ``status``, begun at ``started``
    (``time.perf_counter``)."""
    line = "{} [{}] [ACCESS] request_id={} method={} route={} status={} latency_ms={:.1f}{}\n"\
        .format(time.strftime("[%Y-%m-%d %H:%M:%S %z]"), os.getpid(), token(request_id),
                token(method), route, status, (time.perf_counter() - started) * 1000.0,
                " reason=" + json.dumps(reason.split("\n", 1)[0]) if reason else "")
    try:
        os.write(2, line.encode("utf-8", "replace"))
    except OSError:
        pass  # a full disk loses the line, never the answer
