"""Enforce a model's signature on a ParsedInput, rejecting what Azure's server rejects (with a
precise 400 where Azure answers a bare 500).

The signature is read once into a small `Signature` view so that each request only walks plain
tuples. Every message names the column, tensor or param at fault in single quotes and never
quotes the caller's values; payload shapes are written as JSON. `compatible` mode does Azure's
silent coercions and lists each one; `strict` rejects them. What both modes drop (columns or
tensors the signature does not name) is listed with the coercions.
"""
import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Container, Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from .errors import SchemaError
from .payload import ParsedInput

NUMERIC = {"double": np.float64, "float": np.float32, "long": np.int64, "integer": np.int32}
INT_RANGE = {"long": (-(2 ** 63), 2 ** 63 - 1), "integer": (-(2 ** 31), 2 ** 31 - 1)}
DTYPE_WORDS = {"f": "floating-point numbers", "i": "integers", "u": "integers", "b": "booleans",
               "U": "strings", "S": "bytes", "O": "values"}

# payload shapes in messages are written as JSON, the language the client speaks
SPLIT = '{"columns": [...], "index": [...], "data": [[...]]}'
PARAMS_INSIDE = ("'params' is inside input_data; it belongs at the top level of the body, next "
                 "to 'input_data'")
# a name the client chose (an unknown param) is quoted only when it is this plain: anything
# else could break the header the notes travel in, or smuggle the client's text into ours
PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}\Z")
# what kind of coercion each one is: a label of the server's coercion counter, from a fixed set (a
# coercion's text names a column, which would make a label per column)
OVERFLOW = "overflow_to_infinity"
FROM_STRING = "number_from_string"
TRUNCATED = "fraction_truncated"
TO_BOOLEAN = "to_boolean"
NULL_AS_NAN = "null_as_nan"
TO_STRING = "to_string"
BROADCAST = "row_repeated"
IGNORED_PARAM = "param_ignored"
DROPPED = "dropped"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # double, float, long, integer, boolean, string, binary, datetime, array, object...
    required: bool = True


@dataclass(frozen=True)
class Tensor:
    name: Optional[str]
    dtype: np.dtype
    shape: Tuple[int, ...]


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any
    is_list: bool = False


@dataclass(frozen=True)
class Signature:
    """What the model accepts: columns, or tensors, or nothing known (no signature)."""

    columns: Tuple[Column, ...] = ()
    tensors: Tuple[Tensor, ...] = ()
    params: Optional[Tuple[Param, ...]] = None  # None: the model has no params schema

    @cached_property
    def names(self) -> FrozenSet[str]:
        """The columns' names, or the named tensors': read once, not per request."""
        return frozenset(spec.name for spec in self.columns or self.tensors if spec.name)

    @cached_property
    def column_index(self) -> pd.Index:
        """The columns in the signature's order, as the columns of a frame: made once and
        handed out as copies (``Index.copy`` shares its values, so a model that names its
        input's columns changes only its own). Made anew for each request it was 9 % of a
        worker's CPU at 1 row (pandas 3 builds each as a pyarrow string array: 89 us a frame,
        18 us with a copy)."""
        return pd.Index([c.name for c in self.columns])

    @property
    def kind(self) -> str:
        if self.columns:
            return "columns"
        if self.tensors:
            return "named" if self.tensors[0].name else "tensor"
        return "none"

    @classmethod
    def from_mlflow(cls, input_schema, params_schema=None) -> "Signature":
        """Read MLflow's Schema/ParamSchema (2.x and 3.x) into plain tuples."""
        params = None
        if params_schema is not None:
            params = tuple(Param(p.name, _type_name(p.dtype), p.default,
                                 tuple(p.shape or ()) == (-1,)) for p in params_schema.params)
        if input_schema is None:
            return cls(params=params)
        if input_schema.is_tensor_spec():
            return cls(tensors=tuple(Tensor(s.name, np.dtype(s.type), tuple(s.shape or ()))
                                     for s in input_schema.inputs), params=params)
        return cls(columns=tuple(Column(s.name, _type_name(s.type), _required(s))
                                 for s in input_schema.inputs), params=params)


def _required(spec: Any) -> bool:
    """mlflow >= 2.10 says `required`; 2.x before it said `optional`."""
    required = getattr(spec, "required", None)
    if required is None:
        return not getattr(spec, "optional", False)
    return bool(required)


def _type_name(t: Any) -> str:
    """DataType.double -> 'double'; MLflow's Array/Object/Map/AnyType -> 'array'/'object'/..."""
    name = getattr(t, "name", None)
    if isinstance(name, str) and type(t).__name__ == "DataType":
        return name
    return type(t).__name__.lower()


