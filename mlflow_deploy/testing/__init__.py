"""Catch payload and signature problems in your own tests, before any server or cloud deploy.

    from mlflow_deploy.testing import assert_rejected, assert_valid, score

    assert_valid("models:/diabetes/1", {"input_data": {"columns": [...], "data": [[...]]}})
    assert_rejected("models:/diabetes/1", bad, match="column 'age'")

`score` runs the scoring server's own path (``scoring.pipeline.score``) in this interpreter, with
no server; with ``server=True`` (or ``pytest --mlflow-deploy-server``) it posts the payload to a
real server for the model instead (a forked gunicorn worker, kept for the session), which shows a
model that fails only after a fork. The names are loaded on first use: the pytest plugin imports this package in every
test run, and loading mlflow there would slow down suites that never score.
"""
from typing import TYPE_CHECKING, Any

__all__ = [
    "score",
    "assert_valid",
    "assert_rejected",
    "Response",
    "ScoringClient",
    "PayloadFile",
    "load_predictor",
    "clear_cache",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .client import (PayloadFile, Response, ScoringClient, assert_rejected, assert_valid,
                         clear_cache, load_predictor, score)


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import client

        return getattr(client, name)
    raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))


def __dir__():
    return sorted(list(globals()) + __all__)
