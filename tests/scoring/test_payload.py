"""The envelope (Azure's errors before scoring) and output rendering."""
import datetime
import json
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlflow_deploy.scoring import payload
from mlflow_deploy.scoring.errors import PayloadError, ScoringError, UnsupportedMediaType

JSON = "application/json"


def test_content_type_must_be_json():
    with pytest.raises(UnsupportedMediaType) as err:
        payload.parse_azure(b'{"input_data": [1]}', "text/plain")
    assert err.value.status == 415
    assert err.value.message == "Expects Content-Type to be application/json"
    with pytest.raises(UnsupportedMediaType):
        payload.parse_azure(b'{"input_data": [1]}', None)
    assert payload.parse_azure(b'{"input_data": [1]}', "application/json; charset=utf-8").data == [1]


@pytest.mark.parametrize("raw, message", [
    (b"", "POST body is empty. Expecting a JSON dictionary."),
    (b"  \n", "POST body is empty. Expecting a JSON dictionary."),
    (b"[1, 2]", "POST body should be a JSON dictionary."),
    (b'"input_data"', "POST body should be a JSON dictionary."),
    (b'{"data": [1]}', "A value is not provided for the 'input_data' parameter."),
    (b'{"input_data": null}', "A value is not provided for the 'input_data' parameter."),
])
def test_envelope_errors_use_azures_words(raw, message):
    with pytest.raises(PayloadError) as err:
        payload.parse_azure(raw, JSON)
    assert err.value.status == 400
    assert err.value.message == message


def test_bad_json_names_the_position_not_the_content():
    with pytest.raises(PayloadError) as err:
        payload.parse_azure(b'{"input_data": [secret-value]}', JSON)
    assert err.value.message.startswith("POST body could not be decoded as JSON: ")
    assert "secret" not in err.value.message
    with pytest.raises(PayloadError):
        payload.parse_azure(b"\xff\xfe{", JSON)


@pytest.mark.skipif(not hasattr(sys, "get_int_max_str_digits"),
                    reason="this Python reads integers of any length")
def test_an_integer_too_long_to_read_says_so():
    """Python (3.11, and 3.8-3.10 since their security releases) refuses to read an integer of
    more than 4300 digits: the body is UTF-8, that is not what is wrong with it."""
    with pytest.raises(PayloadError) as err:
        payload.parse_azure(b'{"input_data": [[' + b"9" * 5000 + b"]]}", JSON)
    assert err.value.message == ("POST body could not be decoded as JSON: it has an integer of "
                                 "more than {} digits".format(sys.get_int_max_str_digits()))
    with pytest.raises(PayloadError) as err:
        payload.parse_azure(b"\xff\xfe{", JSON)
    assert err.value.message == "POST body could not be decoded as JSON: not valid UTF-8 JSON"


def test_extra_keys_are_ignored_and_params_read():
    parsed = payload.parse_azure(b'{"input_data": [[1]], "junk": 1, "params": {"a": 1}}', JSON)
    assert parsed.params == {"a": 1} and parsed.form == "tensor"
    assert payload.parse_azure(b'{"input_data": [[1]], "params": {}}', JSON).params is None
    with pytest.raises(PayloadError, match="'params' must be a JSON object"):
        payload.parse_azure(b'{"input_data": [[1]], "params": [1]}', JSON)


def test_nan_tokens_are_accepted_like_pythons_json():
    parsed = payload.parse_azure(b'{"input_data": [[NaN, 1.0]]}', JSON)
    assert np.isnan(parsed.data[0][0])


@pytest.mark.parametrize("data, form", [
    ({"columns": ["a"], "data": [[1]]}, "split"),
    ({"data": [[1]]}, "split"),
    ([{"a": 1}], "records"),
    ([[1, 2]], "tensor"),
    ({"tokens": [[1]]}, "named"),
])
def test_forms(data, form):
    assert payload.parse_azure(json.dumps({"input_data": data}).encode(), JSON).form == form


def test_bool_hint():
    assert payload.parse_azure(b'{"input_data": [[1.0]]}', JSON).may_have_bools is False
    assert payload.parse_azure(b'{"input_data": [[true]]}', JSON).may_have_bools is True


def test_query_string_form():
    assert payload.parse_azure_query('[[1, 2]]').data == [[1, 2]]
    with pytest.raises(PayloadError):
        payload.parse_azure_query("{")


def test_mlflow_bodies():
    split = payload.parse_mlflow(b'{"dataframe_split": {"columns": ["a"], "data": [[1]]}}', JSON)
    assert split.form == "split"
    records = payload.parse_mlflow(b'{"dataframe_records": [{"a": 1}], "params": {"k": 1}}', JSON)
    assert records.form == "records" and records.params == {"k": 1}
    assert payload.parse_mlflow(b'{"instances": [[1]]}', JSON).form == "tensor"
    assert payload.parse_mlflow(b'{"inputs": {"t": [[1]]}}', JSON).form == "named"
    frame = payload.parse_mlflow(b"a,b\n1,2\n", "text/csv")
    assert frame.form == "frame" and list(frame.data.columns) == ["a", "b"]
    # MLflow's own forms (records, a split without index) stay MLflow's: schema.py knows them
    assert {split.envelope, records.envelope, frame.envelope} == {"mlflow"}
    assert payload.parse_azure(b'{"input_data": [{"a": 1}]}', JSON).envelope == "azure"
    with pytest.raises(PayloadError, match="exactly one of"):
        payload.parse_mlflow(b'{"input_data": [[1]]}', JSON)
    with pytest.raises(UnsupportedMediaType):
        payload.parse_mlflow(b"a", "text/plain")


@pytest.mark.parametrize("predictions, expected", [
    (np.array([1.5, 2.0]), [1.5, 2.0]),
    (np.array([[1, 2], [3, 4]]), [[1, 2], [3, 4]]),
    (pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]),
    (pd.Series([1.0, 2.0]), [1.0, 2.0]),
    ("text", "text"),
    (np.array([np.nan, np.inf, -np.inf, 1.0]), [None, None, None, 1.0]),
    ({"a": np.array([1, 2]), "b": np.array([0.5])}, {"a": [1, 2], "b": [0.5]}),
    (np.float32(1.5), 1.5),
    (np.int64(3), 3),
    ([np.float64("nan"), 2], [None, 2]),
    (pd.DataFrame({"t": pd.to_datetime(["2024-01-02T03:04:05"])}), [{"t": "2024-01-02T03:04:05"}]),
    ({"when": datetime.date(2024, 1, 2), "raw": b"\x00\x01"}, {"when": "2024-01-02", "raw": "AAE="}),
    (np.array(["a", None], dtype=object), ["a", None]),
])
def test_rendering_is_azures_and_always_valid_json(predictions, expected):
    body = payload.render_azure(predictions)
    assert json.loads(body) == expected  # strict JSON: no NaN tokens
    assert b"NaN" not in body and b"Infinity" not in body
    assert json.loads(payload.render_mlflow(predictions)) == {"predictions": expected}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200), st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["input_data", "params", "columns", "data", "index", "x"]), children,
        max_size=4),
    max_leaves=20).map(lambda v: json.dumps(v).encode())))
def test_random_bytes_never_escape_as_an_unexpected_error(raw):
    try:
        payload.parse_azure(raw, JSON)
        payload.parse_mlflow(raw, JSON)
    except ScoringError as exc:
        assert 400 <= exc.status < 500