@dataclass
class Enforced:
    """The model input after the signature, with the coercions compatible mode applied."""

    model_input: Any
    params: Optional[Dict[str, Any]]
    rows: int
    form: str
    coercions: List[str] = field(default_factory=list)
    coercion_kinds: List[str] = field(default_factory=list)  # each coercion's kind, in order

    def summary(self) -> str:
        done = "; coercions: " + "; ".join(self.coercions) if self.coercions else ""
        given = ", ".join(sorted(self.params)) if self.params else "none"
        return "{} payload, {} row(s); params: {}{}".format(self.form, self.rows, given, done)


class _Mode:
    """Collects coercions in compatible mode; turns each into an error in strict mode."""

    def __init__(self, validation: str):
        self.strict = validation == "strict"
        self.coercions: List[str] = []
        self.kinds: List[str] = []

    def coerce(self, what: str, why: str, kind: str) -> None:
        if self.strict:
            raise SchemaError("{} {} (validation is strict)".format(what, why))
        self.note(what, why, kind)

    def note(self, what: str, why: str, kind: str) -> None:
        """What both modes do alike (dropping what the signature does not name), reported with
        the coercions so that the client learns of it."""
        self.coercions.append("{} {}".format(what, why))
        self.kinds.append(kind)

    def dropped(self, names: Sequence[str], known: Container[str], kind: str) -> None:
        """Report the payload's ``kind``s (columns, tensors) the signature does not name; they are
        counted, never quoted: their names are the client's."""
        extra = sum(1 for name in names if name not in known)
        if extra:
            self.note("input_data", "had {} {}{} the signature does not name, dropped".format(
                extra, kind, "s" if extra > 1 else ""), DROPPED)


def out_of_range(what: str, type_name: str) -> SchemaError:
    return SchemaError("{} has values out of the {} range".format(what, type_name))


def no_rows(what: str) -> SchemaError:
    return SchemaError("{} has no rows: send at least one".format(what))


def _overflowed(mode: _Mode, what: str, type_name: str) -> None:
    """A finite number too large for a 32-bit (or smaller) float becomes infinity, as numpy's
    cast (and Azure) makes it: a coercion, so that nobody takes the prediction for a real one."""
    mode.coerce(what, "had values beyond the {} range, sent to the model as infinity".format(
        type_name), OVERFLOW)


def enforce(parsed: ParsedInput, sig: Signature, validation: str = "compatible") -> Enforced:
    mode = _Mode(validation)
    if (parsed.envelope == "azure" and isinstance(parsed.data, dict) and "params" in parsed.data
            and not (sig.tensors and "params" in sig.names)):
        raise SchemaError(PARAMS_INSIDE)
    if parsed.form == "frame":
        model_input = _enforce_frame(parsed.data, sig, mode)
    elif sig.kind == "columns":
        model_input = _enforce_columns(parsed, sig, mode)
    elif sig.kind == "tensor":
        model_input = _enforce_tensor(parsed, sig.tensors[0], mode)
    elif sig.kind == "named":
        model_input = _enforce_named(parsed, sig, mode)
    else:
        model_input = _unsigned(parsed)
    params = enforce_params(parsed.params, sig.params, mode)
    return Enforced(model_input, params, _rows(model_input), parsed.form, mode.coercions,
                    mode.kinds)


def _rows(model_input: Any) -> int:
    if isinstance(model_input, dict):
        return max((_rows(v) for v in model_input.values()), default=0)
    if isinstance(model_input, np.ndarray):
        return model_input.shape[0] if model_input.ndim else 1
    return len(model_input) if isinstance(model_input, (list, pd.DataFrame, pd.Series)) else 1


# ---- no signature -----------------------------------------------------------------------

def _unsigned(parsed: ParsedInput) -> Any:
    """Azure's rules without a signature: list -> ndarray, split dict (all three keys) ->
    DataFrame, other dict -> arrays. A list of records and a split dict without 'index' fail
    on Azure; MLflow's /invocations takes both."""
    try:
        model_input = _unsigned_input(parsed)
    except OverflowError:  # pandas 1.x converts such integers while building the frame
        raise out_of_range("input_data", "float64") from None
    if _beyond_float64(model_input):  # later versions keep them as objects
        raise out_of_range("input_data", "float64")
    return model_input


def _beyond_float64(model_input: Any) -> bool:
    """An integer too large for any float: numpy and pandas keep it as a Python object, and the
    model's own conversion to floats fails with an OverflowError, which no model raises to say
    the input is wrong (a 500). Only object arrays and columns are looked at."""
    if isinstance(model_input, dict):
        return any(_beyond_float64(v) for v in model_input.values())
    if isinstance(model_input, pd.DataFrame):
        return any(_beyond_float64(model_input.iloc[:, i].to_numpy())
                   for i, dtype in enumerate(model_input.dtypes) if dtype == object)
    if isinstance(model_input, np.ndarray) and model_input.dtype == object:
        return any(_float_overflows(v) for v in model_input.ravel())
    return False


