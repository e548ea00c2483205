"""Hypothesis strategies that write Azure payloads from an MLflow model signature.

``payloads(signature)`` draws request bodies the signature accepts in either validation mode (no
value relies on a compatible-mode coercion), so every one must score 200 unless the model itself
objects. ``invalid_payloads(signature, validation=...)`` draws bodies that mode must answer with
400 and a message naming the column, tensor or param at fault; each carries that name in
``.culprit``. Neither ever adds extra columns (the server drops them) nor, for compatible mode,
anything compatible mode coerces by design (numeric strings, fractional longs, 0/1 booleans,
nulls or numbers in string columns, one-row named tensors).

    from hypothesis import given
    from mlflow_deploy.testing import assert_rejected, assert_valid
    from mlflow_deploy.testing.strategies import invalid_payloads, payloads

    @given(payloads(signature))
    def test_accepts(body): assert_valid(uri, body)

    @given(invalid_payloads(signature))
    def test_rejects(bad): assert_rejected(uri, bad, match=bad.culprit)
"""
import base64
import datetime
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
from hypothesis import strategies as st

from mlflow_deploy.scoring.schema import INT_RANGE, Signature

__all__ = ["payloads", "invalid_payloads", "InvalidPayload", "FORMS"]

# the payload forms each kind of signature takes on Azure
FORMS = {"columns": ("split",), "tensor": ("tensor",), "named": ("named",)}
DEFAULT_ROWS = st.integers(1, 50)

# magnitudes models meet in practice: extremes overflow the model's arithmetic, not the contract
FLOAT_LIMIT = 1e9
FIRST_DATE = datetime.datetime(1900, 1, 1)
LAST_DATE = datetime.datetime(2200, 1, 1)
NOT_A_DATE = ("not a date", "2020-13-45", "31/31/2020 99:99")
NOT_BASE64 = ("not base64!", "@@@@", "abc")


class InvalidPayload(dict):
    """A request body one validation mode must reject; ``culprit`` is what the message names."""

    def __init__(self, body: Dict[str, Any], culprit: str, reason: str):
        super().__init__(body)
        self.culprit = culprit
        self.reason = reason

    def __repr__(self) -> str:
        return "InvalidPayload(reason={!r}, culprit={!r}, body={})".format(
            self.reason, self.culprit, dict.__repr__(self))


# ---- reading the signature --------------------------------------------------------------

def _view(signature: Any) -> Signature:
    if signature is None or getattr(signature, "inputs", None) is None:
        raise ValueError("the model has no input signature: there is nothing to draw payloads "
                         "from (Azure guesses the payload form of such models)")
    return Signature.from_mlflow(signature.inputs, getattr(signature, "params", None))


def _specs(signature: Any) -> Dict[str, Any]:
    """MLflow's column specs by name: they keep Array/Object/Map details the view drops."""
    return {s.name: s for s in signature.inputs.inputs}


def _rows(rows: Union[int, st.SearchStrategy]) -> st.SearchStrategy:
    return st.just(rows) if isinstance(rows, int) else rows


# ---- values a column or param accepts -------------------------------------------------

def _text() -> st.SearchStrategy:
    return st.text(max_size=12)


def _iso(moment: datetime.datetime) -> str:
    # one precision for every value: a column's strings must share a format (see report)
    return moment.replace(microsecond=0).isoformat()


def _datetimes() -> st.SearchStrategy:
    return st.datetimes(FIRST_DATE, LAST_DATE).map(_iso)


def _base64() -> st.SearchStrategy:
    return st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode("ascii"))


def _any_json() -> st.SearchStrategy:
    # never null: a required column of any type still rejects nulls
    return st.one_of(st.booleans(), st.integers(-1000, 1000),
                     st.floats(-1e6, 1e6, allow_nan=False), _text())


def _scalar(type_name: str, nested: bool = False) -> st.SearchStrategy:
    """Values of a DataType, sent the way MLflow's JSON conventions send them.

    A double column takes integers too; inside an Array, Object or Map MLflow's own enforcement
    wants real floats.
    """
    floats = st.floats(-FLOAT_LIMIT, FLOAT_LIMIT, allow_nan=False)
    if type_name == "double":
        return floats if nested else st.one_of(floats, st.integers(-10 ** 6, 10 ** 6))
    if type_name == "float":
        return st.floats(-1e6, 1e6, allow_nan=False, width=32)
    if type_name in INT_RANGE:
        low, high = INT_RANGE[type_name]
        return st.integers(low, high)
    if type_name == "boolean":
        return st.booleans()
    if type_name == "string":
        return _text()
    if type_name == "binary":
        return _base64()
    if type_name == "datetime":
        return _datetimes()
    return _any_json()


