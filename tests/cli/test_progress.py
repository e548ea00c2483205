"""Progress of long work as a user sees it: the real `mlflow-deploy` process with its stderr on a
pseudo-terminal (the live display: the current step with the time elapsed, a job's progress bar),
in a pipe (the plain `mlflow-deploy: ...` lines that logs and scripts read), and with --quiet
(nothing but the result, or a job's final line)."""
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from mlflow_deploy.envs.cache import HOME_ENV
from tests.batch.job_fixtures import ENDPOINT, SCRIPT_DIR, jobs_home, write_inputs  # noqa: F401

#: what a terminal gets of rich's live display: the cursor controls that redraw it in place (hide
#: the cursor, erase the line)
REDRAW = ("\x1b[?25l", "\x1b[2K")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_cli(args, env, terminal: bool, timeout: float = 120.0):
    """``mlflow-deploy ARGS`` in a real process; stdout in a pipe, stderr on a pseudo-terminal
    (120 columns) or in a pipe. Returns (exit code, stdout, stderr as the terminal got it)."""
    command = [sys.executable, "-m", "mlflow_deploy.cli", *map(str, args)]
    if not terminal:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, timeout=timeout,
                              universal_newlines=True)
        return done.returncode, done.stdout, done.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    # the terminal's own size, not one a test runner exported (pytest-xdist's workers have
    # COLUMNS=80, which rich obeys first)
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave, env=env)
    os.close(slave)
    received = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert time.monotonic() < deadline, "the command did not end: " + repr(
                b"".join(received)[-2000:])
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer of the terminal has closed it
                    data = b""
                if not data:
                    break
                received.append(data)
            elif proc.poll() is not None:
                break
        stdout = proc.stdout.read().decode()
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return code, stdout, b"".join(received).decode("utf-8", "replace")


_CONTROL = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07]*\x07|([\r\n])")


def screen_lines(raw: str):
    """The lines a reader is left with on the terminal: text written, then moved over, erased
    and rewritten by the cursor controls rich uses (a small terminal of unbounded height)."""
    lines, row, col = [[]], 0, 0
    position = 0

    def write(text):
        nonlocal col
        line = lines[row]
        for char in text:
            if char < " ":
                continue
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = char
            else:
                line.append(char)
            col += 1

    for match in _CONTROL.finditer(raw):
        write(raw[position:match.start()])
        position = match.end()
        params, final, newline = match.group(1), match.group(2), match.group(3)
        if newline == "\r":
            col = 0
        elif newline == "\n":
            row += 1
            if row == len(lines):
                lines.append([])
        elif final:
            count = int(params) if params and params.isdigit() else None
            if final == "A":
                row = max(row - (count or 1), 0)
            elif final == "B":
                row += count or 1
                lines.extend([] for _ in range(row + 1 - len(lines)))
            elif final == "G":
                col = (count or 1) - 1
            elif final == "K":
                if count == 2:
                    lines[row] = []
                elif not count:
                    del lines[row][col:]
    write(raw[position:])
    return [text for text in ("".join(line).rstrip() for line in lines) if text]


def cli_env(home):
    """The suite's environment (its shared env cache among it) with ``home`` as the home."""
    return dict(os.environ, **{HOME_ENV: str(home)})


#: a scoring script with no environment of its own, over the model of the jobs' home: staging
#: it says two steps (where its environment comes from, then the cached env reused), in seconds
SCRIPT = ["--set", "code_configuration.code={}".format(SCRIPT_DIR),
          "--set", "code_configuration.scoring_script=score.py"]
SAID = ["mlflow-deploy: the scoring script has no environment of its own (conda_file, "
        "code/requirements.txt): it runs in the MLflow model's environment",
        re.compile(r"mlflow-deploy: reusing env [0-9a-f]{16} in \d+\.\d s")]


def said(lines):
    assert len(lines) == len(SAID), lines
    for line, expected in zip(lines, SAID):
        assert line == expected if isinstance(expected, str) else expected.fullmatch(line), lines


def test_a_deployment_on_a_terminal_shows_each_step_and_the_time(jobs_home, example_model_dirs):
    env = cli_env(jobs_home.home)
    create = ["batch-deployment", "create", "--endpoint-name", ENDPOINT, "--name", "shown",
              "--set", "model={}".format(example_model_dirs["diabetes"])] + SCRIPT
    code, out, err = run_cli(create, env, terminal=True)
    assert code == 0, err
    assert json.loads(out)["name"] == "shown"  # stdout: the result alone
    # the live display was drawn (and redrawn in place), with the time elapsed beside the step
    assert all(sequence in err for sequence in REDRAW), repr(err)
    assert re.search(r"mlflow-deploy: reusing env \S+ in \d+\.\d s\s+\d:\d\d:\d\d",
                     ANSI.sub("", err)), repr(err)
    # once over, the steps stay as the plain lines a log has, the status line gone
    said(screen_lines(err))

    update = ["batch-deployment", "update", "--endpoint-name", ENDPOINT, "--name", "shown"]
    # not a terminal: exactly the plain lines, no control sequence
    code, out, err = run_cli(update + SCRIPT, env, terminal=False)
    assert code == 0 and json.loads(out)["revision"] == 2, err
    assert "\x1b" not in err
    said(err.splitlines())
    # --quiet: no progress, on a terminal or not; an error still says its one line
    for terminal in (True, False):
        code, out, err = run_cli(["--quiet"] + update + SCRIPT, env, terminal=terminal)
        assert code == 0 and json.loads(out)["name"] == "shown", err
        assert err == "", repr(err)
    code, out, err = run_cli(["-q"] + update + ["--set", "settings.mini_batch_size=0"], env,
                             terminal=True)
    assert code == 2 and screen_lines(err) == [
        "Error: --set: key 'settings.mini_batch_size' must be a whole number of at least 1"], \
        repr(err)


@pytest.mark.slow
def test_a_job_on_a_terminal_has_a_progress_bar_under_its_log(jobs_home, tmp_path):
    data = write_inputs(tmp_path / "data", ["a.csv", "b.csv", "c.csv"])
    env = cli_env(jobs_home.home)
    invoke = ["batch-endpoint", "invoke", "--name", ENDPOINT, "--input", data,
              "--deployment-name", "script", "--mini-batch-size", 2, "--wait"]
    started = time.monotonic()
    code, out, err = run_cli(invoke + ["--output-path", tmp_path / "out"], env, terminal=True)
    print("invoke --wait on a terminal: {:.1f} s".format(time.monotonic() - started))
    assert code == 0, err
    name = out.strip()
    assert all(sequence in err for sequence in REDRAW), repr(err[-2000:])
    lines = screen_lines(err)
    # the log's lines scroll above the bar, which ends full, then the final line
    assert any("mini-batch 2/2 done" in line for line in lines), lines
    bar = [line for line in lines if "mini-batches" in line][-1]
    assert re.search(r"━+ 2/2 mini-batches files 3/3 \(0 failed\) 9 rows \d+ rows/s ETA 0:00:00 "
                     r"elapsed \d:\d\d:\d\d$", bar), lines
    assert lines[-1] == "job {}: Completed".format(name), lines
    assert "[####" not in err  # not the plain lines' text bar

    # --quiet: the job's name on stdout, its final line on stderr, nothing else
    code, out, err = run_cli(["--quiet"] + invoke + ["--output-path", tmp_path / "quiet"], env,
                             terminal=True)
    assert code == 0, err
    assert screen_lines(err) == ["job {}: Completed".format(out.strip())], repr(err)