def _float_overflows(value: Any) -> bool:
    if not isinstance(value, int) or isinstance(value, bool) or value.bit_length() < 1000:
        return False
    try:
        float(value)
    except OverflowError:
        return True
    return False


def _unsigned_input(parsed: ParsedInput) -> Any:
    data = parsed.data
    azure = parsed.envelope == "azure"
    if parsed.form == "split":
        columns, rows, index = _split_parts(data, require_index=azure)
        return pd.DataFrame(rows, columns=columns, index=index)
    if parsed.form == "records":
        if azure:
            raise _wrong_form(parsed, "none", ())
        return pd.DataFrame.from_records(data)
    if isinstance(data, dict):
        return {str(k): _array(v, "tensor '{}'".format(k)) for k, v in data.items()}
    if isinstance(data, list) and not data:
        raise no_rows("input_data")
    return _array(data, "input_data")


def _array(value: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError:
        arr = None
    if arr is None or arr.dtype == object and isinstance(value, list):
        where = _ragged_at(value) if isinstance(value, list) else None
        if where is not None:
            raise SchemaError("{} is ragged: every row must have the same length; {}".format(
                what, where))
        if arr is None:
            raise SchemaError(what + " is ragged: every row must have the same length")
    return arr


def _ragged_at(value: list, path: Tuple[int, ...] = ()) -> Optional[str]:
    """Where the first row of a different length is ("row 2 has 3 values but row 0 has 4";
    deeper, "row 0 [1] has 2 values but row 0 [0] has 3"), or None when the nested lists are
    all alike."""
    def row(i: int) -> str:
        where = path + (i,)
        return "row {}{}".format(where[0], "".join("[{}]".format(j) for j in where[1:]))

    lists = [isinstance(v, list) for v in value]
    if not any(lists):
        return None
    if not all(lists):
        i = lists.index(not lists[0])
        kinds = ("a single value", "a list")
        return "{} is {} but {} is {}".format(row(i), kinds[lists[i]], row(0), kinds[lists[0]])
    width = len(value[0])
    for i, item in enumerate(value):
        if len(item) != width:
            return "{} has {} values but {} has {}".format(row(i), len(item), row(0), width)
    for i, item in enumerate(value):
        found = _ragged_at(item, path + (i,))
        if found:
            return found
    return None


# ---- column signatures ------------------------------------------------------------------

def _split_parts(data: Dict[str, Any], require_index: bool = False):
    """The split orientation's parts, checked. ``require_index``: where Azure's server takes
    the dict for a split frame only with all three keys (no signature, named tensors)."""
    columns, rows, index = data.get("columns"), data.get("data"), data.get("index")
    for key, value in (("data", rows), ("columns", columns)) + (
            (("index", index),) if require_index else ()):
        if value is None:
            raise SchemaError("input_data has no '{}': send the split orientation {}".format(
                key, SPLIT))
    # the per-row checks ask for each row's type and length through map(), in C: JSON makes
    # exact lists and dicts, and a Python loop over 1000 rows was a tenth of such a request
    if not isinstance(rows, list) or not set(map(type, rows)) <= {list}:
        raise SchemaError("'data' must be a list of rows, each a list of values")
    if not rows:
        raise no_rows("'data'")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise SchemaError("'columns' must be a list of column names (strings)")
    _unique(columns)
    width = len(columns)
    if set(map(len, rows)) != {width}:
        i, row = next((i, row) for i, row in enumerate(rows) if len(row) != width)
        raise SchemaError("row {} of 'data' has {} values; 'columns' names {}".format(
            i, len(row), width))
    if index is not None:
        if not isinstance(index, list) or len(index) != len(rows):
            raise SchemaError("'index' must be a list with one entry per row of 'data'")
        if not set(map(type, index)).isdisjoint((list, dict)):
            raise SchemaError("'index' entries must be numbers or strings")
    return columns, rows, index


def _unique(columns: Sequence[str]) -> None:
    if len(set(columns)) != len(columns):
        raise SchemaError("'columns' names a column more than once")


def _require(spec: Sequence[Column], present: Container[str]) -> None:
    """The signature's required columns must all be among ``present``."""
    missing = [c.name for c in spec if c.required and c.name not in present]
    if missing:
        raise SchemaError("missing required column{} {}".format(
            "s" if len(missing) > 1 else "", ", ".join("'{}'".format(m) for m in missing)))


def _enforce_columns(parsed: ParsedInput, sig: Signature, mode: _Mode) -> pd.DataFrame:
    """The split orientation only: Azure fails a list of rows or of records for a column
    signature (MLflow's /invocations takes records)."""
    data, spec, names = parsed.data, sig.columns, sig.names
    index = None
    if parsed.form == "split":
        columns, rows, index = _split_parts(data)
        mode.dropped(columns, names, "column")
        index = _index(index, len(rows))
        fast = _fast_numeric(columns, rows, sig, parsed.may_have_bools, index)
        if fast is not None:
            return fast
        position = {name: i for i, name in enumerate(columns)}
        values = {c.name: [row[position[c.name]] for row in rows]
                  for c in spec if c.name in position}
    elif parsed.form == "records" and parsed.envelope == "mlflow":
        mode.dropped(sorted({k for r in data for k in r}), names, "column")
        values = {c.name: [r.get(c.name) for r in data] for c in spec
                  if any(c.name in r for r in data)}
    else:
        raise _wrong_form(parsed, "columns", spec)
    _require(spec, values)
    # arrays, not Series: a Series would be aligned on its own 0..n-1 index against `index`
    converted = {c.name: _as_array(_column(c, values[c.name], mode))
                 for c in spec if c.name in values}
    return pd.DataFrame(converted, index=index)


def _wrong_form(parsed: ParsedInput, kind: str, spec: Sequence[Any]) -> SchemaError:
    """input_data in a form the signature does not take: what arrived, and what it takes."""
    data = parsed.data
    if parsed.form == "records":
        got = "a list of records"
    elif isinstance(data, list):
        got = "a list of rows" if data and all(isinstance(r, list) for r in data) else "a list"
    elif parsed.form == "split":
        got = "the split orientation"
    elif isinstance(data, dict):
        got = "an object of named values"
    else:
        got = "a single value"
    if kind == "columns":
        takes = "a column signature takes the split orientation " + SPLIT
    elif kind == "tensor":
        takes = "a tensor signature takes a (nested) list"
    elif kind == "named":
        takes = "a named-tensor signature takes an object {} or the split orientation {} with " \
                "one column per tensor".format(_named_shape(spec), SPLIT)
    else:
        takes = "a model without a signature takes a (nested) list, the split orientation {} " \
                "or an object of named lists".format(SPLIT)
    return SchemaError("input_data is {}; {}".format(got, takes))


def _named_shape(spec: Sequence[Tensor]) -> str:
    return "{" + ", ".join("{}: [...]".format(json.dumps(t.name)) for t in spec) + "}"


def _as_array(column: Any) -> Any:
    return column.array if isinstance(column, pd.Series) else column


def _index(index: Optional[list], n: int) -> Optional[Any]:
    """The payload's index, or None when it is just 0..n-1 (pandas' default, and cheaper)."""
    if index is None or index == list(range(n)):
        return None
    return pd.Index(index)


def _fast_numeric(columns, rows, sig, may_have_bools, index) -> Optional[pd.DataFrame]:
    """All-numeric payload for an all-numeric signature: one numpy conversion, no per-value loop.

    Returns None whenever a value needs the per-value path (its errors and coercions).
    """
    spec = sig.columns
    if may_have_bools or not rows or not all(c.type in NUMERIC and c.required for c in spec):
        return None
    try:
        arr = np.array(rows)
    except ValueError:
        return None
    if arr.ndim != 2 or arr.dtype.kind not in "if":
        return None
    position = {name: i for i, name in enumerate(columns)}
    if any(c.name not in position for c in spec):
        return None
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return None
    out = {}
    for c in spec:
        col = arr[:, position[c.name]]
        if c.type in INT_RANGE:
            # float64 holds integers exactly only below 2**53: larger ones take the exact path
            if col.dtype.kind == "f" and (not (col == np.trunc(col)).all()
                                          or (col.size and np.abs(col).max() >= 2.0 ** 53)):
                return None
            lo, hi = INT_RANGE[c.type]
            if col.size and (col.min() < lo or col.max() > hi):
                return None
        elif _beyond_float(col, NUMERIC[c.type]):
            return None  # infinity for a too large value is a coercion: the per-value path's
        out[c.name] = col.astype(NUMERIC[c.type], copy=False)
    if all(c.type == "double" for c in spec):  # one float block: the cheapest frame to build
        names = [c.name for c in spec]
        # the payload's own array when it is already that block (our own: nothing else holds it)
        block = arr if names == list(columns) and arr.dtype == np.float64 else \
            np.column_stack([out[name] for name in names])
        return pd.DataFrame(block, columns=sig.column_index.copy(), index=index, copy=False)
    return pd.DataFrame(out, index=index)


def _enforce_frame(frame: pd.DataFrame, sig: Signature, mode: _Mode) -> Any:
    """CSV bodies and batch files arrive as DataFrames: check columns the same way.

    A numeric column whose dtype already holds the signature's values (a batch reader applied the
    signature's types while reading) is converted as one array; any other column goes through
    the per-value path, so the result, errors and coercions are those of a JSON body either way.
    A batch file of a million rows would otherwise cost a Python object per value."""
    if sig.kind != "columns":
        return frame
    spec = sig.columns
    names = [str(c) for c in frame.columns]
    _unique(names)
    mode.dropped(names, sig.names, "column")
    position = {name: i for i, name in enumerate(names)}
    _require(spec, position)
    present = [c for c in spec if c.name in position]
    arrays = [_frame_numeric(frame.iloc[:, position[c.name]], c) for c in present]
    if names == [c.name for c in present] and _default_index(frame.index) and all(
            a is not None and a.dtype == frame.dtypes.iloc[i] for i, a in enumerate(arrays)):
        return frame  # already the signature's columns, in order, with its dtypes
    converted = {}
    for c, array in zip(present, arrays):
        if array is None:
            column = frame.iloc[:, position[c.name]]
            values = column.astype(object).where(column.notna(), None).tolist()
            array = _as_array(_column(c, values, mode))
        converted[c.name] = array
    return pd.DataFrame(converted, index=None)


def _default_index(index: pd.Index) -> bool:
    return isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1


def _frame_numeric(column: pd.Series, col: Column) -> Optional[np.ndarray]:
    """The column as the signature's numpy dtype when the per-value path would give exactly that
    without a coercion or an error: numbers only, no missing values, integers within range.
    None sends the column through the per-value path."""
    if col.type not in NUMERIC:
        return None
    values = column.values
    if not isinstance(values, np.ndarray) or values.dtype.kind not in "iuf":
        return None
    target = np.dtype(NUMERIC[col.type])
    if col.type in INT_RANGE:
        if values.dtype.kind == "f":
            return None  # NaN, infinity or truncation: the per-value path's words
        if values.size and values.dtype != target:
            lo, hi = INT_RANGE[col.type]
            if values.min() < lo or values.max() > hi:
                return None
    elif values.dtype.kind == "f" and values.size and np.isnan(values.min()):
        return None  # a required column's nulls, or an optional one's: the per-value path
    elif _beyond_float(values, target):
        return None  # the per-value path reports the infinity
    return values if values.dtype == target else values.astype(target)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "booleans"
    if isinstance(value, (int, float)):
        return "numbers"
    if isinstance(value, str):
        return "strings"
    if isinstance(value, list):
        return "arrays"
    if isinstance(value, dict):
        return "objects"
    return "values"


def _column(col: Column, values: List[Any], mode: _Mode) -> Any:
    what = "column '{}'".format(col.name)
    if col.type in NUMERIC:
        return _numeric(col, values, mode, what)
    if col.type == "boolean":
        return _boolean(col, values, mode, what)
    if col.type == "string":
        return _string(col, values, mode, what)
    if col.type == "binary":
        return _binary(col, values, what)
    if col.type == "datetime":
        return _datetime(col, values, what)
    if col.type == "array" and any(v is not None and not isinstance(v, list) for v in values):
        raise SchemaError(what + " expects arrays")
    if col.type in ("object", "map") and any(
            v is not None and not isinstance(v, dict) for v in values):
        raise SchemaError(what + " expects objects")
    _nulls(col, values, what)
    return pd.Series(values, dtype=object)


def _nulls(col: Column, values: List[Any], what: str) -> bool:
    has_null = any(v is None for v in values)
    if has_null and col.required:
        raise SchemaError(what + " is required but has null values (a column marked "
                          "required: false in the signature may have them)")
    return has_null


def _numeric(col: Column, values: List[Any], mode: _Mode, what: str) -> np.ndarray:
    is_int = col.type in INT_RANGE
    out: List[Any] = []
    strings = truncated = False
    for v in values:
        if isinstance(v, bool):
            raise SchemaError("{} expects {} values, got booleans".format(what, col.type))
        if isinstance(v, str):
            try:
                v = float(v) if not is_int or not v.strip().lstrip("+-").isdigit() else int(v)
            except ValueError:
                raise SchemaError("{} expects {} values, got text that is not a number".format(
                    what, col.type)) from None
            strings = True
        elif v is not None and not isinstance(v, (int, float)):
            raise SchemaError("{} expects {} values, got {}".format(what, col.type, _kind(v)))
        if is_int and isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                raise SchemaError("{} expects {} values, got NaN or infinity".format(what, col.type))
            if v != int(v):
                truncated = True
            v = int(v)
        out.append(v)
    if strings:
        mode.coerce(what, "had numbers sent as strings, converted to {}".format(col.type),
                    FROM_STRING)
    if truncated:
        mode.coerce(what, "had fractional values, truncated to {}".format(col.type), TRUNCATED)
    if is_int:
        lo, hi = INT_RANGE[col.type]
        if any(v is not None and (v < lo or v > hi) for v in out):
            raise out_of_range(what, col.type)
    if _nulls(col, out, what):
        return _floats([np.nan if v is None else v for v in out], what, col.type)
    if is_int:
        return np.array(out, dtype=NUMERIC[col.type])
    exact = _floats(out, what, col.type)
    converted = _cast(exact, NUMERIC[col.type])
    if _became_infinite(exact, converted):
        _overflowed(mode, what, col.type)
    return converted


def _floats(values: List[Any], what: str, type_name: str) -> np.ndarray:
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:  # an integer beyond any float (10**400)
        raise out_of_range(what, type_name) from None


def _cast(arr: np.ndarray, dtype: Any) -> np.ndarray:
    """astype without numpy's overflow warning: the caller reports the infinities itself."""
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(dtype, copy=False)


def _became_infinite(before: np.ndarray, after: np.ndarray) -> bool:
    """A cast to a narrower float turned a finite value into infinity."""
    if after.dtype.kind != "f" or not after.size:
        return False
    infinite = np.isinf(after)
    if before.dtype.kind == "f":
        infinite &= ~np.isinf(before)
    return bool(infinite.any())


def _beyond_float(values: np.ndarray, dtype: Any) -> bool:
    """``values`` (numbers) hold a finite value too large for ``dtype``, a float type."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f" or values.dtype.kind not in "iuf" or not values.size:
        return False
    if values.dtype.kind == "f" and values.dtype.itemsize <= dtype.itemsize:
        return False
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    limit = float(np.finfo(dtype).max)
    return bool(finite.size) and (float(finite.max()) > limit or float(finite.min()) < -limit)


TRUE_WORDS = {"true": True, "false": False}
# pandas >= 2 infers one format per column unless told the values are ISO 8601 of any precision
ISO_8601 = {"format": "ISO8601"} if int(pd.__version__.split(".")[0]) >= 2 else {}


def _boolean(col: Column, values: List[Any], mode: _Mode, what: str) -> np.ndarray:
    out: List[Any] = []
    converted = False
    for v in values:
        if isinstance(v, bool) or v is None:
            out.append(v)
        elif isinstance(v, int) and v in (0, 1):
            out.append(bool(v))
            converted = True
        elif isinstance(v, str) and v.strip().lower() in TRUE_WORDS:
            out.append(TRUE_WORDS[v.strip().lower()])
            converted = True
        else:
            raise SchemaError("{} expects boolean values, got {}".format(what, _kind(v)))
    if converted:
        mode.coerce(what, "had 0/1 or 'true'/'false' values, converted to boolean", TO_BOOLEAN)
    if _nulls(col, out, what):
        return np.array(out, dtype=object)
    return np.array(out, dtype=bool)


def _string(col: Column, values: List[Any], mode: _Mode, what: str) -> np.ndarray:
    out: List[Any] = []
    nulls = numbers = False
    for v in values:
        if isinstance(v, str):
            out.append(v)
        elif v is None:
            if col.required:
                nulls = True
                v = "nan"  # what Azure's pandas path makes of a null in a string column
            out.append(v)
        elif isinstance(v, (int, float)):  # bool included
            numbers = True
            out.append(str(v).lower() if isinstance(v, bool) else str(v))
        else:
            raise SchemaError("{} expects string values, got {}".format(what, _kind(v)))
    if nulls:
        mode.coerce(what, "had null values, sent to the model as the string 'nan'", NULL_AS_NAN)
    if numbers:
        mode.coerce(what, "had numbers or booleans, converted to strings", TO_STRING)
    return np.array(out, dtype=object)


def _binary(col: Column, values: List[Any], what: str) -> np.ndarray:
    _nulls(col, values, what)
    out: List[Any] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        if not isinstance(v, str):
            raise SchemaError(what + " expects base64-encoded strings, got " + _kind(v))
        try:
            out.append(base64.b64decode(v, validate=True))
        except (binascii.Error, ValueError):
            raise SchemaError(what + " expects base64-encoded strings") from None
    return np.array(out, dtype=object)


def _datetime(col: Column, values: List[Any], what: str) -> pd.Series:
    _nulls(col, values, what)
    if any(v is not None and not isinstance(v, str) for v in values):
        raise SchemaError(what + " expects ISO 8601 datetime strings")
    try:
        return pd.Series(pd.to_datetime(pd.Series(values, dtype=object), **ISO_8601))
    except (ValueError, TypeError, OverflowError):
        raise SchemaError(what + " expects ISO 8601 datetime strings") from None


# ---- tensor signatures ------------------------------------------------------------------

def _enforce_tensor(parsed: ParsedInput, spec: Tensor, mode: _Mode) -> np.ndarray:
    if not isinstance(parsed.data, list) or parsed.form == "records":
        raise _wrong_form(parsed, "tensor", (spec,))
    if not parsed.data:
        raise no_rows("input_data")
    return _tensor(parsed.data, spec, "input_data", mode, parsed.may_have_bools)


def _enforce_named(parsed: ParsedInput, sig: Signature, mode: _Mode) -> Dict[str, Any]:
    data, spec, names = parsed.data, sig.tensors, sig.names
    if not isinstance(data, dict):
        raise _wrong_form(parsed, "named", spec)
    if parsed.form == "split" and not names <= data.keys():
        data = _split_tensors(data, names, mode)  # a tensor named 'data' is not a split dict
    else:
        mode.dropped(list(data), names, "tensor")
    missing = [t.name for t in spec if t.name not in data]
    if missing:
        raise SchemaError("missing tensor{} {}".format(
            "s" if len(missing) > 1 else "", ", ".join("'{}'".format(m) for m in missing)))
    out = {t.name: _tensor(data[t.name], t, "tensor '{}'".format(t.name), mode,
                           parsed.may_have_bools) for t in spec}
    return _broadcast_rows(out, spec, mode)


def _split_tensors(data: Dict[str, Any], names: FrozenSet[str], mode: _Mode) -> Dict[str, Any]:
    """Azure reads the split orientation into a DataFrame and makes each column the tensor of
    its name: row i of 'data' holds, per column, row i of that tensor."""
    columns, rows, _ = _split_parts(data, require_index=True)
    mode.dropped(columns, names, "column")
    return {name: [row[i] for row in rows] for i, name in enumerate(columns)}


def _broadcast_rows(out: Dict[str, np.ndarray], spec: Sequence[Tensor], mode: _Mode):
    """Azure broadcasts a one-row tensor against the others; strict mode does not."""
    batched = [t.name for t in spec if t.shape and t.shape[0] == -1 and out[t.name].ndim]
    rows = {name: out[name].shape[0] for name in batched}
    if len(set(rows.values())) <= 1:
        return out
    most = max(rows.values())
    for name, n in rows.items():
        if n == most:
            continue
        if n != 1:
            raise SchemaError("tensors {} have different numbers of rows ({})".format(
                ", ".join("'{}'".format(k) for k in rows),
                ", ".join(str(count) for count in rows.values())))
        mode.coerce("tensor '{}'".format(name), "had 1 row, repeated to match the others",
                    BROADCAST)
        out[name] = np.broadcast_to(out[name], (most,) + out[name].shape[1:]).copy()
    return out


def _tensor(value: Any, spec: Tensor, what: str, mode: _Mode, may_have_bools: bool) -> np.ndarray:
    if not isinstance(value, list):
        raise SchemaError(what + " must be a (nested) list")
    arr = _array(value, what)
    want = spec.dtype.kind
    got = arr.dtype.kind
    if got == "O" and want in "iuf" and _only_numbers(value):
        # an integer no 64-bit type holds: out of any integer tensor's range, maybe in a float's
        if want in "iu":
            raise out_of_range(what, spec.dtype.name)
        arr = _floats(value, what, spec.dtype.name)
        got = "f"
    if got == "O":
        raise SchemaError("{} has values that are not {}".format(
            what, DTYPE_WORDS.get(want, "values")))
    if may_have_bools and want != "b" and got in "iuf" and _has_bool(value):
        raise SchemaError("{} expects {}, got booleans".format(what, DTYPE_WORDS.get(want)))
    if want in "iu":
        if got == "f":
            if not np.isfinite(arr).all():
                raise SchemaError(what + " expects integers, got NaN or infinity")
            if not _ints_fit(np.trunc(arr), spec.dtype):
                raise out_of_range(what, spec.dtype.name)
            if not (arr == np.trunc(arr)).all():
                mode.coerce(what, "had fractional values, truncated to integers", TRUNCATED)
        elif got in "iu":
            if not _ints_fit(arr, spec.dtype):
                raise out_of_range(what, spec.dtype.name)
        else:
            raise SchemaError("{} expects integers, got {}".format(what, DTYPE_WORDS.get(got)))
    elif want == "f":
        if got == "U":
            try:
                arr = arr.astype(np.float64)
            except ValueError:
                raise SchemaError(what + " expects floating-point numbers, got text") from None
            mode.coerce(what, "had numbers sent as strings, converted", FROM_STRING)
        elif got not in "iuf":
            raise SchemaError("{} expects floating-point numbers, got {}".format(
                what, DTYPE_WORDS.get(got)))
    elif want == "b" and got != "b":
        raise SchemaError("{} expects booleans, got {}".format(what, DTYPE_WORDS.get(got)))
    elif want in "US" and got not in "US":
        raise SchemaError("{} expects strings, got {}".format(what, DTYPE_WORDS.get(got)))
    _check_shape(arr, spec, what)
    try:
        converted = _cast(arr, spec.dtype)
    except (ValueError, OverflowError):
        raise out_of_range(what, spec.dtype.name) from None
    if want == "f" and _became_infinite(arr, converted):
        _overflowed(mode, what, spec.dtype.name)
    return converted


def _only_numbers(value: Any) -> bool:
    if isinstance(value, list):
        return all(_only_numbers(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ints_fit(arr: np.ndarray, dtype: np.dtype) -> bool:
    """Every (integral) value of ``arr`` is within the integer ``dtype``: numpy's cast would
    wrap the others silently. Python compares its ints and floats exactly."""
    if not arr.size:
        return True
    info = np.iinfo(dtype)
    lo, hi = arr.min().item(), arr.max().item()
    return info.min <= lo and hi <= info.max


def _has_bool(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_bool(v) for v in value)
    return isinstance(value, bool)


def _check_shape(arr: np.ndarray, spec: Tensor, what: str) -> None:
    if not spec.shape:
        return
    ok = arr.ndim == len(spec.shape) and all(
        want == -1 or want == got for want, got in zip(spec.shape, arr.shape))
    if not ok:
        raise SchemaError("{} has shape {} but the model expects {} (-1: any size)".format(
            what, _shape(arr.shape), _shape(spec.shape)))


def _shape(shape: Sequence[int]) -> str:
    return str(tuple(int(d) for d in shape))


# ---- params -----------------------------------------------------------------------------

PARAM_TYPES = {"double": float, "float": float, "long": int, "integer": int, "boolean": bool,
               "string": str, "datetime": str, "binary": str}


def enforce_params(given: Optional[Dict[str, Any]], spec: Optional[Sequence[Param]],
                   mode: _Mode) -> Optional[Dict[str, Any]]:
    """Check params against the params schema; absent or {} -> None (the model's defaults)."""
    if not given:
        return None
    if spec is None:
        mode.coerce("params", "were ignored: the model has no params schema", IGNORED_PARAM)
        return None
    known = {p.name: p for p in spec}
    out = {}
    for name in sorted(given):
        if name not in known:
            shown = "param '{}'".format(name) if PLAIN_NAME.match(name) else "a param"
            mode.coerce(shown, "is not in the model's params schema, ignored", IGNORED_PARAM)
            continue
        value = given[name]
        if value is None:
            continue  # the default applies
        p = known[name]
        what = "param '{}'".format(name)
        if p.is_list:
            if not isinstance(value, list):
                raise SchemaError("{} expects a list of {} values".format(what, p.type))
            out[name] = [_param_value(p, v, what, mode) for v in value]
        else:
            out[name] = _param_value(p, value, what, mode)
    return out or None


def _param_value(p: Param, value: Any, what: str, mode: _Mode) -> Any:
    want = PARAM_TYPES.get(p.type, object)
    if want is object:
        return value
    if want is bool:
        if isinstance(value, bool):
            return value
        raise SchemaError("{} expects a boolean, got {}".format(what, _kind(value)))
    if isinstance(value, bool) or isinstance(value, (list, dict)):
        raise SchemaError("{} expects a {} value, got {}".format(what, p.type, _kind(value)))
    if want is str:
        if isinstance(value, str):
            return value
        raise SchemaError("{} expects a {} value, got {}".format(what, p.type, _kind(value)))
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise SchemaError("{} expects a {} value, got text that is not a number".format(
                what, p.type)) from None
        mode.coerce(what, "was a number sent as a string, converted", FROM_STRING)
        value = number
    if want is int:
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise SchemaError("{} expects a {} value, got NaN or infinity".format(what, p.type))
            if value != int(value):
                mode.coerce(what, "was fractional, truncated to {}".format(p.type), TRUNCATED)
            value = int(value)
        lo, hi = INT_RANGE.get(p.type, (value, value))
        if not lo <= value <= hi:
            raise out_of_range(what, p.type)
        return value
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float (10**400)
        raise out_of_range(what, p.type) from None
