"""Request bytes -> ParsedInput, and predictions -> response bytes.

Only the envelope is checked here (content type, JSON, `input_data`, `params`); the signature is
schema.py's job. Azure's wording is kept for every envelope error, so a message
matches what the cloud says.
"""
import base64
import datetime
import json
import math
import re
import sys
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import pandas as pd

from .errors import PayloadError, UnsupportedMediaType
from .forms import JSON_TYPES, form_of, is_json

try:  # a fast JSON library when the model env has one (a 1000-row request costs 40% more CPU
# without it); never required: model envs may lack a wheel for it
    import orjson
except ImportError:  # pragma: no cover - exercised on the old stack
    orjson = None


@dataclass
class ParsedInput:
    """The caller's input before the signature is applied.

    `form` says how the data arrived: "split", "records", "tensor" (a nested list), "named" (a
    dict of lists), "frame" (already a DataFrame: CSV or batch files).
    `may_have_bools` is False only when the JSON text has no true/false at all (``has_bools``),
    which lets schema.py take numpy's vectorised path without checking each value for booleans.
    `envelope` is "mlflow" for /invocations, whose own forms (records, a split dict without
    'index') MLflow's server accepts where Azure's fails; "azure" for everything else.
    """

    data: Any
    form: str
    params: Optional[Dict[str, Any]] = None
    may_have_bools: bool = True
    envelope: str = "azure"


#: how deeply arrays and objects may nest in a request body: numpy holds at most 64 dimensions
#: (32 before numpy 2) and the envelope adds two levels, so no real tensor comes near it
MAX_DEPTH = 100
# the bytes the depth scan keeps, and what each does to the depth
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_DEPTH_STEP = np.zeros(256, dtype=np.int64)
_DEPTH_STEP[list(b"[{")] = 1
_DEPTH_STEP[list(b"]}")] = -1
_SCAN_BLOCK = 1 << 20
#: the bytes of numbers and of the separators between values: none is a bracket, a quote, a
#: backslash, a byte that follows a backslash in a JSON escape, or a letter of true or false
_NUMBER_BYTES = b"0123456789.-+,: \t\r\n"


class Undecodable(ValueError):
    """JSON text refused before (or instead of) decoding; its text is the reason shown."""


class TooDeep(Undecodable):
    """The text nests arrays or objects deeper than MAX_DEPTH."""


class LoneSurrogate(Undecodable):
    """The text has a \\u escape of half a UTF-16 surrogate pair."""


# \\u escapes of UTF-16 surrogates, and of a whole pair (high then low: one character)
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE_PAIR = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def has_lone_surrogate(raw: bytes) -> bool:
    """Whether JSON text escapes half a surrogate pair (``"\\ud800"``): no character, though
    Python's decoder makes a str of it, and every step that encodes that str later (pandas'
    strings, the response) fails. Two regex passes over the text: ``decode`` makes them only
    where the text's skeleton has a \\u."""
    # an escaped backslash starts no escape: pair up each run of backslashes from its start, as
    # a JSON decoder reads it
    raw = raw.replace(b"\\\\", b"")
    return _SURROGATE.search(_SURROGATE_PAIR.sub(b"", raw)) is not None


def nests_deeper_than(raw: bytes, limit: int) -> bool:
    """Whether JSON text nests arrays or objects more than ``limit`` levels, counted on the bytes
    before anything parses it.

    Both decoders recurse once a level: the standard library's raises RecursionError at the
    interpreter's recursion limit (a 2 KB body reaches it), and orjson takes 1024 levels, enough
    to break every recursive step after it (the signature's checks, numpy, rendering). Catching
    RecursionError would leave those; a second parse would cost as much as the first. This is
    C-speed passes instead (drop escaped backslashes and quotes, keep only brackets and quotes)
    and running sums over what is left (inside a string or not, then the depth), a block at a
    time so memory stays small. On text that is not JSON the count may be off past the first
    error, where the decoder stops anyway.
    """
    if b"\\" in raw:
        # an escaped backslash, then an escaped quote, end no string: replace() pairs a run of
        # backslashes from its start, as a JSON decoder reads it
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = raw.translate(None, _NOT_STRUCTURE)
    if len(kept) <= limit:
        return False
    depth, quotes = 0, 0
    for start in range(0, len(kept), _SCAN_BLOCK):
        block = np.frombuffer(kept, np.uint8, min(_SCAN_BLOCK, len(kept) - start), start)
        is_quote = block == ord('"')
        in_string = (quotes + np.cumsum(is_quote)) & 1  # a quote itself steps by 0
        levels = depth + np.cumsum(np.where(in_string, 0, _DEPTH_STEP[block]))
        if levels.max() > limit:
            return True
        depth, quotes = int(levels[-1]), quotes + int(is_quote.sum())
    return False