def _value(dtype: Any, nested: bool = False) -> st.SearchStrategy:
    """Values of a ColSpec's type, MLflow's nested Array/Object/Map types included."""
    kind = type(dtype).__name__
    if kind == "DataType":
        return _scalar(dtype.name, nested)
    if kind == "Array":
        return st.lists(_value(dtype.dtype, True), max_size=4)
    if kind == "Object":
        required = {p.name: _value(p.dtype, True) for p in dtype.properties if p.required}
        optional = {p.name: _value(p.dtype, True) for p in dtype.properties if not p.required}
        return st.fixed_dictionaries(required, optional=optional)
    if kind == "Map":
        return st.dictionaries(st.text(max_size=8), _value(dtype.value_type, True), max_size=3)
    return _any_json()  # AnyType, and types newer than this module


def _tensor_scalar(dtype: np.dtype) -> st.SearchStrategy:
    if dtype.kind == "f":
        width = min(dtype.itemsize * 8, 64)
        return st.floats(-1e6, 1e6, allow_nan=False, width=width)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return st.integers(int(info.min), int(info.max))
    if dtype.kind == "b":
        return st.booleans()
    if dtype.kind == "S":
        return st.text(st.characters(min_codepoint=97, max_codepoint=122), max_size=8)
    return _text()


def _param_value(param: Any) -> st.SearchStrategy:
    one = _scalar(param.type)
    if param.type in ("double", "float"):
        one = st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.integers(-1000, 1000))
    return st.lists(one, max_size=3) if param.is_list else one


_PARAM_TYPES = ("double", "float", "long", "integer", "boolean", "string", "datetime", "binary")


# ---- valid payloads ---------------------------------------------------------------------

def payloads(signature: Any, form: Optional[str] = None,
             rows: Union[int, st.SearchStrategy] = DEFAULT_ROWS,
             params: bool = True) -> st.SearchStrategy:
    """Azure request bodies that ``signature`` (MLflow's ``ModelSignature``) accepts.

    ``form`` is "split" for column signatures, "tensor" for an unnamed tensor and "named" for
    named tensors (the default is the signature's own). ``rows`` is an int or a strategy of ints.
    With ``params`` (and a params schema) some bodies carry params within their schema.
    """
    sig = _view(signature)
    form = _form(sig, form)
    rows = _rows(rows)
    if form == "split":
        inputs = _split(sig, _specs(signature), rows)
    elif form == "tensor":
        inputs = rows.flatmap(lambda n: _tensor(sig.tensors[0], n))
    else:
        inputs = rows.flatmap(lambda n: _named(sig.tensors, n))
    if not params or not sig.params:
        return inputs.map(lambda data: {"input_data": data})
    return st.builds(_body, inputs, _params(sig.params))


def _form(sig: Signature, form: Optional[str]) -> str:
    forms = FORMS.get(sig.kind, ())
    if form is None:
        return forms[0]
    if form not in forms:
        raise ValueError("a {} signature takes the form {}; tensor and named are only for "
                         "tensor signatures".format(sig.kind, " or ".join(forms)))
    return form


