"""Signature enforcement, input form by input form, and the coercion rules."""
import inspect
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from mlflow_deploy.scoring import payload
from mlflow_deploy.scoring.errors import SchemaError, ScoringError
from mlflow_deploy.scoring.schema import SPLIT, Signature, enforce

def optional(type_, name):
    """An optional column in whichever spelling this mlflow has (`required` from 2.10 on)."""
    if "required" in inspect.signature(ColSpec.__init__).parameters:
        return ColSpec(type_, name, required=False)
    return ColSpec(type_, name, optional=True)


COLS = Signature.from_mlflow(
    Schema([ColSpec("double", "age"), ColSpec("long", "count"), ColSpec("string", "label"),
            ColSpec("boolean", "flag"), optional("double", "extra")]),
    ParamSchema([ParamSpec("scale", "double", 1.0), ParamSpec("top_k", "long", 3),
                 ParamSpec("names", "string", ["a"], shape=(-1,)),
                 ParamSpec("verbose", "boolean", False)]))
DOUBLES = Signature.from_mlflow(Schema([ColSpec("double", n) for n in ("a", "b", "c")]))
TENSOR = Signature.from_mlflow(Schema([TensorSpec(np.dtype(np.float64), (-1, 4))]))
NAMED = Signature.from_mlflow(Schema([TensorSpec(np.dtype(np.int64), (-1, 3), "tokens"),
                                      TensorSpec(np.dtype(np.int64), (-1, 3), "mask")]))
NONE = Signature.from_mlflow(None)
SECRET = 987654.321  # a value that must never appear in a message


def run(sig, input_data, validation="compatible", params=None):
    body = {"input_data": input_data}
    if params is not None:
        body["params"] = params
    parsed = payload.parse_azure(json.dumps(body).encode(), "application/json")
    return enforce(parsed, sig, validation)


def rejected(sig, input_data, match, validation="compatible", params=None):
    with pytest.raises(SchemaError) as err:
        run(sig, input_data, validation, params)
    assert err.value.status == 400
    assert match in err.value.message, err.value.message
    assert str(SECRET) not in err.value.message and "secret" not in err.value.message
    assert "{'" not in err.value.message  # payload shapes are written as JSON
    return err.value.message


def mlflow(sig, key, data, validation="compatible"):
    """The same data through MLflow's /invocations envelope."""
    raw = json.dumps({key: data}).encode()
    return enforce(payload.parse_mlflow(raw, "application/json"), sig, validation)

DROPPED = "input_data had 1 column the signature does not name, dropped"


ROW = [1.5, 2, "x", True, 0.5]
NAMES = ["age", "count", "label", "flag", "extra"]


def test_split_columns_in_any_order_with_index_and_extra_columns_dropped():
    out = run(COLS, {"columns": ["junk"] + NAMES[::-1], "index": [7, 8],
                     "data": [["j"] + ROW[::-1], ["j"] + ROW[::-1]]})
    frame = out.model_input
    assert list(frame.columns) == NAMES
    assert list(frame.index) == [7, 8]
    assert frame["age"].dtype == np.float64 and frame["count"].dtype == np.int64
    assert frame["flag"].dtype == bool and out.rows == 2


@pytest.mark.parametrize("validation", ["compatible", "strict"])
def test_dropped_extra_columns_are_reported_not_quoted(validation):
    """Dropped in both modes, as Azure drops them, and reported where unknown params are; the
    names are the client's, so they are counted."""
    fast = run(DOUBLES, {"columns": ["a", "b", "c", "secret"], "data": [[1.0, 2.0, 3.0, 4.0]]},
               validation)
    assert fast.coercions == [DROPPED]
    slow = run(COLS, {"columns": NAMES + ["secret", "x"], "data": [ROW + [1, 2]]}, validation)
    assert slow.coercions == [DROPPED.replace("1 column", "2 columns")]
    frame = pd.DataFrame([[1.0, 2.0, 3.0, 4.0]], columns=["a", "b", "c", "secret"])
    framed = enforce(payload.ParsedInput(frame, "frame"), DOUBLES, validation)
    assert framed.coercions == [DROPPED] and list(framed.model_input.columns) == ["a", "b", "c"]


