"""Score through a real scoring server: gunicorn with the project's own config, the model loaded in
the master and predicted in a forked worker, in this interpreter.

In-process scoring (client.py) runs the server's own code path but never forks, so a model whose
predict fails or hangs only in a forked worker (a native thread pool started before the fork, a
library that is not fork-safe) passes it and fails once deployed. A ``Server`` here is the real
thing on 127.0.0.1, on a free port, started and stopped through the supervisor's own helpers:
``mlflow-deploy check`` and ``validate --server`` start one and stop it before they return; the
pytest helpers keep one per model and options for the session (``session_server``), stopped when
the interpreter exits.
"""
import atexit
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Hashable, Mapping, Optional, Tuple, Union

import requests

from mlflow_deploy.errors import ServerFailed
from mlflow_deploy.online.supervisor import (HOST, START_TIMEOUT_S, free_port, last_log_line,
                                             log_size, start_server, started_alive, stop,
                                             wait_ready)
from mlflow_deploy.scoring.config import ServerConfig
from mlflow_deploy.scoring.options import DEFAULTS, ScoringOptions

__all__ = ["Answer", "NoAnswer", "Server", "session_server", "stop_session_servers"]

JSON = "application/json"
#: a request is given the server's scoring timeout and this much more: the server's own 504
#: comes first, and only a server that died or hangs outside a request leaves it unanswered
ANSWER_MARGIN_S = 10.0
#: a disposable server is not drained for long: a worker stuck in native code is killed instead
STOP_GRACE_S = 5.0
#: lines of the server's log kept with an answer (a traceback behind a 500 fits)
LOG_LINES = 60


class NoAnswer(ServerFailed):
    """The server closed the connection or did not answer in time (a worker that crashed)."""


@dataclass(frozen=True)
class Answer:
    """What the server answered to one request, and what it logged meanwhile."""

    status: int
    headers: Dict[str, str]
    body: bytes
    ms: float
    log: Tuple[str, ...] = ()
    telling_log_line: Optional[str] = None  # the exception line of a traceback logged, if any

    @property
    def message(self) -> Optional[str]:
        """The ``message`` of a JSON error answer."""
        if self.status == 200:
            return None
        try:
            body = json.loads(self.body)
        except ValueError:
            return None
        return body.get("message") if isinstance(body, dict) else None


class Server:
    """A scoring server for the MLflow model in ``model_dir``, run by this interpreter's gunicorn.

    Its files (config, pidfile, ready file, log) live in ``directory``, a new temporary folder by
    default, removed by ``stop`` unless ``keep_files``. Use it as a context manager, or call
    ``start`` and ``stop``.
    """

    def __init__(self, model_dir: Union[str, os.PathLike], options: ScoringOptions = DEFAULTS,
                 model_uri: Optional[str] = None,
                 directory: Optional[Union[str, os.PathLike]] = None):
        self._own_directory = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix="mlflow-deploy-server-") if directory is None
                        else directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.options = options
        self.config = ServerConfig(
            model_dir=str(model_dir), bind="{}:{}".format(HOST, free_port()),
            workers=options.workers, validation=options.validation.value,
            request_timeout_ms=options.request_timeout_ms, max_request_mb=options.max_request_mb,
            error_details=options.error_details, model_uri=model_uri,
            pidfile=str(self.dir / "gunicorn.pid"), ready_file=str(self.dir / "ready.json"))
        self.config_path = self.dir / "server.json"
        self.log_path = self.dir / "server.log"
        self.pid: Optional[int] = None
        self._lock = threading.Lock()  # one request at a time: its log lines are its own

    @property
    def url(self) -> str:
        return "http://{}:{}".format(HOST, self.config.port)

    def start(self, timeout: float = START_TIMEOUT_S) -> "Server":
        """Start the master and wait until the model is loaded and every worker is prepared;
        ServerFailed (with the log's telling line and its path) if it does not get there."""
        self.config.write(str(self.config_path))
        pid = start_server(self.config_path, self.log_path)  # no python: this interpreter, exec'd
        self.pid = pid
        try:
            wait_ready(self.config, self.log_path, started_alive(pid), timeout=timeout)
        except BaseException:
            self.stop(keep_files=True)  # the message names the log: keep it to be read
            raise
        return self

    def post(self, body: bytes, path: str = "/score", content_type: str = JSON,
             headers: Optional[Mapping[str, str]] = None) -> Answer:
        """Send one request; NoAnswer if the connection fails or nothing comes back in time."""
        sent = {"Content-Type": content_type}
        sent.update(headers or {})
        timeout = self.options.timeout_s + ANSWER_MARGIN_S
        with self._lock:
            offset = log_size(self.log_path)
            started = time.monotonic()
            try:
                answer = requests.post(self.url + path, data=body, headers=sent, timeout=timeout)
            except requests.RequestException as exc:
                reason = last_log_line(self.log_path, offset)
                raise NoAnswer("The scoring server gave no answer ({}){} (log: {})".format(
                    type(exc).__name__, ": " + reason if reason else "", self.log_path)) from None
            ms = round((time.monotonic() - started) * 1000.0, 1)
            logged = self._log_since(offset)
        return Answer(status=answer.status_code, headers=dict(answer.headers),
                      body=answer.content, ms=ms, log=logged,
                      telling_log_line=last_log_line(self.log_path, offset) if logged else None)

    def _log_since(self, offset: int) -> Tuple[str, ...]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ()
        lines = [line.rstrip() for line in text.splitlines() if line.strip()]
        return tuple(lines[-LOG_LINES:])

    def stop(self, keep_files: bool = False) -> None:
        """Stop the master and its whole process group; remove the files unless ``keep_files``
        (or the folder was the caller's)."""
        if self.pid is not None:
            stop(self.pid, grace=STOP_GRACE_S, config_path=self.config_path, group=True)
            self.pid = None
        if self._own_directory and not keep_files:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


# ---- the servers of a test session ------------------------------------------------------------

_session: Dict[Hashable, Union[Server, ServerFailed]] = {}
_session_lock = threading.Lock()
_at_exit: list = []


def session_server(key: Hashable, model_dir: Union[str, os.PathLike], options: ScoringOptions,
                   model_uri: Optional[str] = None) -> Server:
    """The running server for ``key`` (a model and its options), started on first use and kept
    until the interpreter exits. A server that failed to start fails the same way again at
    once rather than paying for another start."""
    with _session_lock:
        found = _session.get(key)
        if found is None:
            if not _at_exit:
                atexit.register(stop_session_servers)
                _at_exit.append(True)
            server = Server(model_dir, options, model_uri)
            try:
                found = server.start()
            except ServerFailed as exc:
                found = exc
            _session[key] = found
    if isinstance(found, ServerFailed):
        raise ServerFailed(found.message)  # a new one: re-raising one object grows its traceback
    return found


def stop_session_servers() -> None:
    """Stop every server ``session_server`` started (and forget failed starts)."""
    with _session_lock:
        servers = list(_session.values())
        _session.clear()
    for server in servers:
        if isinstance(server, Server):
            server.stop()