def _body(data: Any, params: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    body = {"input_data": data}
    if params is not None:
        body["params"] = params
    return body


def _params(spec: Sequence[Any]) -> st.SearchStrategy:
    """Absent, {}, or some of the schema's params with values of their type."""
    given = st.fixed_dictionaries({}, optional={p.name: _param_value(p) for p in spec
                                                if p.type in _PARAM_TYPES})
    return st.one_of(st.none(), given)


def _split(sig: Signature, specs: Dict[str, Any], rows: st.SearchStrategy) -> st.SearchStrategy:
    @st.composite
    def split(draw: Callable) -> Dict[str, Any]:
        n = draw(rows)
        columns = [c for c in sig.columns if c.required or draw(st.booleans())]
        order = draw(st.permutations(columns))
        values = {}
        for c in order:
            value = _value(specs[c.name].type)
            if not c.required:
                value = st.one_of(st.none(), value)
            values[c.name] = draw(st.lists(value, min_size=n, max_size=n))
        data = {"columns": [c.name for c in order],
                "data": [[values[c.name][i] for c in order] for i in range(n)]}
        index = draw(st.sampled_from(("absent", "range", "labels")))
        if index == "range":
            data["index"] = list(range(n))
        elif index == "labels":
            data["index"] = draw(st.lists(st.integers(0, 10 ** 6), min_size=n, max_size=n,
                                          unique=True))
        return data
    return split()


def _dims(spec: Any, n: int) -> st.SearchStrategy:
    """A concrete shape for a tensor spec: -1 first is the row count, other -1s any size."""
    dims = []
    for i, d in enumerate(spec.shape):
        if d != -1:
            dims.append(st.just(d))
        else:
            dims.append(st.just(n) if i == 0 else st.integers(1, 4))
    return st.tuples(*dims)


def _nested(scalar: st.SearchStrategy, shape: Sequence[int]) -> st.SearchStrategy:
    if not shape:
        return scalar
    return st.lists(_nested(scalar, shape[1:]), min_size=shape[0], max_size=shape[0])


def _tensor(spec: Any, n: int) -> st.SearchStrategy:
    return _dims(spec, n).flatmap(lambda shape: _nested(_tensor_scalar(spec.dtype), shape))


def _named(specs: Sequence[Any], n: int) -> st.SearchStrategy:
    return st.fixed_dictionaries({t.name: _tensor(t, n) for t in specs})


# ---- invalid payloads -------------------------------------------------------------------

# wrong values by column type, for both modes; each names its reason
_NOT_NUMBERS = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1,
                       max_size=8).filter(lambda s: not _parses_as_float(s))
_LISTS = st.lists(st.integers(0, 9), max_size=2)
_DICTS = st.dictionaries(st.sampled_from("abc"), st.integers(0, 9), min_size=1, max_size=2)


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _wrong_column_values(type_name: str) -> Optional[st.SearchStrategy]:
    if type_name in ("double", "float", "long", "integer"):
        wrong = [st.booleans(), _NOT_NUMBERS, _LISTS, _DICTS]
        if type_name in INT_RANGE:
            low, high = INT_RANGE[type_name]
            # clear of the float64 rounding at +-2**63 (see the report on the fast path)
            margin = 2 ** 12
            wrong.append(st.one_of(st.integers(high + margin, high * 4),
                                   st.integers(low * 4, low - margin)))
        return st.one_of(wrong)
    if type_name == "boolean":
        return st.one_of(st.integers(2, 100), st.floats(0.0, 1.0, allow_nan=False),
                         _NOT_NUMBERS.filter(lambda s: s.lower() not in ("true", "false")),
                         _LISTS, _DICTS)
    if type_name == "string":
        return st.one_of(_LISTS, _DICTS)
    if type_name == "binary":
        return st.one_of(st.integers(0, 9), st.booleans(), _LISTS, st.sampled_from(NOT_BASE64))
    if type_name == "datetime":
        return st.one_of(st.integers(0, 9), st.booleans(), _LISTS, st.sampled_from(NOT_A_DATE))
    if type_name == "array":
        return st.one_of(st.integers(0, 9), _NOT_NUMBERS, st.booleans(), _DICTS)
    if type_name in ("object", "map"):
        return st.one_of(st.integers(0, 9), _NOT_NUMBERS, st.booleans(), _LISTS)
    return None  # anytype: everything goes


def _coerced_column_values(type_name: str) -> Optional[st.SearchStrategy]:
    """What compatible mode converts and strict mode rejects."""
    if type_name in ("double", "float"):
        return st.integers(-1000, 1000).map(str)
    if type_name in INT_RANGE:
        return st.one_of(st.integers(-1000, 1000).map(str),
                         st.integers(-1000, 1000).map(lambda i: i + 0.5))
    if type_name == "boolean":
        return st.sampled_from([0, 1, "true", "false", "True", "FALSE"])
    if type_name == "string":
        return st.one_of(st.integers(-1000, 1000), st.booleans(), st.floats(-10, 10,
                                                                           allow_nan=False))
    return None


