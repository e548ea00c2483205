"""Property tests: what `payloads` draws scores 200 on every example model, what
`invalid_payloads` draws gets 400 naming the column, tensor or param at fault, never 500."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlflow_deploy import testing
from mlflow_deploy.scoring import payload, schema
from mlflow_deploy.testing.strategies import invalid_payloads, payloads

SIGNED = ["diabetes", "heart", "iris-tensor", "tokens-mask", "mixed-params"]
def bounded(max_examples):
    """Fixed seed, bounded examples, no deadline: the same run in CI every time."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def signature_of(uri):
    return testing.ScoringClient(uri).signature


@pytest.mark.parametrize("name", SIGNED)
def test_valid_payloads_score_200(example_models, name):
    uri = example_models[name]

    @bounded(40)
    @given(payloads(signature_of(uri)))
    def scores(body):
        testing.assert_valid(uri, body, validation="compatible")
        assert not testing.score(uri, body).coercions

    scores()


@pytest.mark.parametrize("name", SIGNED)
def test_valid_payloads_need_no_coercion(example_models, name):
    uri = example_models[name]

    @bounded(15)
    @given(payloads(signature_of(uri), rows=st.integers(1, 5)))
    def scores(body):
        testing.assert_valid(uri, body, validation="strict")

    scores()


@pytest.mark.parametrize("mode", ["compatible", "strict"])
@pytest.mark.parametrize("name", SIGNED)
def test_invalid_payloads_get_400_naming_the_culprit(example_models, name, mode):
    uri = example_models[name]

    @bounded(40 if mode == "compatible" else 30)
    @given(invalid_payloads(signature_of(uri), validation=mode))
    def rejected(bad):
        testing.assert_rejected(uri, bad, match=bad.culprit, validation=mode)
        assert "'" in bad.culprit or bad.culprit in ("input_data", "params")

    rejected()


def test_every_column_type_passes_enforcement(every_type_dir):
    """Array, Object, Map, AnyType, binary, datetime, optional columns and list params."""
    client = testing.ScoringClient(every_type_dir)
    view = client.predictor.signature

    @bounded(60)
    @given(payloads(client.signature, rows=st.integers(1, 5)))
    def accepted(body):
        parsed = payload.parse_azure(json.dumps(body).encode(), "application/json")
        enforced = schema.enforce(parsed, view, "strict")
        assert not enforced.coercions

    accepted()


def test_every_column_type_scores_without_an_index(every_type_dir):
    """Through the model too (MLflow's own enforcement runs inside predict)."""
    client = testing.ScoringClient(every_type_dir)

    @bounded(30)
    @given(payloads(client.signature, rows=st.integers(1, 4)))
    def scores(body):
        body["input_data"].pop("index", None)
        client.assert_valid(body, validation="strict")

    scores()


@pytest.mark.parametrize("mode", ["compatible", "strict"])
def test_every_column_type_invalid_gets_400(every_type_dir, mode):
    client = testing.ScoringClient(every_type_dir)

    @bounded(60)
    @given(invalid_payloads(client.signature, validation=mode))
    def rejected(bad):
        client.assert_rejected(bad, match=bad.culprit, validation=mode)

    rejected()


def test_forms_follow_the_signature(example_models):
    with pytest.raises(ValueError, match="tensor and named are only for tensor signatures"):
        payloads(signature_of(example_models["diabetes"]), form="tensor")
    with pytest.raises(ValueError, match="takes the form named"):
        payloads(signature_of(example_models["tokens-mask"]), form="split")
    with pytest.raises(ValueError, match="no input signature"):
        payloads(signature_of(example_models["no-signature"]))
    with pytest.raises(ValueError, match="validation must be"):
        invalid_payloads(signature_of(example_models["diabetes"]), validation="lenient")


def test_labelled_index_keeps_nested_values(every_type_dir):
    client = testing.ScoringClient(every_type_dir)
    body = {"input_data": {"columns": ["d", "f", "l", "i", "b", "s", "bin", "when", "ids", "obj",
                                       "weights", "anything"], "index": [7],
                           "data": [[1.0, 1.0, 1, 1, True, "s", "", "2020-01-01T00:00:00", [1],
                                     {"name": "n", "score": 1.0}, {"w": 1.0}, 1]]}}
    client.assert_valid(body)
