"""The control plane's side of a batch worker: a long-lived process in the model's environment
(``python -m mlflow_deploy.scoring.batchworker``) that loads the model or the user's script once
and scores mini-batches sent to it, with each try's timeout enforced from here.

This module also runs inside Dask workers, so it imports nothing heavy (no mlflow, no pandas):
the standard library and the protocol's framing helpers, which are standard library too.

A worker process runs in its own process group (its own session), so a timeout kills it and
everything it started (a script's subprocesses, a library's helper processes) with one SIGKILL;
the next run() starts a fresh process. Its stderr, where the worker also sends whatever the
script prints, is appended to ``log_path``.
"""
import json
import os
import select
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Sequence

from mlflow_deploy.scoring.batchworker import HEADER, write_frame

__all__ = ["WorkerSpec", "MiniBatchOutcome", "WorkerFailed", "WorkerTimedOut", "WorkerDied",
           "WorkerStartFailed", "BatchWorker"]

#: ``python -m mlflow_deploy.scoring.batchworker``, without ``-m``'s first sys.path entry (the
#: working directory: the model's or the script's folder, whose files must not shadow packages)
BOOT = ("import sys; del sys.path[0]; from mlflow_deploy.scoring.batchworker import main; "
        "sys.exit(main())")
#: a model load or init() that takes longer than this is taken as hung
START_TIMEOUT_S = 600.0
#: close(): how long a script's shutdown() may take before the process is killed
CLOSE_GRACE_S = 30.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a batch worker process needs. Plain data (to_dict/from_dict, JSON-safe): it
    travels to Dask workers."""

    python: str                          # the model env's interpreter
    model_dir: Optional[str] = None      # the MLflow model (no-code scoring)
    code_dir: Optional[str] = None       # a user's scoring script: its code folder,
    scoring_script: Optional[str] = None  # the script relative to it,
    azureml_model_dir: Optional[str] = None  # and AZUREML_MODEL_DIR
    output_format: str = "azure"         # azure | csv | parquet | none (summary_only)
    environment_variables: Dict[str, str] = field(default_factory=dict)
    logging_level: str = "info"
    # what a Dask worker on another machine rebuilds the env from (remote.py): the lock file's
    # path here, the manager that built it, and the Python version it was locked for
    env_lock: Optional[str] = None
    env_manager: Optional[str] = None
    python_version: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["environment_variables"] = dict(self.environment_variables)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WorkerSpec":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["environment_variables"] = {str(k): str(v) for k, v in
                                           (values.get("environment_variables") or {}).items()}
        return cls(**values)


@dataclass
class MiniBatchOutcome:
    files: List[str]
    data: bytes = b""                    # this mini-batch's rows in output_format (b"" for none)
    rows: int = 0
    file_errors: Dict[str, str] = field(default_factory=dict)  # path -> one-line reason
    error: Optional[str] = None          # failed as a whole (run() raised...): retry it
    traceback: Optional[str] = None      # for the job log only
    written: bool = False                # the worker wrote the rows to the part file itself

    @property
    def failed(self) -> int:
        """Files that count against error_threshold: all of them when the mini-batch failed as a
        whole, else those that failed alone."""
        if self.error is not None:
            return len(self.files)
        return min(len(self.files), len(self.file_errors))

    def messages(self) -> List[str]:
        """One line per problem, safe to show (no data of the files)."""
        lines = [] if self.error is None else [self.error]
        lines += ["Error processing input file '{}': {}".format(path, message)
                  for path, message in self.file_errors.items()]
        return lines


class WorkerFailed(Exception):
    """The worker process could not give a mini-batch's outcome. ``message``: one line, safe to
    show."""

    def __init__(self, message: str, traceback: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.traceback = traceback


class WorkerTimedOut(WorkerFailed):
    """The try passed its timeout: the process was killed."""


class WorkerDied(WorkerFailed):
    """The process ended (killed, crashed) in the middle of a mini-batch."""


class WorkerStartFailed(WorkerFailed):
    """The model did not load, or the script's init() raised (``traceback`` has its own)."""