NULL_REJECTED = ("double", "float", "long", "integer", "boolean", "binary", "datetime", "array",
                 "object", "map")


def _wrong_param_values(param: Any) -> Optional[st.SearchStrategy]:
    if param.is_list:
        return _scalar(param.type) if param.type in _PARAM_TYPES else None
    if param.type in ("double", "float", "long", "integer"):
        return st.one_of(st.booleans(), _NOT_NUMBERS, _LISTS, _DICTS)
    if param.type == "boolean":
        return st.one_of(st.integers(0, 9), _NOT_NUMBERS, _LISTS)
    if param.type in ("string", "datetime", "binary"):
        return st.one_of(st.integers(0, 9), st.booleans(), _LISTS, _DICTS)
    return None


def _coerced_param_values(param: Any) -> Optional[st.SearchStrategy]:
    if param.is_list:
        return None
    if param.type in ("double", "float"):
        return st.integers(-1000, 1000).map(str)
    if param.type in INT_RANGE:
        return st.one_of(st.integers(-1000, 1000).map(str),
                         st.integers(-1000, 1000).map(lambda i: i + 0.5))
    return None


Mutation = Callable[[Callable, Dict[str, Any]], InvalidPayload]


def invalid_payloads(signature: Any, validation: str = "compatible",
                     rows: Union[int, st.SearchStrategy] = st.integers(2, 6)) -> st.SearchStrategy:
    """Azure request bodies the given ``validation`` mode must answer with 400.

    Each is a valid body with one fault: a missing required column or tensor, a value of the
    wrong kind, a null in a required non-string column, a wrong shape or ragged rows, named
    tensors with different row counts, a param of the wrong kind; in strict mode also each
    coercion compatible mode would make. The body's ``culprit`` names what the message must name.
    """
    if validation not in ("compatible", "strict"):
        raise ValueError("validation must be compatible or strict")
    sig = _view(signature)
    strict = validation == "strict"
    if sig.kind == "columns":
        mutations = _column_mutations(sig, _specs(signature), strict)
    else:
        mutations = _tensor_mutations(sig, strict)
    mutations += _param_mutations(sig, strict)
    if not mutations:
        raise ValueError("nothing in this signature can be made invalid for {} mode".format(
            validation))
    valid = payloads(signature, rows=rows, params=False)

    @st.composite
    def invalid(draw: Callable) -> InvalidPayload:
        body = draw(valid)
        mutate = draw(st.sampled_from(mutations))
        return mutate(draw, body)
    return invalid()


def _column_mutations(sig: Signature, specs: Dict[str, Any], strict: bool) -> List[Mutation]:
    out: List[Mutation] = []
    types = {c.name: c.type for c in sig.columns}
    required = {c.name for c in sig.columns if c.required}

    def present(body: Dict[str, Any]) -> List[str]:
        return body["input_data"]["columns"]

    def drop_required(draw: Callable, body: Dict[str, Any]) -> InvalidPayload:
        data = body["input_data"]
        name = draw(st.sampled_from(sorted(required)))
        i = data["columns"].index(name)
        data = dict(data, columns=data["columns"][:i] + data["columns"][i + 1:],
                    data=[row[:i] + row[i + 1:] for row in data["data"]])
        return InvalidPayload(dict(body, input_data=data), "column '{}'".format(name),
                              "a required column is missing")

    def replace(draw: Callable, body: Dict[str, Any], name: str, values: st.SearchStrategy,
                reason: str) -> InvalidPayload:
        data = body["input_data"]
        i = data["columns"].index(name)
        rows = [list(row) for row in data["data"]]
        for r in draw(st.sets(st.integers(0, len(rows) - 1), min_size=1)):
            rows[r][i] = draw(values)
        return InvalidPayload(dict(body, input_data=dict(data, data=rows)),
                              "column '{}'".format(name), reason)

    def wrong_kind(draw: Callable, body: Dict[str, Any]) -> InvalidPayload:
        names = [n for n in present(body) if _wrong_column_values(types[n]) is not None]
        name = draw(st.sampled_from(names))
        return replace(draw, body, name, _wrong_column_values(types[name]),
                       "a value of the wrong kind")

    def null_in_required(draw: Callable, body: Dict[str, Any]) -> InvalidPayload:
        names = [n for n in present(body) if n in required and (
            types[n] in NULL_REJECTED or (strict and types[n] == "string"))]
        name = draw(st.sampled_from(names))
        return replace(draw, body, name, st.none(), "null in a required column")

    def coerced(draw: Callable, body: Dict[str, Any]) -> InvalidPayload:
        names = [n for n in present(body) if _coerced_column_values(types[n]) is not None]
        name = draw(st.sampled_from(names))
        return replace(draw, body, name, _coerced_column_values(types[name]),
                       "a value compatible mode coerces")

    if required:
        out.append(drop_required)
    if any(_wrong_column_values(t) is not None for t in types.values()):
        out.append(_when(wrong_kind, lambda b: any(
            _wrong_column_values(types[n]) is not None for n in present(b))))
    if any(types[n] in NULL_REJECTED or (strict and types[n] == "string") for n in required):
        out.append(null_in_required)  # required columns are always present
    if strict and any(_coerced_column_values(t) is not None for t in types.values()):
        out.append(_when(coerced, lambda b: any(
            _coerced_column_values(types[n]) is not None for n in present(b))))
    return out


