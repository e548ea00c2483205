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
from pathlib import Path
from typing import Any, Dict

from mlflow_deploy.errors import ServerFailed
from mlflow_deploy.online import supervisor
from mlflow_deploy.scoring.config import ServerConfig
from mlflow_deploy.scoring.errors import REVISION_HEADER

__all__ = ["run_self_test"]

NOT_MINE = 421
#: the file in a deployment's model folder that keeps its self-test (_test_of)
KEPT_TEST = ".mlflow-deploy-self-test.json"


def run_self_test(config: ServerConfig, address: str, log_path: Any) -> Dict[str, Any]:
    """What the revision was tried with and how it answered (at ``address``, the instance's
    socket); ServerFailed if it failed."""
    if config.scoring_script:
        return {"kind": "skipped", "reason": "a scoring script answers as it chooses"}
    test = _test_of(config)
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


def _test_of(config: ServerConfig) -> Any:
    """The model's self-test (scoring.selftest.SelfTest, or None), made once per model folder.
    A deployment's model folder is its own copy, made for one revision, and the test is kept
    in it: an instance added later (a scale-up, a restart by the liveness probe) is tried
    without this process importing mlflow to read the model (2.3 of a scale-up's 4.2 s). A
    foreground server's folder may be the user's: nothing is written there."""
    from mlflow_deploy.scoring.selftest import SelfTest, self_test_for

    kept = Path(config.model_dir, KEPT_TEST) if config.deployment else None
    if kept is not None:
        try:
            saved = json.loads(kept.read_text(encoding="utf-8"))
            return SelfTest(saved["kind"], saved["body"].encode("utf-8")) if saved else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # not made yet, or unreadable: made again
    test = self_test_for(config.model_dir)
    if kept is not None:
        text = json.dumps({"kind": test.kind, "body": test.body.decode("utf-8")} if test else None)
        temporary = kept.with_name(kept.name + ".tmp")
        try:
            temporary.write_text(text, encoding="utf-8")
            temporary.replace(kept)  # whole or not there, for the instance started beside this one
        except OSError:
            pass  # kept only to save time: the next instance makes it again
    return test


def _message(answer: bytes, reason: str) -> str:
    try:
        return str(json.loads(answer).get("message") or "").strip() or reason
    except (ValueError, AttributeError):
        return reason


def _failed(kind: str, what: str, log_path: Any) -> str:
    tried = "its input example" if kind == "input_example" else "a payload made from its signature"
    return ("The start-up self-test failed: the model, sent {}, answered {}; see the "
            "deployment's log: {}".format(tried, what, log_path))
