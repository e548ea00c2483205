"""Scoring's error tree: each error carries the HTTP status it is answered with.

Messages name the key, column, tensor or param at fault in single quotes and never quote the
caller's values (DESIGN §3), so an error can be logged and returned without leaking data.
"""
from typing import ClassVar


class ScoringError(Exception):
    """Base of every error the scoring path answers on purpose."""

    status: ClassVar[int] = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(ScoringError):
    status = 400


class PayloadError(BadRequest):
    """The body is not a usable Azure / MLflow payload (before the signature is looked at)."""


class SchemaError(BadRequest):
    """The payload does not satisfy the model's signature."""


class ModelRejectedInput(BadRequest):
    """The model's own predict raised ValueError/TypeError/KeyError/IndexError on checked input."""


class UnsupportedMediaType(ScoringError):
    status = 415


class PayloadTooLarge(ScoringError):
    status = 413


class HeaderTooLarge(ScoringError):
    status = 431


class NotFound(ScoringError):
    status = 404


class MethodNotAllowed(ScoringError):
    status = 405


class ScoringTimeout(ScoringError):
    status = 504


class ModelFailed(ScoringError):
    """Any other failure inside the model: 500, request id in the body, traceback in the log."""

    status = 500


def one_line(exc: BaseException, limit: int = 500) -> str:
    """`Class: first line of the message`: an exception for a log line or a ready file, without
    its traceback."""
    lines = str(exc).strip().splitlines()
    return ("{}: {}".format(type(exc).__name__, lines[0]) if lines else type(exc).__name__)[:limit]