def _when(mutation: Mutation, applies: Callable[[Dict[str, Any]], bool]) -> Mutation:
    """A mutation that only some valid bodies allow (e.g. an optional column is absent)."""
    def guarded(draw: Callable, body: Dict[str, Any]) -> InvalidPayload:
        from hypothesis import assume

        assume(applies(body))
        return mutation(draw, body)
    guarded.__name__ = mutation.__name__
    return guarded


def _tensor_mutations(sig: Signature, strict: bool) -> List[Mutation]:
    named = sig.kind == "named"
    specs = {t.name: t for t in sig.tensors}

    def where(body: Dict[str, Any], draw: Callable):
        """(the tensor's spec, its data, a setter, its culprit) for one tensor of the body."""
        if not named:
            return (sig.tensors[0], body["input_data"],
                    lambda value: dict(body, input_data=value), "input_data")
        name = draw(st.sampled_from(sorted(specs)))
        return (specs[name], body["input_data"][name],
                lambda value: dict(body, input_data=dict(body["input_data"], **{name: value})),
                "tensor '{}'".format(name))

    def wrong_shape(draw: Callable, body: Dict[str, Any]) -> InvalidPayload:
        spec, value, put, culprit = where(body, draw)
        fixed = [i for i, d in enumerate(spec.shape) if d != -1]
        choices = ["deeper"] + (["shallower"] if len(spec.shape) >= 2 else []) + (
            ["resize"] if fixed else [])
        how = draw(st.sampled_from(choices))
        if how == "deeper":
            value = _map_leaves(value, lambda v: [v])
        elif how == "shallower":
            value = _map_depth(value, len(spec.shape) - 2, lambda row: row[0])
        else:
            axis = draw(st.sampled_from(fixed))
            grow = spec.shape[axis] == 0 or draw(st.booleans())
            value = _map_depth(value, axis - 1, lambda row: _resize(row, grow)) if axis else \
                _resize(value, grow)
        return InvalidPayload(put(value), culprit, "a wrong shape")

    def wrong_kind(draw: Callable, body: Dict[str, Any]) -> InvalidPayload:
        spec, value, put, culprit = where(body, draw)
        kind = spec.dtype.kind
        if kind in "iuf":
            bad = st.one_of(st.none(), st.booleans(), _NOT_NUMBERS, _DICTS)
        elif kind == "b":
            bad = st.one_of(st.none(), st.integers(2, 9), _NOT_NUMBERS)
        else:
            bad = st.none()
        return InvalidPayload(put(_replace_leaf(value, draw(bad), draw)), culprit,
                              "a value of the wrong kind")

    def drop_tensor(draw: Callable, body: Dict[str, Any]) -> InvalidPayload:
        name = draw(st.sampled_from(sorted(specs)))
        data = {k: v for k, v in body["input_data"].items() if k != name}
        return InvalidPayload(dict(body, input_data=data), "tensor '{}'".format(name),
                              "a tensor is missing")

    def row_counts(draw: Callable, body: Dict[str, Any]) -> InvalidPayload:
        batched = sorted(t.name for t in sig.tensors if t.shape and t.shape[0] == -1)
        name = draw(st.sampled_from(batched))
        n = len(body["input_data"][name])
        others = st.just(1) if strict else st.integers(2, 8).filter(lambda m: m != n)
        m = draw(others)
        value = draw(_tensor(specs[name], m))
        culprit = "tensor '{}'".format(name) if strict else "'{}'".format(name)
        return InvalidPayload(dict(body, input_data=dict(body["input_data"], **{name: value})),
                              culprit, "named tensors with different row counts")

    def coerced(draw: Callable, body: Dict[str, Any]) -> InvalidPayload:
        candidates = [t for t in sig.tensors if t.dtype.kind in "iuf"]
        spec = draw(st.sampled_from(candidates))
        if named:
            value, culprit = body["input_data"][spec.name], "tensor '{}'".format(spec.name)
        else:
            value, culprit = body["input_data"], "input_data"
        bad = st.integers(-1000, 1000).map(lambda i: i + 0.5) if spec.dtype.kind in "iu" \
            else st.integers(-1000, 1000).map(str)
        value = _replace_leaf(value, draw(bad), draw)
        data = dict(body["input_data"], **{spec.name: value}) if named else value
        return InvalidPayload(dict(body, input_data=data), culprit,
                              "a value compatible mode coerces")

    out: List[Mutation] = [wrong_shape, wrong_kind]
    if named:
        out.append(drop_tensor)
        batched = [t for t in sig.tensors if t.shape and t.shape[0] == -1]
        if len(batched) >= 2:
            out.append(_when(row_counts, lambda b: not strict or all(
                len(b["input_data"][t.name]) > 1 for t in batched)))
    if strict and any(t.dtype.kind in "iuf" for t in sig.tensors):
        out.append(coerced)
    return out