def test_index_is_optional_and_optional_columns_may_be_absent():
    out = run(COLS, {"columns": NAMES[:4], "data": [ROW[:4]]})
    assert "extra" not in out.model_input.columns


def test_ints_accepted_for_double():
    out = run(DOUBLES, {"columns": ["a", "b", "c"], "data": [[1, 2, 3]]})
    assert out.model_input.dtypes.tolist() == [np.float64] * 3 and out.coercions == []


def test_fast_and_per_value_paths_agree():
    data = np.random.default_rng(1).normal(size=(50, 3)).round(4).tolist()
    fast = run(DOUBLES, {"columns": ["c", "a", "b"], "data": data}).model_input
    slow = run(DOUBLES, {"columns": ["c", "a", "b"], "data": data[:-1] + [data[-1][:2] + ["1"]]})
    pd.testing.assert_frame_equal(fast.iloc[:-1], slow.model_input.iloc[:-1])
    assert list(fast.columns) == ["a", "b", "c"]


def test_one_requests_frame_shares_nothing_a_model_can_change_with_the_next():
    """The all-double path builds each frame's columns from one Index per signature: a model
    that renames its input's columns (or names the axis) changes its own frame only."""
    first = run(DOUBLES, {"columns": ["a", "b", "c"], "data": [[1.0, 2.0, 3.0]]}).model_input
    first.columns.name = "renamed"
    first.columns = ["x", "y", "z"]
    second = run(DOUBLES, {"columns": ["a", "b", "c"], "data": [[4.0, 5.0, 6.0]]}).model_input
    assert list(second.columns) == ["a", "b", "c"] and second.columns.name is None
    assert second.columns is not first.columns


def test_missing_required_columns_are_named():
    message = rejected(COLS, {"columns": ["label"], "data": [["x"]]}, "missing required columns")
    assert "'age'" in message and "'count'" in message and "'flag'" in message


@pytest.mark.parametrize("column, value, match", [
    ("age", "secret", "column 'age' expects double values, got text that is not a number"),
    ("age", True, "column 'age' expects double values, got booleans"),
    ("age", [SECRET], "column 'age' expects double values, got arrays"),
    ("age", None, "column 'age' is required but has null values"),
    ("count", "secret", "column 'count' expects long values"),
    ("count", 2 ** 70, "column 'count' has values out of the long range"),
    ("label", {"k": SECRET}, "column 'label' expects string values, got objects"),
    ("flag", "secret", "column 'flag' expects boolean values, got strings"),
    ("flag", 7, "column 'flag' expects boolean values, got numbers"),
])
def test_wrong_values_are_named_never_quoted(column, value, match):
    row = list(ROW)
    row[NAMES.index(column)] = value
    rejected(COLS, {"columns": NAMES, "data": [row]}, match)


@pytest.mark.parametrize("column, value, expected, note", [
    ("age", "5.1", 5.1, "column 'age' had numbers sent as strings"),
    ("count", 1.5, 1, "column 'count' had fractional values, truncated"),
    ("label", None, "nan", "column 'label' had null values"),
    ("label", 12, "12", "column 'label' had numbers or booleans, converted to strings"),
    ("flag", 1, True, "column 'flag' had 0/1"),
])
def test_azures_coercions_are_listed_in_compatible_and_rejected_in_strict(
        column, value, expected, note):
    row = list(ROW)
    row[NAMES.index(column)] = value
    out = run(COLS, {"columns": NAMES, "data": [row]})
    assert out.model_input[column].iloc[0] == expected
    assert len(out.coercions) == 1 and out.coercions[0].startswith(note)
    rejected(COLS, {"columns": NAMES, "data": [row]}, note, validation="strict")


def test_integral_floats_in_long_columns_are_not_coercions():
    out = run(COLS, {"columns": NAMES, "data": [[1.5, 3.0, "x", False, 1]]}, "strict")
    assert out.model_input["count"].iloc[0] == 3 and out.coercions == []


