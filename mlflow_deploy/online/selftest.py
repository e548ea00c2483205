"""The start-up self-test: one real request to a new revision's server, through a real forked
worker, before the revision is Succeeded and takes traffic.

What in-process checks cannot catch (a thread pool that deadlocks after a fork, a library that
fails only in a child) shows here. The request is the model's input example (it must answer
200) or, without one, a payload made from the signature (only a 5xx, a timeout or no answer
fails it: a model may rightly reject made-up values). A scoring script, or a model with neither,
is not tried, and the deployment says so. While an update hands over, the old master still
accepts on the same socket; it answers a request for another revision 421 without scoring it,
and the request is sent again until the new revision has answered it.
"""
import http.client
import json
import time
from typing import Any, Dict

from mlflow_deploy.errors import ServerFailed
from mlflow_deploy.online import supervisor
from mlflow_deploy.scoring.config import ServerConfig

__all__ = ["run_self_test"]

NOT_MINE = 421


def run_self_test(config: ServerConfig, address: str, log_path: Any) -> Dict[str, Any]:
    """What the revision was tried with and how it answered (at ``address``, the instance's
    socket); ServerFailed if it failed."""
    if config.scoring_script:
        return {"kind": "skipped", "reason": "a scoring script answers as it chooses"}
    from mlflow_deploy.scoring.selftest import REVISION_HEADER, self_test_for

    test = self_test_for(config.model_dir)
    if test is None:
        return {"kind": "skipped",
                "reason": "the model has no input example and no signature to make one from"}
    headers = {"Content-Type": "application/json", REVISION_HEADER: str(config.revision),
               "x-request-id": "self-test-{}".format(config.revision)}
    timeout_s = config.request_timeout_ms / 1000.0
    deadline = time.monotonic() + timeout_s + 30.0  # the old master's workers may be busy
    while True:
        started = time.monotonic()
        try:
            status, reason, answer = supervisor.local_request(
                address, "POST", "/score", test.body, headers, timeout=timeout_s + 5)
        except (OSError, http.client.HTTPException) as exc:
            raise ServerFailed(_failed(test.kind, "no answer ({})".format(type(exc).__name__),
                                       log_path)) from None
        if status != NOT_MINE:
            break
        if time.monotonic() > deadline:
            raise ServerFailed(_failed(test.kind, "the new revision never took the request",
                                       log_path))
    elapsed_ms = round((time.monotonic() - started) * 1000.0, 1)
    if not test.passed(status):
        raise ServerFailed(_failed(test.kind, "{}: {}".format(
            status, _message(answer, reason)), log_path))
    return {"kind": test.kind, "status": status, "ms": elapsed_ms}


def _message(answer: bytes, reason: str) -> str:
    try:
        return str(json.loads(answer).get("message") or "").strip() or reason
    except (ValueError, AttributeError):
        return reason


def _failed(kind: str, what: str, log_path: Any) -> str:
    tried = "its input example" if kind == "input_example" else "a payload made from its signature"
    return ("The start-up self-test failed: the model, sent {}, answered {}; see the "
            "deployment's log: {}".format(tried, what, log_path))