def _param_mutations(sig: Signature, strict: bool) -> List[Mutation]:
    if sig.params is None:
        if not strict:
            return []

        def params_without_schema(draw: Callable, body: Dict[str, Any]) -> InvalidPayload:
            return InvalidPayload(dict(body, params={"not_a_param": 1}), "params",
                                  "params for a model without a params schema")
        return [params_without_schema]
    wrong = {p.name: _wrong_param_values(p) for p in sig.params}
    wrong = {k: v for k, v in wrong.items() if v is not None}
    coerced = {p.name: _coerced_param_values(p) for p in sig.params} if strict else {}
    coerced = {k: v for k, v in coerced.items() if v is not None}
    out: List[Mutation] = []

    def param(values: Dict[str, st.SearchStrategy], reason: str) -> Mutation:
        def mutate(draw: Callable, body: Dict[str, Any]) -> InvalidPayload:
            name = draw(st.sampled_from(sorted(values)))
            return InvalidPayload(dict(body, params={name: draw(values[name])}),
                                  "param '{}'".format(name), reason)
        return mutate

    if wrong:
        out.append(param(wrong, "a param of the wrong kind"))
    if coerced:
        out.append(param(coerced, "a param value compatible mode coerces"))
    if strict:
        known = {p.name for p in sig.params}
        name = next(n for n in ("not_a_param", "not_a_param_2") if n not in known)
        out.append(param({name: st.integers(0, 9)}, "a param not in the params schema"))
    return out


# ---- nested list surgery ----------------------------------------------------------------

def _map_leaves(value: Any, change: Callable[[Any], Any]) -> Any:
    if isinstance(value, list):
        return [_map_leaves(v, change) for v in value]
    return change(value)


def _map_depth(value: Any, depth: int, change: Callable[[list], Any]) -> Any:
    """Apply ``change`` to every list ``depth`` levels below the top (0: the top's items)."""
    if depth <= 0:
        return [change(v) for v in value]
    return [_map_depth(v, depth - 1, change) for v in value]


def _resize(row: list, grow: bool) -> list:
    return row + row[:1] if grow and row else (row[:-1] if row else [0])


def _replace_leaf(value: Any, new: Any, draw: Callable) -> Any:
    """A copy of a nested list with one scalar replaced."""
    if not isinstance(value, list) or not value:
        return new
    i = draw(st.integers(0, len(value) - 1))
    copy = list(value)
    copy[i] = _replace_leaf(value[i], new, draw) if isinstance(value[i], list) else new
    return copy
