"""Progress lines of long work (an environment build, a deployment's revision): the one format of
a line, ``mlflow-deploy: ...`` on stderr, and where the lines go.

The library says its progress through ``say`` whoever called it (the CLI, the MLflow plugin, a
user's script), so a front end that shows progress its own way (the CLI's terminal display, or
``--quiet``) takes the lines for the length of a call with ``reporting_to`` instead of every
function along the way passing a callback down. Standard library only: every layer may use it.
"""
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["PREFIX", "say", "plain", "reporting_to"]

#: what starts every progress line, so that logs and scripts can tell ours from a tool's
PREFIX = "mlflow-deploy: "

Sink = Callable[[str], None]


def plain(message: str) -> None:
    """A progress line as it is printed where no front end took them: on stderr, so that stdout
    holds only a command's result."""
    sys.stderr.write(PREFIX + message + "\n")
    sys.stderr.flush()


_sink: Sink = plain
_lock = threading.Lock()


def say(message: str) -> None:
    """Report one step (or a warning that is not an error) of long work."""
    _sink(message)


@contextmanager
def reporting_to(sink: Sink) -> Iterator[None]:
    """Send the progress lines said meanwhile to ``sink`` (``lambda message: None`` silences
    them); the previous destination is back afterwards, whatever happens."""
    global _sink
    with _lock:
        saved, _sink = _sink, sink
    try:
        yield
    finally:
        with _lock:
            _sink = saved