def skeleton(text: bytes) -> bytes:
    """JSON text without its numbers and separators, for the scans that precede and follow the
    parse: a numeric payload's is a hundredth of its size, so they read that instead of the
    text (one C pass instead of one per scan: a fifth of a millisecond on a 1000-row body).

    Every scan gives the same answer on it: the bytes dropped are none of what the scans look
    for, and none is the byte after a backslash in a JSON escape, so escapes, strings and
    brackets stay as they were. Dropping bytes can join two pieces into a ``true`` that was not
    there: that only sends the payload down the path that checks each value."""
    return text.translate(None, _NUMBER_BYTES)


def has_bools(text: bytes) -> bool:
    """Whether JSON text (or its skeleton) may hold true or false (``ParsedInput``)."""
    return b"true" in text or b"false" in text


def loads(raw: Any) -> Any:
    """Parse JSON text (bytes or str); ValueError for text that is not JSON, nests deeper than
    MAX_DEPTH or escapes a lone surrogate. Python's own parser is the fallback because it
    accepts NaN/Infinity as Azure does."""
    return decode(raw)[0]


def decode(raw: Any) -> Tuple[Any, bytes]:
    """``loads``, and the text's skeleton for the checks after the parse."""
    scanned = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    bare = skeleton(scanned)
    if nests_deeper_than(bare, MAX_DEPTH):
        raise TooDeep("it nests arrays or objects deeper than {} levels".format(MAX_DEPTH))
    if b"\\u" in bare and has_lone_surrogate(scanned):  # the regex needs the hex digits
        raise LoneSurrogate("it has a \\u escape of a lone UTF-16 surrogate, which is no "
                            "character")
    if orjson is not None:
        try:
            return orjson.loads(raw), bare
        except orjson.JSONDecodeError:
            pass
    text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
    return json.loads(text), bare


def _decode_body(raw: bytes) -> Tuple[Dict[str, Any], bytes]:
    """The body, a JSON dictionary as both envelopes require, and its skeleton; or the
    envelope's error."""
    if not raw or not raw.strip():
        raise PayloadError("POST body is empty. Expecting a JSON dictionary.")
    try:
        body, bare = decode(raw)
    except ValueError as exc:  # a JSONDecodeError, a UnicodeDecodeError or Undecodable
        # the decoder's text gives a position, never the content
        if isinstance(exc, json.JSONDecodeError):
            reason = exc.msg
        elif isinstance(exc, Undecodable):
            reason = str(exc)
        elif isinstance(exc, UnicodeDecodeError) or not hasattr(sys, "get_int_max_str_digits"):
            reason = "not valid UTF-8 JSON"
        else:  # Python refuses to read an integer of more digits than its limit
            reason = "it has an integer of more than {} digits".format(
                sys.get_int_max_str_digits())
        raise PayloadError("POST body could not be decoded as JSON: " + reason) from None
    if not isinstance(body, dict):
        raise PayloadError("POST body should be a JSON dictionary.")
    return body, bare