def test_optional_column_may_hold_nulls():
    out = run(COLS, {"columns": NAMES, "data": [ROW[:4] + [None]]}, "strict")
    assert np.isnan(out.model_input["extra"].iloc[0])


@pytest.mark.parametrize("input_data, match", [
    ({"columns": NAMES}, "input_data has no 'data'"),
    ({"data": [ROW]}, "input_data has no 'columns'"),
    ({"columns": NAMES, "data": [ROW, ROW, ROW, ROW[:3]]},
     "row 3 of 'data' has 3 values; 'columns' names 5"),
    ({"columns": NAMES, "data": []}, "'data' has no rows: send at least one"),
    ({"columns": NAMES, "data": "secret"}, "'data' must be a list of rows"),
    ({"columns": NAMES, "data": [ROW, {"age": 1}]}, "'data' must be a list of rows, each a list"),
    ({"columns": NAMES, "index": [0, [1]], "data": [ROW, ROW]},
     "'index' entries must be numbers or strings"),
    ({"columns": NAMES, "index": [{"a": 1}], "data": [ROW]},
     "'index' entries must be numbers or strings"),
    ({"columns": [1, 2], "data": [[1, 2]]}, "'columns' must be a list of column names"),
    ({"columns": ["age", "age"], "data": [[1, 2]]}, "names a column more than once"),
    ({"columns": NAMES, "index": [1, 2], "data": [ROW]}, "'index' must be a list with one entry"),
    ({"tokens": [[1]]}, "input_data is an object of named values; a column signature takes "
                        "the split orientation " + SPLIT),
    ("secret", "input_data is a single value; a column signature takes the split orientation"),
])
def test_malformed_split_payloads(input_data, match):
    rejected(COLS, input_data, match)


def test_messages_write_payload_shapes_as_json():
    assert json.loads(SPLIT.replace("[[...]]", "[[]]").replace("[...]", "[]")) == {
        "columns": [], "index": [], "data": [[]]}
    message = rejected(NAMED, "secret", "a named-tensor signature takes an object")
    assert '{"tokens": [...], "mask": [...]}' in message


@pytest.mark.parametrize("input_data, got", [
    ([ROW, ROW], "a list of rows"),
    ([dict(zip(NAMES, ROW))], "a list of records"),
])
def test_a_column_signature_takes_only_the_split_orientation(input_data, got):
    """Azure's server fails both (500); MLflow's /invocations takes records."""
    rejected(COLS, input_data, "input_data is {}; a column signature takes the split "
                               "orientation {}".format(got, SPLIT))


def test_records_through_mlflows_envelope():
    out = mlflow(COLS, "dataframe_records", [dict(zip(NAMES, ROW), junk=1)])
    assert out.model_input["label"].iloc[0] == "x" and out.coercions == [DROPPED]
    with pytest.raises(SchemaError, match="missing required columns"):
        mlflow(COLS, "dataframe_records", [{"age": 1}])
    with pytest.raises(SchemaError, match="a list of rows; a column signature"):
        mlflow(COLS, "instances", [ROW])


def test_binary_and_datetime_columns():
    sig = Signature.from_mlflow(Schema([ColSpec("binary", "blob"), ColSpec("datetime", "when")]))
    out = run(sig, {"columns": ["blob", "when"], "data": [["AAE=", "2024-01-02T03:04:05"]]})
    assert out.model_input["blob"].iloc[0] == b"\x00\x01"
    assert out.model_input["when"].iloc[0] == pd.Timestamp("2024-01-02T03:04:05")
    rejected(sig, {"columns": ["blob", "when"], "data": [["%%%", "2024-01-02"]]},
             "column 'blob' expects base64-encoded strings")
    rejected(sig, {"columns": ["blob", "when"], "data": [["AAE=", "secret"]]},
             "column 'when' expects ISO 8601 datetime strings")


