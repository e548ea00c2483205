"""The report of `mlflow-deploy check` on real models: healthy, unsigned, an output Azure cannot
serialise, a Python version the machine does not have, and an input example the server would not
score (the model or MLflow's own enforcement refuses it, or the model breaks on it)."""
import json
import re

import pandas as pd
import pytest

import mlflow.pyfunc
from mlflow_deploy.testing import ScoringClient
from mlflow_deploy.testing.check import REQUEST_ID, run_check
from tests.testing import models


def statuses(report_json):
    return {c["check"]: c["status"] for c in json.loads(report_json)["checks"]}


def test_healthy_model(example_models):
    text, code = run_check(example_models["diabetes"])
    assert code == 0
    for line in ("ok    MLmodel", "ok    flavor         python_function (loader mlflow.sklearn)",
                 "ok    signature      columns: 10 (10 required); params: none",
                 "ok    input example  accepted by the signature",
                 "ok    python         3.11 requested",
                 "ok    prediction", "ok    output",
                 "ok    server         a real server (gunicorn, a forked worker) answered 200 "
                 "to the input example in ", "Deployable: 0 failed, 0 warning(s)"):
        assert line in text
    assert re.search(r"ok    requirements   \d+ requirement\(s\) and the scoring server's resolve "
                     r"to \d+ locked package\(s\) for Python 3\.11", text)
    assert "curl -X POST http://127.0.0.1:5001/score -H 'Content-Type: application/json'" in text


def test_json_report_and_its_curl_examples_score(example_models, example_model_dirs):
    from mlflow_deploy import testing

    text, code = run_check(example_models["tokens-mask"], output_format="json")
    report = json.loads(text)
    assert code == 0 and report["deployable"] is True
    assert set(statuses(text).values()) == {"ok"}
    [named] = report["payload_forms"]
    assert named["form"] == "named" and named["curl"].startswith("curl -X POST")
    for name in ("heart", "mixed-params", "iris-tensor"):
        forms = json.loads(run_check(example_model_dirs[name], "json")[0])["payload_forms"]
        for form in forms:  # every advertised body is one the server accepts
            testing.assert_valid(example_model_dirs[name], form["body"], validation="strict")
    assert [f["form"] for f in forms] == ["tensor"]


def test_model_without_signature_warns(example_models):
    text, code = run_check(example_models["no-signature"], "json")
    assert code == 0
    found = statuses(text)
    assert found["signature"] == "warn" and found["input example"] == "warn"
    assert found["prediction"] == "skip" and found["server"] == "skip"
    assert [f["form"] for f in json.loads(text)["payload_forms"]] == ["list", "split", "dict"]


def test_dict_of_arrays_output_fails(dict_output_dir):
    text, code = run_check(dict_output_dir)
    assert code == 1
    assert "fail  output" in text and "a dict of arrays" in text
    assert "Azure's server would answer 500" in text
    assert "NOT DEPLOYABLE: 1 failed" in text


def test_unavailable_python_fails(python_399_dir):
    text, code = run_check(python_399_dir, "json")
    assert code == 1
    [python] = [c for c in json.loads(text)["checks"] if c["check"] == "python"]
    assert python["status"] == "fail"
    assert python["message"].startswith("the model needs Python 3.99 but no interpreter of that "
                                        "version was found (found: ")
    assert "3.10" in python["message"] and "3.11" in python["message"]


def test_missing_model_is_one_failing_line(tmp_path):
    text, code = run_check(str(tmp_path / "nowhere"))
    assert code == 1
    assert "fail  MLmodel" in text and str(tmp_path) not in text.split("\n", 1)[1]


def test_unresolvable_pin_fails_naming_the_resolver_error(tmp_path, example_model_dirs):
    """A pin no index has: the requirements line fails with uv's own reason."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(example_model_dirs["diabetes"], model)
    (model / "requirements.txt").write_text("scikit-learn==0.0.424242\n")
    text, code = run_check(str(model), "json")
    assert code == 1
    [line] = [c for c in json.loads(text)["checks"] if c["check"] == "requirements"]
    assert line["status"] == "fail" and line["message"].startswith("not installable: ")


class Raises(mlflow.pyfunc.PythonModel):
    """Raises ``error`` on any input: a model whose own checks refuse its example, or one that
    breaks on it."""

    def __init__(self, error):
        self.error = error

    def predict(self, context, model_input, params=None):
        raise self.error


@pytest.fixture(scope="module")
def nested_ints_dir(tmp_path_factory):
    """A model whose input example holds integers in an array of doubles: our checks let them
    through (JSON has one kind of number), MLflow's own enforcement inside predict refuses them."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Array

    path = tmp_path_factory.mktemp("nested-ints") / "model"
    signature = ModelSignature(inputs=Schema([ColSpec(Array("double"), "v")]))
    models.save(path, models.RowCount(), signature, pd.DataFrame({"v": [[1.5, 2.5]]}))
    (path / "input_example.json").write_text(json.dumps({"columns": ["v"], "data": [[[1, 2]]]}))
    return str(path)


