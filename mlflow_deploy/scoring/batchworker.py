"""The batch worker process: ``python -m mlflow_deploy.scoring.batchworker`` in the model's env.

It loads its driver once (the MLflow model, or the user's init()/run() script), then scores one
mini-batch of files per request until its input ends. The control plane's client is
mlflow_deploy.batch.worker.BatchWorker.

The protocol, over the process's stdin and stdout, is frames: an 8-byte big-endian length, then
that many bytes.
  client -> worker  the spec (JSON: WorkerSpec.to_dict()), once; then per mini-batch a request
                    (JSON: {"files": [...], "part": path or null})
  worker -> client  once: {"ready": true, "pid": ...} or {"ready": false, "error": one line,
                    "traceback": ...}, and the worker exits; then per request the outcome
                    header (JSON: rows, file_errors, error, traceback, written) and the
                    output's bytes: none when ``written``, the rows having gone to ``part``
The worker writes the rows to ``part`` itself (atomically, write_part) when it can see that
file's folder: they are not copied through a pipe into a second process that only writes them,
and the worker is not kept idle meanwhile. A worker on another machine sends them instead.
End of input: the script's shutdown() is called and the worker exits 0.

A user's script may print, and libraries log to stdout: before anything else is imported the
protocol takes private copies of fds 0 and 1, fd 1 becomes a copy of stderr (which the client
appends to the job's log) and fd 0 reads /dev/null, so nothing but frames reaches the client.

Only the standard library, scoring/errors.py and scoring/parts.py are imported at module level:
the client imports the framing helpers from here without pandas or mlflow. The spec's
environment variables are set by the client before this interpreter starts (thread pools read
them at import).
"""
import json
import logging
import os
import struct
import sys
import traceback
from typing import Any, Dict, Optional

from .errors import StartupError, one_line
from .parts import write_part

HEADER = struct.Struct(">Q")
#: Azure's logging_level values
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
CHUNK = 1 << 20


class ProtocolEnd(Exception):
    """The other side closed the stream in the middle of a frame."""


def read_exactly(fd: int, size: int) -> Optional[bytes]:
    """``size`` bytes from ``fd``; None at a clean end of input (nothing read)."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    while done < size:
        if hasattr(os, "readv"):  # straight into the buffer: outputs may be hundreds of MB
            count = os.readv(fd, [view[done:done + CHUNK]])
        else:
            data = os.read(fd, min(CHUNK, size - done))
            count = len(data)
            view[done:done + count] = data
        if count == 0:
            if done == 0:
                return None
            raise ProtocolEnd("the stream ended inside a frame")
        done += count
    return bytes(buffer)


def read_frame(fd: int) -> Optional[bytes]:
    """One frame's payload, or None at a clean end of input."""
    head = read_exactly(fd, HEADER.size)
    if head is None:
        return None
    (size,) = HEADER.unpack(head)
    if size == 0:
        return b""
    data = read_exactly(fd, size)
    if data is None:
        raise ProtocolEnd("the stream ended inside a frame")
    return data


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view[:CHUNK])
        view = view[written:]


def write_frame(fd: int, data: bytes) -> None:
    write_all(fd, HEADER.pack(len(data)))
    if data:
        write_all(fd, data)


def write_json(fd: int, value: Dict[str, Any]) -> None:
    write_frame(fd, json.dumps(value).encode("utf-8"))


def _private_streams() -> "tuple[int, int]":
    """Keep the protocol's fds to ourselves; prints and reads of the script go elsewhere."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    try:  # line by line into the log, so a hung script's last words are there
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    except AttributeError:
        pass
    return proto_in, proto_out


def _load(spec: Dict[str, Any]) -> Any:
    from .batch import BatchDriver, MlflowBatchDriver, check_format

    check_format(spec.get("output_format") or "azure")
    if spec.get("scoring_script"):
        code_dir = spec.get("code_dir")
        script = spec["scoring_script"]
        if not code_dir:  # no code folder: the script's own folder is the app root
            code_dir, script = os.path.split(os.path.abspath(script))
        return BatchDriver.load(code_dir, script,
                                spec.get("azureml_model_dir") or spec.get("model_dir"),
                                environment_variables=spec.get("environment_variables") or {})
    if not spec.get("model_dir"):

        raise StartupError("the batch worker was given neither a model nor a scoring script")
    return MlflowBatchDriver.load(spec["model_dir"])


def serve(proto_in: int, proto_out: int, spec: Dict[str, Any]) -> int:
    from .batch import MiniBatchResult, render_result

    output_format = spec.get("output_format") or "azure"
    try:
        driver = _load(spec)
    except StartupError as exc:
        if exc.traceback:
            print(exc.traceback, file=sys.stderr, flush=True)
        write_json(proto_out, {"ready": False, "error": exc.message, "traceback": exc.traceback})
        return 1
    except Exception as exc:  # noqa: BLE001 - anything else that stops the start
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        write_json(proto_out, {"ready": False, "error": "the batch worker could not start: "
                               + one_line(exc), "traceback": text})
        return 1
    write_json(proto_out, {"ready": True, "pid": os.getpid()})
    try:
        while True:
            frame = read_frame(proto_in)
            if frame is None:
                return 0
            request = json.loads(frame.decode("utf-8"))
            files = [str(f) for f in request["files"]]
            part = request.get("part")
            result: MiniBatchResult = driver.run_mini_batch(files)
            data, result = render_result(result, output_format)
            written = bool(part and data and result.error is None
                           and os.path.isdir(os.path.dirname(part)))
            if written:
                # unsynced: the job syncs it before recording the mini-batch as done, while
                # this worker goes on with its next mini-batch instead of waiting on the disk
                write_part(part, data, sync=False)
                data = b""
            if result.traceback:
                print(result.traceback, file=sys.stderr, flush=True)
            errors = dict(result.file_errors)
            if result.error is None and result.missing:
                # which files a short run() left out is unknown: the last ones count as failed
                for path in files[len(files) - result.missing:]:
                    errors.setdefault(path, result.missing_message())
            # the problems travel in the outcome: the job logs each once, as its own line
            write_json(proto_out, {"rows": result.count if result.error is None else 0,
                                   "file_errors": errors, "error": result.error,
                                   "traceback": result.traceback, "written": written})
            write_frame(proto_out, data)
    finally:
        driver.close()  # a script's shutdown(), at the end of input as on any way out


def main() -> int:
    proto_in, proto_out = _private_streams()
    frame = read_frame(proto_in)
    if frame is None:
        return 0
    spec = json.loads(frame.decode("utf-8"))
    level = LEVELS.get(str(spec.get("logging_level") or "info").lower(), logging.INFO)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(proto_in, proto_out, spec)


if __name__ == "__main__":
    sys.exit(main())