class BatchWorker:
    """One worker process, started on first use and kept for the next mini-batches."""

    def __init__(self, spec: WorkerSpec, log_path: Optional[str] = None, *,
                 start_timeout: float = START_TIMEOUT_S,
                 base_env: Optional[Mapping[str, str]] = None):
        self.spec = spec
        self.log_path = log_path
        self.start_timeout = start_timeout
        #: the environment the process starts from (this process's by default), before the
        #: spec's environment_variables
        self.base_env = base_env
        self._proc: Optional[subprocess.Popen] = None

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    def abort(self) -> None:
        """Kill the process group now, from any thread: a run() in progress ends with
        WorkerDied (its read sees the pipe's end), and the next run() starts a fresh process."""
        proc = self._proc
        if proc is not None:
            _signal_group(proc.pid)

    def run(self, files: Sequence[str], timeout: float, part: Optional[str] = None
            ) -> MiniBatchOutcome:
        """Score one mini-batch within ``timeout`` seconds (the model's load, on first use, is not
        counted). ``part``: the file its rows go to, written by the worker when it can see that
        folder (the outcome is then ``written``, without ``data``). Raises WorkerTimedOut (the
        process group was killed), WorkerDied or WorkerStartFailed; the next call starts a fresh
        process."""
        files = [str(f) for f in files]
        self._ensure_started()
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        deadline = time.monotonic() + timeout
        try:
            write_frame(proc.stdin.fileno(),
                        json.dumps({"files": files, "part": part}).encode("utf-8"))
            header = json.loads(self._read_frame(deadline, timeout).decode("utf-8"))
            data = self._read_frame(deadline, timeout)
        except (BrokenPipeError, ConnectionResetError):
            raise self._died() from None
        return MiniBatchOutcome(files, data, int(header.get("rows") or 0),
                                dict(header.get("file_errors") or {}), header.get("error"),
                                header.get("traceback"), bool(header.get("written")))

    def close(self) -> None:
        """End the process: its input closes, so a script's shutdown() runs; killed if it is not
        gone within CLOSE_GRACE_S."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=CLOSE_GRACE_S)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
        _close_pipes(proc)

    def __enter__(self) -> "BatchWorker":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ---- the process --------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        if self._proc is not None:  # ended since the last mini-batch (killed between tries)
            self._discard()
        self._start()

    def _start(self) -> None:
        spec = self.spec
        env = dict(os.environ if self.base_env is None else self.base_env)
        # envs are installed without bytecode: the first worker writes it, later ones load it
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(spec.environment_variables)  # before the interpreter starts (thread pools)
        cwd = spec.code_dir if spec.scoring_script and spec.code_dir else spec.model_dir
        if self.log_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        log = open(self.log_path, "ab") if self.log_path else None
        try:
            proc = subprocess.Popen(
                [spec.python, "-c", BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, env=env, cwd=cwd if cwd and os.path.isdir(cwd) else None,
                start_new_session=True, close_fds=True)
        except OSError as exc:
            raise WorkerStartFailed("the batch worker could not be started with the model "
                                    "environment's Python ({})".format(type(exc).__name__)) \
                from None
        finally:
            if log is not None:
                log.close()
        self._proc = proc
        _widen_pipe(proc.stdout.fileno())
        try:
            write_frame(proc.stdin.fileno(), json.dumps(spec.to_dict()).encode("utf-8"))
            ready = json.loads(self._read_frame(time.monotonic() + self.start_timeout,
                                                self.start_timeout, starting=True).decode("utf-8"))
        except (BrokenPipeError, ConnectionResetError, WorkerDied) as exc:
            self._discard()
            raise WorkerStartFailed("the batch worker exited before it was ready ({}); its log "
                                    "has the details".format(_ended(proc))) from exc
        except WorkerTimedOut:
            raise WorkerStartFailed("the batch worker was not ready within {:g} s (the model's "
                                    "load or the script's init() hung)".format(
                                        self.start_timeout)) from None
        if not ready.get("ready"):
            self._discard()
            raise WorkerStartFailed(str(ready.get("error") or "the batch worker did not start"),
                                    ready.get("traceback"))

    def _read_frame(self, deadline: float, timeout: float, starting: bool = False) -> bytes:
        head = self._read_exactly(HEADER.size, deadline, timeout, starting)
        (size,) = HEADER.unpack(head)
        return self._read_exactly(size, deadline, timeout, starting) if size else b""

    def _read_exactly(self, size: int, deadline: float, timeout: float, starting: bool) -> bytes:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        chunks = []
        left_to_read = size
        while left_to_read:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:
                self._kill()
                raise WorkerTimedOut("the mini-batch did not finish within its timeout of {:g} s; "
                                     "the worker process was killed".format(timeout))
            chunk = os.read(fd, min(left_to_read, _CHUNK))
            if not chunk:
                raise self._died()
            chunks.append(chunk)
            left_to_read -= len(chunk)
        # one copy into the result (chunks of a pipe's size reuse the same memory)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _died(self) -> WorkerDied:
        proc = self._proc
        how = _ended(proc) if proc is not None else "gone"
        self._discard()
        return WorkerDied("the batch worker process ended while scoring a mini-batch ({})"
                          .format(how))

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _kill_group(proc)
            _close_pipes(proc)

    def _discard(self) -> None:
        """Forget a process that ended or must end: its group killed, it reaped."""
        self._kill()


def _signal_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # its own session: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    _signal_group(proc.pid)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not refused
        pass


def _close_pipes(proc: subprocess.Popen) -> None:
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


def _ended(proc: subprocess.Popen) -> str:
    """How the process ended, in words: 'exit code 1', 'killed by SIGKILL'."""
    try:
        code = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return "still running"
    if code < 0:
        try:
            return "killed by {}".format(signal.Signals(-code).name)
        except ValueError:
            return "killed by signal {}".format(-code)
    return "exit code {}".format(code)


def _widen_pipe(fd: int) -> None:
    """A 1 MiB pipe (Linux's default is 64 KiB): a mini-batch's output crosses in fewer reads."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError):
        pass