def test_nested_mlflow_types():
    schema_types = pytest.importorskip("mlflow.types.schema")
    if not hasattr(schema_types, "Array"):
        pytest.skip("this mlflow has no Array/Object column types (added in 2.10)")
    Array, Object, Property = schema_types.Array, schema_types.Object, schema_types.Property

    sig = Signature.from_mlflow(Schema([
        ColSpec(Array("long"), "ids"),
        ColSpec(Object([Property("k", "string")]), "meta")]))
    out = run(sig, {"columns": ["ids", "meta"], "data": [[[1, 2], {"k": "v"}]]})
    assert out.model_input["ids"].iloc[0] == [1, 2]
    rejected(sig, {"columns": ["ids", "meta"], "data": [[SECRET, {"k": "v"}]]},
             "column 'ids' expects arrays")
    rejected(sig, {"columns": ["ids", "meta"], "data": [[[1], [SECRET]]]},
             "column 'meta' expects objects")


# ---- tensors --------------------------------------------------------------------------------

def test_tensor_shape_with_wildcard():
    out = run(TENSOR, [[1, 2, 3, 4], [5, 6, 7, 8.5]])
    assert out.model_input.shape == (2, 4) and out.model_input.dtype == np.float64
    message = rejected(TENSOR, [[1, 2, 3]], "input_data has shape (1, 3) but the model expects (-1, 4)")
    assert "-1: any size" in message
    rejected(TENSOR, [1, 2, 3, 4], "has shape (4,)")
    rejected(TENSOR, [["secret", 2, 3, 4]], "expects floating-point numbers, got text")
    rejected(TENSOR, [[True, 2, 3, 4]], "expects floating-point numbers, got booleans")
    rejected(TENSOR, {"columns": ["a"], "data": [[1]]},
             "input_data is the split orientation; a tensor signature takes a (nested) list")
    rejected(TENSOR, [{"a": 1}], "input_data is a list of records; a tensor signature")
    rejected(TENSOR, [], "input_data has no rows: send at least one")


@pytest.mark.parametrize("input_data, where", [
    ([[1, 2, 3, 4]] * 3 + [[1, 2]], "row 3 has 2 values but row 0 has 4"),
    ([[1, 2, 3, 4], 5], "row 1 is a single value but row 0 is a list"),
    ([[[1, 2], [3]]], "row 0[1] has 1 values but row 0[0] has 2"),
])
def test_ragged_tensors_say_which_row(input_data, where):
    rejected(TENSOR, input_data, "input_data is ragged: every row must have the same length; "
             + where)


@pytest.mark.parametrize("sig, value, what", [
    (NAMED, 10 ** 19, "int64"),  # numpy reads it as uint64; a cast wraps it silently
    (NAMED, -(2 ** 64), "int64"),  # no 64-bit integer holds it: an object array
    (NAMED, 2 ** 70, "int64"),
    (NAMED, 1e19, "int64"),
    (Signature.from_mlflow(Schema([TensorSpec(np.dtype(np.int32), (-1, 3), "tokens"),
                                   TensorSpec(np.dtype(np.int32), (-1, 3), "mask")])),
     2 ** 31, "int32"),
])
def test_integer_tensors_are_range_checked_never_wrapped(sig, value, what):
    rejected(sig, {"tokens": [[1, value, 3]], "mask": [[1, 1, 1]]},
             "tensor 'tokens' has values out of the {} range".format(what))
    rejected(sig, {"tokens": [[1, 2, 3], [-1, value, 3]], "mask": [[1, 1, 1]] * 2},
             "tensor 'tokens' has values out of the {} range".format(what))
    biggest = run(sig, {"tokens": [[np.iinfo(what).max, np.iinfo(what).min, 0]],
                        "mask": [[1, 1, 1]]}, "strict")
    assert biggest.model_input["tokens"][0].tolist() == [np.iinfo(what).max,
                                                         np.iinfo(what).min, 0]


FLOAT32 = Signature.from_mlflow(Schema([TensorSpec(np.dtype(np.float32), (-1, 2))]))


