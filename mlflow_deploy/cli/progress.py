"""How the CLI shows long work on stderr: environment builds, ``package``, the deployments'
create and update (which build environments), and the batch jobs that ``job stream`` and
``batch-endpoint invoke --wait`` follow.

On a terminal (stderr is a tty) with rich: a status line with a spinner, the current step and the
time elapsed, replaced as the steps come, each finished step printed as a plain line above it so
the history reads as a log; a job gets a progress bar (mini-batches, files, failures, rows, rows/s,
ETA, elapsed) under its log lines. Anywhere else (a pipe, a file, CI) exactly the plain lines
``mlflow-deploy: ...`` and the job's plain progress lines, which logs and tests read, and rich is
never imported. ``--quiet`` (the root group's) silences progress and the warnings that are not
errors: an error still prints its one ``Error:`` line, and a job its final line.
"""
import logging
import os
import sys
import warnings
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

import click

from mlflow_deploy.progress import PREFIX, reporting_to

__all__ = ["quiet_mode", "steps", "follow_job", "interactive"]

_quiet = False  # --quiet, for the command running


def interactive(stream=None) -> bool:
    """Whether ``stream`` (stderr by default) is a terminal that redraws lines. Asked of the
    stream itself, not of rich: rich takes FORCE_COLOR (set by some CI systems) for a terminal,
    and a pipe must get the plain lines."""
    stream = stream or sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False
    return bool(tty) and os.environ.get("TERM") != "dumb"


@contextmanager
def quiet_mode(quiet: bool) -> Iterator[None]:
    """For one command: with ``quiet``, no progress line, no Python warning and no log record
    below ERROR (MLflow's, for one) reaches stderr; everything is restored afterwards, so an
    in-process caller (click's CliRunner) is left as it was."""
    global _quiet
    if not quiet:
        yield
        return
    saved_disable = logging.root.manager.disable
    _quiet = True
    try:
        with reporting_to(lambda message: None), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
            yield
    finally:
        logging.disable(saved_disable)
        _quiet = False


def _console():
    from rich.console import Console

    # its own check of the stream would trust FORCE_COLOR; interactive() already asked it
    return Console(file=sys.stderr, force_terminal=True, highlight=False)


class _Steps:
    """The terminal display of one piece of long work: the current step under a spinner with the
    time since the work began, and each step once over as the plain line a pipe gets, above it."""

    def __init__(self):
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = _console()
        # transient: once the work is over only the plain lines stay, as in a log; stdout is
        # left alone, as it holds the command's result alone
        self.display = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False),
                                TimeElapsedColumn(), console=self.console, transient=True,
                                redirect_stdout=False)
        self.task = None
        self.current: Optional[str] = None

    def step(self, message: str) -> None:
        self._finish()
        self.current = message
        if self.task is None:
            self.display.start()
            self.task = self.display.add_task(PREFIX + message)
        else:
            self.display.update(self.task, description=PREFIX + message)

    def _finish(self) -> None:
        from rich.text import Text

        if self.current is not None:
            self.console.print(Text(PREFIX + self.current), soft_wrap=True)
            self.current = None

    def close(self) -> None:
        self._finish()
        if self.task is not None:
            self.display.stop()


@contextmanager
def steps() -> Iterator[None]:
    """Show the progress said meanwhile (``mlflow_deploy.progress.say``, which the library's
    environment builds use) as the terminal display, or leave it as it is: plain lines, or
    nothing with --quiet. Wrap only the long work, never the printing of the result: stdout may
    be the same terminal."""
    if _quiet or not interactive():
        yield
        return
    display = _Steps()
    try:
        with reporting_to(display.step):
            yield
    finally:
        display.close()


def follow_job(name: str) -> Dict[str, Any]:
    """Follow a batch job until it ends (``job stream``, ``invoke --wait``) and return it as
    ``job show`` prints it: the plain lines of ``jobs.stream_job`` off a terminal, a progress bar
    under the scrolling log on one, and with --quiet only the final line."""
    from mlflow_deploy.batch import jobs

    if _quiet:
        for _lines, progress in jobs.follow_job(name):
            if progress.over:
                click.echo(progress.final_line(), err=True)
        return jobs.show_job(name)
    if not interactive():
        return jobs.stream_job(name)

    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn
    from rich.text import Text

    console = _console()
    columns = (
        SpinnerColumn(finished_text=" "),
        BarColumn(bar_width=24),
        TextColumn("{task.completed}/{task.fields[mini_batches]} mini-batches"),
        TextColumn("files {task.fields[files_done]}/{task.fields[files]} "
                   "({task.fields[files_failed]} failed)"),
        TextColumn("{task.fields[rows]} rows"),
        TextColumn("{task.fields[rate]:.0f} rows/s"),
        TextColumn("ETA {task.fields[eta]}"),
        TextColumn("elapsed {task.fields[elapsed]}"),
    )
    # stdout stays the command's result alone (the job's name): only stderr goes above the bar
    with Progress(*columns, console=console, redirect_stdout=False) as bar:
        task = None
        for lines, progress in jobs.follow_job(name):
            for line in lines:
                console.print(Text(line), soft_wrap=True)
            fields = dict(mini_batches=progress.mini_batches, files=progress.files,
                          files_done=progress.files_done, files_failed=progress.files_failed,
                          rows=progress.rows, rate=progress.rate, eta=progress.eta_text,
                          elapsed=jobs.clock(progress.elapsed or 0))
            # no total until the job has cut its mini-batches: the bar pulses meanwhile
            total = progress.mini_batches or None
            if task is None:
                task = bar.add_task(name, total=total, completed=progress.ended, **fields)
            else:
                bar.update(task, total=total, completed=progress.ended, **fields)
            if progress.over:
                bar.stop_task(task)
                final = progress.final_line()
    console.print(Text(final), soft_wrap=True)
    return jobs.show_job(name)
