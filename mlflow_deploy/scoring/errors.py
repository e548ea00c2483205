"""Scoring's error tree: each error carries the HTTP status it is answered with.

Messages name the key, column, tensor or param at fault in single quotes and never quote the
caller's values, so an error can be logged and returned without leaking data. ``StartupError`` is
the other kind: what is to be served cannot start (no request is involved).
"""
import random
import uuid
from typing import ClassVar, Optional


class ScoringError(Exception):
    """Base of every error the scoring path answers on purpose."""

    status: ClassVar[int] = 500
    #: the model's own traceback behind a ModelFailed or ModelRejectedInput, for a log (never
    #: a response: it may hold the caller's values)
    traceback: Optional[str] = None

    def __init__(self, message: str, reason: Optional[str] = None):
        super().__init__(message)
        self.message = message
        #: what a log line may say of it: the message's first line, unless the message carries
        #: someone else's words (the model's own exception text may quote the caller's values)
        self.reason = reason or message.split("\n", 1)[0]


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


# Azure's inference server's limit and texts for the ids it echoes; here, beside no heavy import,
# so the endpoint's gateway applies the same rule with the same words
REQUEST_ID = "x-request-id"
MAX_REQUEST_ID = 100
REQUEST_ID_TOO_LONG = "x-request-id must not exceed {} characters".format(MAX_REQUEST_ID)
MS_IDS_TOO_LONG = ("x-ms-request-id and x-ms-client-request-id must not exceed {} "
                   "characters".format(MAX_REQUEST_ID))


def new_request_id() -> str:
    """The id of a request that came without one, in the server and the gateway alike: a uuid4,
    as Azure's, from the random module's generator rather than the kernel's (uuid.uuid4's
    system call was 2 % of the gateway's CPU per request): an id must be unique, not secret,
    and Python reseeds the generator in every forked process (each worker its own ids)."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


# the header of a 200 that names the coercions compatible mode applied: the gateway reads it too
# (a joined call that reports any is re-sent one request at a time, so each gets its own)
COERCIONS_HEADER = "x-mlflow-deploy-coercions"
#: a self-test names the revision it is for: while an update hands over, the old master still
#: accepts on the same socket, and answers such a request 421 (not mine) without scoring it
REVISION_HEADER = "x-mlflow-deploy-self-test-revision"


class NotFound(ScoringError):
    status = 404


class MethodNotAllowed(ScoringError):
    status = 405


class ScoringTimeout(ScoringError):
    status = 504


class ModelFailed(ScoringError):
    """Any other failure inside the model: 500, request id in the body, traceback in the log."""

    status = 500


class ServerFailed(ScoringError):
    """A failure of the server's own code, or of a scoring script outside run(): 500, the
    traceback in the log under the request id the body names."""

    status = 500


class StartupError(Exception):
    """What is to be served cannot start: a scoring script does not import, lacks init()/run(),
    or its init() raised; an MLflow model does not load (batch). ``traceback`` is the script's or
    the model's own, for the log only."""

    def __init__(self, message: str, traceback_text: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.traceback = traceback_text


def one_line(exc: BaseException, limit: int = 500) -> str:
    """`Class: first line of the message`: an exception for a log line or a ready file, without
    its traceback."""
    lines = str(exc).strip().splitlines()
    return ("{}: {}".format(type(exc).__name__, lines[0]) if lines else type(exc).__name__)[:limit]