def test_float32_overflow_is_a_coercion():
    """1e300 cannot be a float32: the model gets infinity (as on Azure), reported as such."""
    note = "input_data had values beyond the float32 range, sent to the model as infinity"
    out = run(FLOAT32, [[1e300, 1.0], [-1e300, 2.0]])
    assert np.isinf(out.model_input[:, 0]).all() and out.coercions == [note]
    assert run(FLOAT32, [[float(np.finfo(np.float32).max), 1]], "strict").coercions == []
    rejected(FLOAT32, [[1e300, 1.0]], note + " (validation is strict)", validation="strict")
    rejected(FLOAT32, [[10 ** 39, 1.0]], note, validation="strict")
    rejected(FLOAT32, [[10 ** 400, 1.0]], "input_data has values out of the float32 range")
    assert run(TENSOR, [[2 ** 70, 1, 2, 3]], "strict").model_input[0, 0] == 2.0 ** 70


@pytest.mark.parametrize("value", [1e300, -1e300, 10 ** 39])
def test_float32_column_overflow_is_a_coercion(value):
    sig = Signature.from_mlflow(Schema([ColSpec("float", "f"), ColSpec("double", "d")]))
    note = "column 'f' had values beyond the float range, sent to the model as infinity"
    for raw in (False, True):  # the numeric fast path and the per-value path
        data = [[value, 1.0], [1.0, 2.0 if not raw else "2"]]
        out = run(sig, {"columns": ["f", "d"], "data": data})
        assert np.isinf(out.model_input["f"].iloc[0]) and note in out.coercions
        rejected(sig, {"columns": ["f", "d"], "data": data}, note, validation="strict")
    frame = pd.DataFrame({"f": [float(value), 1.0], "d": [1.0, 2.0]})
    assert enforce(payload.ParsedInput(frame, "frame"), sig).coercions == [note]


def test_integers_beyond_any_float_are_out_of_range():
    """Python's int -> float conversion raises OverflowError: a 400, not a 500."""
    sig = Signature.from_mlflow(Schema([ColSpec("double", "d")]),
                                ParamSchema([ParamSpec("scale", "double", 1.0),
                                             ParamSpec("top_k", "long", 3)]))
    rejected(sig, {"columns": ["d"], "data": [[10 ** 400]]}, "column 'd' has values out of the "
                                                              "double range")
    rejected(TENSOR, [[10 ** 400, 1, 2, 3]], "input_data has values out of the float64 range")
    body = {"columns": ["d"], "data": [[1]]}
    rejected(sig, body, "param 'scale' has values out of the double range",
             params={"scale": 10 ** 400})
    rejected(sig, body, "param 'top_k' has values out of the long range", params={"top_k": 2 ** 63})


def test_tensor_numeric_strings_are_a_coercion():
    out = run(TENSOR, [["1.5", "2", "3", "4"]])
    assert out.model_input[0, 0] == 1.5 and out.coercions
    rejected(TENSOR, [["1.5", "2", "3", "4"]], "converted", validation="strict")


def test_named_tensors():
    out = run(NAMED, {"tokens": [[1, 2, 3]], "mask": [[1, 1, 0]], "junk": [1]})
    assert set(out.model_input) == {"tokens", "mask"}
    assert out.model_input["mask"].dtype == np.int64
    rejected(NAMED, {"tokens": [[1, 2, 3]]}, "missing tensor 'mask'")
    rejected(NAMED, {"tokens": [[1, 2, 3]], "mask": [[1, 1]]},
             "tensor 'mask' has shape (1, 2) but the model expects (-1, 3)")
    rejected(NAMED, {"tokens": [[1.5, 2, 3]], "mask": [[1, 1, 0]]}, "tensor 'tokens' had fractional",
             validation="strict")
    rejected(NAMED, [[1, 2, 3]], "input_data is a list of rows; a named-tensor signature takes "
                                 'an object {"tokens": [...], "mask": [...]}')
    rejected(NAMED, {"tokens": [[1, 2, 3]] * 3, "mask": [[1, 1, 0]] * 2},
             "tensors 'tokens', 'mask' have different numbers of rows (3, 2)")


