"""The report of `mlflow-deploy check` on real models: healthy, unsigned, an output Azure cannot
serialise, and a Python version the machine does not have."""
import json
import re

from mlflow_deploy.testing.check import run_check


def statuses(report_json):
    return {c["check"]: c["status"] for c in json.loads(report_json)["checks"]}


def test_healthy_model(example_models):
    text, code = run_check(example_models["diabetes"])
    assert code == 0
    for line in ("ok    MLmodel", "ok    flavor         python_function (loader mlflow.sklearn)",
                 "ok    signature      columns: 10 (10 required); params: none",
                 "ok    input example  accepted by the signature",
                 "ok    python         3.11 requested",
                 "ok    prediction", "ok    output", "Deployable: 0 failed, 0 warning(s)"):
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
    assert found["prediction"] == "skip"
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

