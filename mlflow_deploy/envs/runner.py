"""The one place that runs a subprocess for envs/: logs the command, and on failure raises an
error carrying the tool's own output (trimmed to its tail), so users see why pip or uv failed."""
import logging
import os
import shlex
import subprocess
from typing import Mapping, Optional, Sequence, Tuple

from mlflow_deploy.envs.errors import BuildFailed, ManagerUnavailable

__all__ = ["run", "run_unchecked", "find_uv", "OUTPUT_TAIL_LINES"]

log = logging.getLogger("mlflow_deploy.envs")

#: Lines of a failed tool's output kept in the error message (the end is where the reason is).
OUTPUT_TAIL_LINES = 40


def run(args: Sequence[str], *, what: str, error=BuildFailed, **options) -> str:
    """Run ``args``; return its combined output. ``what`` names the step in the error message;
    ``options``: run_unchecked's ``env``, ``cwd`` and ``timeout``."""
    returncode, output = run_unchecked(args, what=what, error=error, **options)
    if returncode != 0:
        raise error("{} failed (exit {}):\n{}".format(what, returncode, readable_tail(output)))
    return output


def run_unchecked(
    args: Sequence[str],
    *,
    what: str,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    timeout: Optional[float] = None,
    error=BuildFailed,
) -> Tuple[int, str]:
    """Run ``args``; return its exit code and combined output, for a caller that words its own
    error. A tool that is missing or overruns ``timeout`` is still ``error``."""
    args = [str(a) for a in args]
    log.info("running: %s", shlex.join(args))
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        proc = subprocess.run(args, env=full_env, cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout)
    except FileNotFoundError as exc:
        raise error("{} failed: {} not found".format(what, args[0])) from exc
    except subprocess.TimeoutExpired as exc:
        raise error("{} timed out after {:.0f} s".format(what, timeout)) from exc
    output = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        log.info("failed (exit %s): %s\n%s", proc.returncode, shlex.join(args), output)
    else:
        log.debug("output of %s:\n%s", args[0], output)
    return proc.returncode, output


def readable_tail(output: str) -> str:
    """The end of a tool's output, indented, without blank lines or carriage-return progress bars."""
    lines = [line.split("\r")[-1].rstrip() for line in output.splitlines()]
    lines = [line for line in lines if line.strip()]
    if len(lines) > OUTPUT_TAIL_LINES:
        lines = ["..."] + lines[-OUTPUT_TAIL_LINES:]
    return "\n".join("  " + line for line in lines) or "  (no output)"


def find_uv() -> str:
    """The uv binary of the ``uv`` package installed with mlflow-deploy (a dependency), found by
    that package and never by ``PATH``: pip puts uv beside the interpreter (with pyenv, a folder
    that is not on PATH until ``pyenv rehash``), and a version manager's shim on PATH may name a
    uv that another Python has and this one does not."""
    try:
        from uv import find_uv_bin
        return find_uv_bin()
    except (ImportError, FileNotFoundError) as exc:
        raise ManagerUnavailable(
            "the uv package that mlflow-deploy depends on is not installed with this Python "
            "(reinstall mlflow-deploy, or pip install uv)") from exc