def checks(report_json):
    return {c["check"]: c for c in json.loads(report_json)["checks"]}


def test_mlflow_enforcement_rejection_is_what_the_server_answers(nested_ints_dir, start_server):
    """The example passes our checks but not MLflow's own enforcement inside predict: a server
    answers 400, and check reports that answer, with MLflow's reason (which the server logs)."""
    text, code = run_check(nested_ints_dir, "json")
    assert code == 1
    found = checks(text)
    assert found["input example"]["status"] == "ok"
    assert found["prediction"]["status"] == "fail" and found["output"]["status"] == "skip"

    server = start_server(nested_ints_dir)
    answer = server.post(body=ScoringClient(nested_ints_dir).input_example,
                         headers={"Content-Type": "application/json", "x-request-id": REQUEST_ID})
    assert answer.status_code == 400
    message = answer.json()["message"]
    assert message.startswith("The input passed mlflow-deploy's checks but MLflow's own signature "
                              "enforcement rejected it")
    reported = found["prediction"]["message"]
    assert reported.startswith("the server would answer 400: {} (logged: MlflowException: "
                               .format(message)), reported
    assert "[1, 2]" not in reported  # MLflow's message starts with the data; the reason does not


@pytest.mark.parametrize("error, status, message", [
    (ValueError("x must be positive\nsecond line"), 400,
     "The model rejected the input: ValueError: x must be positive"),
    (RuntimeError("the GPU caught fire"), 500,
     "The model failed while scoring; the deployment log has the traceback for request id {} "
     "(logged: RuntimeError: the GPU caught fire)".format(REQUEST_ID)),
], ids=["rejects", "fails"])
def test_a_model_that_raises_on_its_example(tmp_path, error, status, message):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from mlflow_deploy import testing

    signature = ModelSignature(inputs=Schema([ColSpec("double", "x")]))
    path = models.save(tmp_path / "model", Raises(error), signature, pd.DataFrame({"x": [1.0]}))
    text, code = run_check(path, "json")
    assert code == 1
    found = checks(text)
    assert found["input example"]["status"] == "ok" and found["output"]["status"] == "skip"
    assert found["prediction"] == {"check": "prediction", "status": "fail",
                                   "message": "the server would answer {}: {}".format(status,
                                                                                    message)}
    assert found["server"] == {"check": "server", "status": "skip",
                               "message": "not tried: the input example did not score in process"}
    answer = testing.score(path, ScoringClient(path).input_example)  # the server's own path
    assert answer.status == status
    assert message.startswith(answer.message.split(" request id ")[0])


def test_a_model_that_fails_only_in_a_forked_worker(fork_shy_dir, tmp_path, monkeypatch):
    """In process its example scores; through a real server (the model loaded in the gunicorn
    master, predicted in a forked worker) it answers 500, and only the server line says so. The
    server is gone when the check returns: no process, no folder."""
    import tempfile

    from tests.testing.leftovers import left_running

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the check's server lives
    text, code = run_check(fork_shy_dir, "json")
    assert code == 1
    found = checks(text)
    assert found["prediction"]["status"] == "ok" and found["output"]["status"] == "ok"
    assert found["server"]["status"] == "fail"
    assert found["server"]["message"] == (
        "a real server (gunicorn, a forked worker) answered 500, where the in-process prediction "
        "did not: The model failed while scoring; the deployment log has the traceback for "
        "request id {} (logged: RuntimeError: {})".format(REQUEST_ID, models.FORK_SHY_ERROR))
    assert [c["check"] for c in json.loads(text)["checks"]][-3:] == ["prediction", "output",
                                                                     "server"]
    assert left_running(tmp_path) == []
    assert not list(tmp_path.glob("mlflow-deploy-*"))

    text, code = run_check(fork_shy_dir, "json", server=False)
    assert code == 0
    assert checks(text)["server"] == {"check": "server", "status": "skip",
                                      "message": "not tried (--no-server)"}
