"""The in-process API answers what the server would, loads each model once, and fails readably."""
import json

import numpy as np
import pandas as pd
import pytest

from mlflow_deploy import testing
from mlflow_deploy.testing import settings
from mlflow_deploy.testing.client import _cache
from tests.scoring.test_pipeline import VALID

DIABETES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
DIABETES_BODY = {"input_data": {"columns": DIABETES, "data": [[0.03] * 10, [-0.01] * 10]}}
MIXED_BODY = {"input_data": {"columns": ["count", "price", "label"],
                             "data": [[2, 9.99, "pen"], [5, 1.5, "ink"]]}}


def test_score_answers_like_the_server(example_models):
    response = testing.score(example_models["diabetes"], DIABETES_BODY)
    assert response.status == 200 and response.ok
    assert isinstance(response.body, list) and len(response.body) == 2
    headers = response.headers
    assert headers["x-ms-run-function-failed"] == "False"
    assert headers["x-request-id"] == headers["x-ms-request-id"]
    assert float(headers["x-ms-run-fn-exec-ms"]) >= 0
    assert "x-mlflow-deploy-coercions" not in headers


def test_score_is_the_pipelines_answer(example_models, example_model_dirs):
    """The same bytes as pipeline.score on the same model: one path, no copy."""
    from mlflow_deploy.scoring import pipeline
    from mlflow_deploy.scoring.predictor import Predictor

    raw = json.dumps(MIXED_BODY).encode()
    direct = pipeline.score(raw, "application/json", Predictor.load(example_model_dirs["mixed-params"]))
    assert testing.score(example_models["mixed-params"], raw).raw == direct.body


def test_model_is_loaded_once_per_uri(example_models):
    uri = example_models["heart"]
    first = testing.load_predictor(uri)
    for _ in range(3):
        assert testing.score(uri, VALID["heart"]).status == 200
    assert testing.load_predictor(uri) is first
    assert sum(key[1] == uri for key in _cache if key[0] == "uri") == 1


def test_local_folder_and_payload_kinds(example_model_dirs, tmp_path):
    folder = example_model_dirs["iris-tensor"]
    rows = [[5.1, 3.5, 1.4, 0.2]]
    assert testing.score(folder, np.array(rows)).body == [0]
    assert testing.score(folder, rows).status == 200
    assert testing.score(folder, json.dumps({"input_data": rows})).status == 200
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"input_data": rows}))
    assert testing.score(folder, path).status == 200
    frame = pd.DataFrame([[2, 9.99, "pen"]], columns=["count", "price", "label"])
    assert testing.score(example_model_dirs["mixed-params"], frame).status == 200


def test_params_argument_replaces_the_bodys(example_models):
    response = testing.score(example_models["mixed-params"], MIXED_BODY, params={"suffix": "!"})
    assert [row["label"] for row in response.body] == ["pen!", "ink!"]
    testing.assert_rejected(example_models["mixed-params"], MIXED_BODY, params={"scale": "big"},
                            match="param 'scale'")


def test_validation_modes_and_the_suite_default(example_models):
    uri = example_models["diabetes"]
    coerced = {"input_data": {"columns": DIABETES, "data": [["0.03"] + [0.01] * 9]}}
    response = testing.assert_valid(uri, coerced)
    assert response.coercions and "column 'age'" in response.headers["x-mlflow-deploy-coercions"]
    testing.assert_rejected(uri, coerced, validation="strict", match="column 'age'")
    previous = settings.set_default_validation("strict")
    try:
        assert testing.score(uri, coerced).status == 400
        assert testing.score(uri, coerced, validation="compatible").status == 200
    finally:
        settings.set_default_validation(previous)


def test_assert_valid_failure_shows_the_servers_answer(example_models):
    bad = {"input_data": {"columns": DIABETES[1:], "data": [[0.1] * 9]}}
    with pytest.raises(AssertionError) as caught:
        testing.assert_valid(example_models["diabetes"], bad)
    text = str(caught.value)
    assert "would not score this payload (validation: compatible)" in text
    assert 'HTTP 400 {"message":"missing required column \'age\'"}' in text


def test_assert_rejected_failures_say_what_was_expected(example_models):
    uri = example_models["diabetes"]
    with pytest.raises(AssertionError, match="expected HTTP 400 .* but the server would answer"):
        testing.assert_rejected(uri, DIABETES_BODY)
    bad = {"input_data": {"columns": DIABETES[1:], "data": [[0.1] * 9]}}
    with pytest.raises(AssertionError, match="does not match \"column 'sex'\""):
        testing.assert_rejected(uri, bad, match="column 'sex'")
    testing.assert_rejected(uri, bad, match=r"missing required column '\w+'")
    testing.assert_rejected(uri, b"{", match="could not be decoded as JSON")


def test_model_warnings_are_reported_not_raised(example_models):
    """The suite runs with filterwarnings=error; the server would still answer 200."""
    no_names = {"input_data": [[0.03] * 10]}
    response = testing.assert_valid(example_models["no-signature"], no_names)
    assert isinstance(response.warnings, tuple)


def test_a_model_rejection_is_a_400_naming_the_exception(example_models):
    response = testing.score(example_models["no-signature"], {"input_data": [[0.1, 0.2]]})
    assert response.status == 400 and "ValueError" in response.message


def test_scoring_client(example_models):
    from mlflow.models import ModelSignature

    client = testing.ScoringClient(example_models["tokens-mask"], validation="strict")
    assert isinstance(client.signature, ModelSignature)
    assert client.swagger()["swagger"] == "2.0"
    assert client.swagger("3")["openapi"].startswith("3.0")
    client.assert_valid(client.input_example)
    one_row = {"input_data": {"tokens": [[1] * 12], "mask": [[1] * 12] * 2}}
    client.assert_rejected(one_row, match="tensor 'tokens'")  # strict: no broadcast
    assert client.score(one_row, validation="compatible").status == 200