def test_named_tensors_in_the_split_orientation():
    """Azure answers 200: each column becomes the tensor of its name, row by row."""
    out = run(NAMED, {"columns": ["mask", "tokens", "junk"], "index": [0, 1],
                      "data": [[[1, 1, 0], [1, 2, 3], 7], [[1, 0, 0], [4, 5, 6], 7]]}, "strict")
    assert out.model_input["tokens"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert out.model_input["mask"].dtype == np.int64 and out.model_input["mask"].shape == (2, 3)
    assert out.coercions == [DROPPED] and out.rows == 2
    rejected(NAMED, {"columns": ["tokens"], "index": [0], "data": [[[1, 2, 3]]]},
             "missing tensor 'mask'")
    rejected(NAMED, {"columns": ["tokens", "mask"], "data": [[[1, 2, 3], [1, 1, 1]]]},
             "input_data has no 'index': send the split orientation " + SPLIT)
    rejected(NAMED, {"columns": ["tokens", "mask"], "index": [0], "data": [[[1, 2], [1, 1, 1]]]},
             "tensor 'tokens' has shape (1, 2) but the model expects (-1, 3)")
    rejected(NAMED, {"columns": ["tokens", "mask"], "index": [0], "data": [[[1, 2, 3]]]},
             "row 0 of 'data' has 1 values; 'columns' names 2")
    one_dim = Signature.from_mlflow(Schema([TensorSpec(np.dtype(np.float64), (-1,), "a"),
                                            TensorSpec(np.dtype(np.float64), (-1,), "b")]))
    flat = run(one_dim, {"columns": ["a", "b"], "index": [0, 1], "data": [[1, 2], [3, 4]]})
    assert flat.model_input["a"].tolist() == [1, 3] and flat.model_input["b"].tolist() == [2, 4]


def test_a_tensor_named_like_a_split_key_is_a_named_tensor():
    sig = Signature.from_mlflow(Schema([TensorSpec(np.dtype(np.int64), (-1,), "data"),
                                        TensorSpec(np.dtype(np.int64), (-1,), "params")]))
    out = run(sig, {"data": [1, 2], "params": [3, 4]}, "strict")
    assert out.model_input["params"].tolist() == [3, 4] and out.coercions == []


def test_named_tensor_rows_broadcast_like_azure():
    out = run(NAMED, {"tokens": [[1, 2, 3], [4, 5, 6]], "mask": [[1, 1, 0]]})
    assert out.model_input["mask"].shape == (2, 3)
    assert out.coercions == ["tensor 'mask' had 1 row, repeated to match the others"]
    rejected(NAMED, {"tokens": [[1, 2, 3], [4, 5, 6]], "mask": [[1, 1, 0]]}, "repeated",
             validation="strict")


# ---- no signature ---------------------------------------------------------------------------

def test_no_signature_forms():
    assert isinstance(run(NONE, [[1, 2]]).model_input, np.ndarray)
    frame = run(NONE, {"columns": ["a"], "index": [3], "data": [[1]]}).model_input
    assert isinstance(frame, pd.DataFrame) and list(frame.index) == [3]
    arrays = run(NONE, {"t": [[1, 2]], "u": [3]}).model_input
    assert arrays["t"].shape == (1, 2) and arrays["u"].tolist() == [3]
    rejected(NONE, [[1, 2], [3]], "ragged")
    rejected(NONE, [], "input_data has no rows")
    rejected(NONE, {"columns": ["a"], "index": [], "data": []}, "'data' has no rows")


def test_no_signature_needs_the_whole_split_orientation_and_no_records():
    """Azure's server fails both (500); MLflow's /invocations takes both."""
    rejected(NONE, {"columns": ["a"], "data": [[1]]},
             "input_data has no 'index': send the split orientation " + SPLIT)
    rejected(NONE, [{"a": 1}], "input_data is a list of records; a model without a signature "
                               "takes a (nested) list, the split orientation " + SPLIT)
    assert list(mlflow(NONE, "dataframe_split", {"columns": ["a"], "data": [[1]]})
                .model_input.columns) == ["a"]
    assert mlflow(NONE, "dataframe_records", [{"a": 1}]).model_input["a"].tolist() == [1]


@pytest.mark.parametrize("sig, input_data", [
    (COLS, {"columns": NAMES, "data": [ROW], "params": {"scale": SECRET}}),
    (NAMED, {"tokens": [[1, 2, 3]], "mask": [[1, 1, 1]], "params": {"scale": 2}}),
    (NONE, {"columns": ["a"], "index": [0], "data": [[1]], "params": {}}),
])
def test_params_inside_input_data_are_refused(sig, input_data):
    """Azure fails on them (500); top-level params are the only ones a model gets."""
    rejected(sig, input_data, "'params' is inside input_data; it belongs at the top level of "
                              "the body, next to 'input_data'")


# ---- params ---------------------------------------------------------------------------------

def test_params_checked_against_schema():
    body = {"columns": NAMES, "data": [ROW]}
    assert run(COLS, body).params is None
    assert run(COLS, body, params={}).params is None
    out = run(COLS, body, params={"scale": 2, "top_k": 5, "names": ["x"], "verbose": True})
    assert out.params == {"names": ["x"], "scale": 2.0, "top_k": 5, "verbose": True}
    rejected(COLS, body, "param 'scale' expects a double value, got text", params={"scale": "secret"})
    rejected(COLS, body, "param 'verbose' expects a boolean", params={"verbose": 1})
    rejected(COLS, body, "param 'names' expects a list", params={"names": "secret"})
    rejected(COLS, body, "param 'top_k' expects a long value, got booleans", params={"top_k": True})


def test_param_coercions_and_unknown_params():
    body = {"columns": NAMES, "data": [ROW]}
    out = run(COLS, body, params={"top_k": 2.5, "nope": 1})
    assert out.params == {"top_k": 2}
    assert out.coercions == ["param 'nope' is not in the model's params schema, ignored",
                             "param 'top_k' was fractional, truncated to long"]
    rejected(COLS, body, "param 'nope' is not in the model's params schema", "strict",
             params={"nope": 1})
    odd = run(COLS, body, params={"x\r\nSet-Cookie: a": 1, "\u00e9\u20ac": 2, "n" * 65: 3})
    assert odd.coercions == ["a param is not in the model's params schema, ignored"] * 3
    no_params = Signature.from_mlflow(Schema([ColSpec("double", "a")]))
    assert run(no_params, {"columns": ["a"], "data": [[1]]}, params={"x": 1}).params is None
    rejected(no_params, {"columns": ["a"], "data": [[1]]}, "the model has no params schema",
             "strict", params={"x": 1})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=4),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(
        st.sampled_from(NAMES + ["columns", "data", "index", "tokens", "mask"]), children,
        max_size=5), max_leaves=30),
    st.sampled_from([COLS, DOUBLES, TENSOR, NAMED, NONE]),
    st.sampled_from(["compatible", "strict"]))