def _params(body: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    params = body.get("params")
    if params is None:
        return None
    if not isinstance(params, dict):
        raise PayloadError("'params' must be a JSON object mapping param names to values.")
    return params or None


def json_object(raw: bytes, content_type: Optional[str]) -> Dict[str, Any]:
    """A body Azure requires to be a JSON dictionary (its /score, a script's @input_schema run)."""
    return _json_object(raw, content_type)[0]


def _json_object(raw: bytes, content_type: Optional[str]) -> Tuple[Dict[str, Any], bytes]:
    if not is_json(content_type):
        raise UnsupportedMediaType("Expects Content-Type to be application/json")
    return _decode_body(raw)


def parse_azure(raw: bytes, content_type: Optional[str]) -> ParsedInput:
    """Parse an Azure ML online endpoint body: {"input_data": ..., "params": ...}."""
    return from_azure_body(*_json_object(raw, content_type))


def from_azure_body(body: Dict[str, Any], text: Optional[bytes] = None) -> ParsedInput:
    """An Azure body already decoded; ``text``, its JSON text or that text's skeleton, lets the
    numeric fast path skip the boolean check when it has no true/false."""
    if body.get("input_data") is None:
        raise PayloadError("A value is not provided for the 'input_data' parameter.")
    data = body["input_data"]
    bools = text is None or has_bools(text)
    return ParsedInput(data, form_of(data), _params(body), bools)


def to_azure_input(value: Any) -> Any:
    """A client's input as Azure's ``input_data`` (the inverse of ``from_azure_body``'s forms): a
    DataFrame in the split orientation with its index (Azure's documented form; missing values
    as null), a numpy array or Series as a nested list (a tensor), a dict as named tensors;
    anything else as it is. The result still holds numpy scalars and timestamps, which
    ``dumps`` writes as Azure clients send them."""
    if isinstance(value, pd.DataFrame):
        split = value.to_dict(orient="split")
        split["data"] = [[None if _missing(v) else v for v in row] for row in split["data"]]
        return split
    if isinstance(value, (np.ndarray, pd.Series)):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): to_azure_input(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return list(value)
    return value


def _missing(value: Any) -> bool:
    """NaN, None, NaT and pd.NA: not a list, dict or array cell, whose truth pd.isna spreads."""
    return not isinstance(value, (list, dict, np.ndarray)) and bool(pd.isna(value))


def to_azure_body(inputs: Any, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A whole Azure request body: a dict holding ``input_data`` is taken as one already;
    ``params`` (when given) replace its top-level params."""
    if isinstance(inputs, dict) and "input_data" in inputs:
        body = dict(inputs)
    else:
        body = {"input_data": to_azure_input(inputs)}
    if params:
        body["params"] = dict(params)
    return body


def parse_azure_query(input_data: str) -> ParsedInput:
    """GET /score?input_data=<URL-encoded JSON>: the same input, carried in the query string."""
    raw = input_data.encode("utf-8")
    return parse_azure(b'{"input_data": ' + raw + b"}", "application/json")


MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def parse_mlflow(raw: bytes, content_type: Optional[str]) -> ParsedInput:
    """Parse MLflow's /invocations body, so MLflow clients work unchanged."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == "text/csv":
        import io

        try:
            frame = pd.read_csv(io.BytesIO(raw))
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
            raise PayloadError("The CSV body could not be parsed.") from None
        return ParsedInput(frame, "frame", envelope="mlflow")
    if kind not in JSON_TYPES:
        raise UnsupportedMediaType(
            "Content type must be one of application/json or text/csv for /invocations.")
    body, bare = _decode_body(raw)
    keys = [k for k in MLFLOW_KEYS if k in body]
    if len(keys) != 1:
        raise PayloadError("The body must have exactly one of the keys 'dataframe_split', "
                           "'dataframe_records', 'instances' or 'inputs'.")
    data = body[keys[0]]
    if keys[0] == "dataframe_split":
        if not isinstance(data, dict):
            raise PayloadError("'dataframe_split' must be an object with 'columns' and 'data'.")
        form = "split"
    elif keys[0] == "dataframe_records":
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise PayloadError("'dataframe_records' must be a list of objects.")
        form = "records"
    else:
        form = "named" if isinstance(data, dict) else "tensor"
    return ParsedInput(data, form, _params(body), has_bools(bare), envelope="mlflow")


# ---- output -------------------------------------------------------------------------------

def to_jsonable(predictions: Any) -> Any:
    """What Azure returns for each prediction type, made JSON-safe: NaN and infinities as
    null (Azure writes invalid JSON), dicts of arrays, numpy scalars and timestamps serialised."""
    if isinstance(predictions, pd.DataFrame):
        return predictions.to_dict(orient="records")
    if isinstance(predictions, pd.Series):
        return predictions.tolist()
    if isinstance(predictions, np.ndarray):
        return predictions if orjson is not None and predictions.dtype.kind in "biuf" \
            else predictions.tolist()
    if isinstance(predictions, dict):
        return {str(k): to_jsonable(v) for k, v in predictions.items()}
    if isinstance(predictions, (list, tuple)):
        return [to_jsonable(v) for v in predictions]
    return predictions


def json_default(value: Any) -> Any:
    """Values plain JSON cannot carry: numpy scalars and arrays, timestamps, bytes, NaT."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (pd.Timestamp, datetime.datetime, datetime.date)):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, (pd.Series, pd.DataFrame)):
        return to_jsonable(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise NotSerialisable(value)


class NotSerialisable(TypeError):
    """A value no JSON encoding is known for; ``type_name`` is its type's (ours to show: the
    type, never the value)."""

    def __init__(self, value: Any):
        self.type_name = type(value).__name__
        super().__init__("cannot serialise a value of type " + self.type_name)


def unserialisable_type(exc: BaseException) -> Optional[str]:
    """The type json_default could not encode, found where an encoder left it: raised as is
    (the standard library) or as the cause of its own error (orjson), and again through
    dumps' second attempt."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, NotSerialisable):
            return exc.type_name
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _finite(value: Any) -> Any:
    """NaN and infinities become null: Azure writes them as invalid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


if orjson is not None:
    _ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

    def dumps(value: Any) -> bytes:
        """orjson writes NaN/inf as null already; numpy arrays of numbers go through natively."""
        try:
            return orjson.dumps(value, default=json_default, option=_ORJSON_OPTIONS)
        except TypeError:
            # e.g. non-contiguous or object arrays orjson rejects: take the generic route
            return orjson.dumps(_finite(plain(value)), default=json_default,
                                option=orjson.OPT_NON_STR_KEYS)
else:  # pragma: no cover - exercised on the old stack
    def dumps(value: Any) -> bytes:
        return json.dumps(_finite(plain(value)), default=json_default, allow_nan=False).encode()


def plain(value: Any) -> Any:
    """numpy values as Python's (arrays as lists), for encoders that take only those."""
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def render_azure(predictions: Any) -> bytes:
    """Azure's body: a str is returned as is (JSON-encoded), anything else as JSON."""
    return dumps(to_jsonable(predictions))


def render_mlflow(predictions: Any) -> bytes:
    """MLflow's /invocations body: {"predictions": ...}."""
    return dumps({"predictions": to_jsonable(predictions)})