def test_random_input_data_is_accepted_or_rejected_with_a_4xx(input_data, sig, validation):
    try:
        run(sig, input_data, validation)
    except ScoringError as exc:
        assert exc.status == 400


def test_labelled_index_keeps_every_column_kind():
    sig = Signature.from_mlflow(Schema([ColSpec("datetime", "when"), ColSpec("string", "s"),
                                        ColSpec("double", "d")]))
    out = run(sig, {"columns": ["when", "s", "d"], "index": ["a", "b"],
                    "data": [["2024-01-02T00:00:00", "x", 1], ["2024-01-02T00:00:00.5", "y", 2]]})
    frame = out.model_input
    assert list(frame.index) == ["a", "b"]
    assert frame["when"].notna().all() and frame["s"].tolist() == ["x", "y"]


def test_large_longs_are_exact_or_rejected_never_wrapped():
    sig = Signature.from_mlflow(Schema([ColSpec("long", "n"), ColSpec("double", "d")]))
    big = 2 ** 62 + 1
    out = run(sig, {"columns": ["n", "d"], "data": [[big, 0.5]]})
    assert int(out.model_input["n"].iloc[0]) == big
    rejected(sig, {"columns": ["n", "d"], "data": [[2 ** 63, 0.5]]},
             "column 'n' has values out of the long range")
    rejected(sig, {"columns": ["n", "d"], "data": [[float(2 ** 63), 0.5]]},
             "column 'n' has values out of the long range")
