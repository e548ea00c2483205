"""Requests drawn by hypothesis for a live scoring server, and the rules its answers must keep.

Shared by the suite's bounded run (tests/scoring/test_fuzz.py) and `make bench-fuzz`
(bench/fuzz.py, 10^5 requests), so both fuzz with the same generators and judge alike.

A ``Probe`` is one whole HTTP/1.1 request, sent as bytes on a socket of its own (no client library
between it and the server: header names, values and bodies go out exactly as drawn). What is
drawn: bodies the model's signature accepts (the project's ``payloads``) and ones it must reject
(``invalid_payloads``); valid bodies with one node replaced, removed or wrapped at any depth;
arbitrary JSON; nesting around the server's depth cap and far beyond; bodies near and over the
size limit; bytes that are not UTF-8 or not JSON; odd Content-Types and Content-Encodings; request
id headers of any length and odd bytes; query strings on GET /score; other methods and paths; the
chunked transfer encoding, other transfer codings, Expect and odd Content-Lengths; MLflow's
/invocations bodies and CSV.

The judge's rules (``judge``): never a 5xx, a hang (no whole answer within the timeout) or a
crash (no answer at all); a 4xx carries a JSON object with a non-empty "message"; a 200 from a
scoring route is JSON; every answer carries the request ids; and where a probe knows better, its
own expectation (a valid payload scores 200, an invalid one is a 400 naming its culprit, an id
over 100 characters is a 431, an encoded body a 415).
"""
import copy
import json
import select
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from hypothesis import strategies as st

from mlflow_deploy.scoring import payload
from mlflow_deploy.testing.strategies import invalid_payloads, payloads

#: the answer every request must get within this many seconds (the servers' scoring timeout is
#: 5 s: past it the server answers 504 itself, which the judge counts as a 5xx)
TIMEOUT_S = 15.0
ID_HEADERS = (b"x-request-id", b"x-ms-request-id", b"x-ms-client-request-id")
MAX_ID = 100  # Azure's limit on the ids it echoes
#: gunicorn's default limit on the request line: a GET longer than this cannot score
MAX_REQUEST_LINE = 4094
SCORING_PATHS = ("/score", "/invocations")


@dataclass(frozen=True)
class Probe:
    """One request. ``expect`` is "200", "400", "413", "415", "431" or "" (only the general
    rules); ``culprit`` is what a 400's message must name; ``kind`` says which generator drew
    it (the bench's figures are kept per kind)."""

    kind: str
    method: bytes = b"POST"
    target: bytes = b"/score"
    headers: Tuple[Tuple[bytes, bytes], ...] = ((b"Content-Type", b"application/json"),)
    body: Optional[bytes] = None
    chunked: bool = False
    length: Optional[bytes] = None  # a Content-Length sent in place of the body's own
    expect: str = ""
    culprit: str = ""

    @property
    def path(self) -> bytes:
        return self.target.split(b"?", 1)[0]

    def request(self, tag: str = "") -> bytes:
        """The request's bytes. ``tag`` becomes its x-request-id when it sets none itself, so an
        answer can be found in the server's log."""
        lines = [self.method + b" " + self.target + b" HTTP/1.1", b"Host: 127.0.0.1"]
        names = {name.lower() for name, _ in self.headers}
        if tag and not names & set(ID_HEADERS):
            lines.append(b"x-request-id: " + tag.encode())
        lines += [name + b": " + value for name, value in self.headers]
        body = self.body or b""
        if self.chunked:
            lines.append(b"Transfer-Encoding: chunked")
            pieces = [body[i:i + 4096] for i in range(0, len(body), 4096)]
            body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        elif self.length is not None:
            lines.append(b"Content-Length: " + self.length)
        elif self.body is not None:
            lines.append(b"Content-Length: " + str(len(body)).encode())
        lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    def summary(self, limit: int = 300) -> str:
        shown = self.request()
        text = shown[:limit].decode("latin-1").encode("unicode_escape").decode("ascii")
        more = " ... ({} bytes)".format(len(shown)) if len(shown) > limit else ""
        return "[{}] {}{}".format(self.kind, text, more)


@dataclass
class Answer:
    """What came back: a status, headers (lower-cased names) and body; or ``error`` is "timeout"
    (no whole answer in time), "refused", "no answer" (closed or reset before a status line) or
    "cut" (the body is shorter than its Content-Length)."""

    status: int = 0
    headers: Dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""
    seconds: float = 0.0


def exchange(address: Tuple[str, int], raw: bytes, timeout: float = TIMEOUT_S) -> Answer:
    """Send ``raw`` and read the answer until the server closes the connection (a scoring
    server's sync workers close each one). Reading goes on while sending: a server that answers
    early (413 from the Content-Length alone) and closes must not lose its answer to the reset
    the rest of the body then draws."""
    started = time.monotonic()
    deadline = started + timeout
    try:
        sock = socket.create_connection(address, timeout=timeout)
    except ConnectionRefusedError:
        return Answer(error="refused", seconds=time.monotonic() - started)
    except socket.timeout:
        return Answer(error="timeout", seconds=time.monotonic() - started)
    received = bytearray()
    sent = 0
    writing = True
    with sock:
        sock.setblocking(False)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Answer(error="timeout", body=bytes(received), seconds=timeout)
            want_write = writing and sent < len(raw)
            readable, writable, _ = select.select([sock], [sock] if want_write else [], [],
                                                  remaining)
            if writable:
                try:
                    sent += sock.send(raw[sent:sent + 65536])
                except (BrokenPipeError, ConnectionResetError):
                    writing = False
                except BlockingIOError:
                    pass
            if readable:
                try:
                    piece = sock.recv(65536)
                except (ConnectionResetError, BrokenPipeError):
                    break
                except BlockingIOError:
                    continue
                if not piece:
                    break
                received += piece
    answer = _parse(bytes(received))
    answer.seconds = time.monotonic() - started
    return answer


def _parse(raw: bytes) -> Answer:
    while raw.startswith(b"HTTP/1.1 1"):  # an interim answer (100 Continue): the real one follows
        raw = raw.partition(b"\r\n\r\n")[2]
    head, found, body = raw.partition(b"\r\n\r\n")
    if not found:
        return Answer(error="no answer", body=raw)
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return Answer(error="no answer", body=raw)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get(b"content-length")
    if length is not None and length.isdigit() and len(body) < int(length):
        return Answer(int(parts[1]), headers, body, error="cut")
    return Answer(int(parts[1]), headers, body)


# ---- the judge ----------------------------------------------------------------------------

#: the figures a run reports, in this order; the first three are the target (0 of each)
FAILURES = ("5xx", "hang", "crash")
VIOLATIONS = ("cut answer", "4xx without a JSON message", "200 not JSON", "no request ids",
              "unexpected status")


def judge(probe: Probe, answer: Answer) -> List[str]:
    """The rules this answer breaks (empty: none), each named as in FAILURES and VIOLATIONS,
    with a short reason after a colon."""
    if answer.error == "timeout":
        return ["hang: no whole answer in {:g} s".format(TIMEOUT_S)]
    if answer.error in ("refused", "no answer"):
        return ["crash: " + answer.error]
    if answer.error == "cut" and probe.method != b"HEAD":  # a HEAD's answer has no body
        return ["cut answer: the body is shorter than its Content-Length"]
    broken = []
    status = answer.status
    if status >= 500:
        broken.append("5xx: {} {}".format(status, _message(answer) or answer.body[:120]))
    if 400 <= status < 500 and probe.method != b"HEAD" and not _message(answer):
        broken.append("4xx without a JSON message: {} {}".format(status, answer.body[:120]))
    if status == 200 and probe.path in (b"/score", b"/invocations") and probe.method in (
            b"GET", b"POST"):
        try:
            json.loads(answer.body)
        except ValueError:
            broken.append("200 not JSON: " + repr(answer.body[:120]))
    if not all(answer.headers.get(name) for name in ID_HEADERS):
        broken.append("no request ids: {}".format(status))
    if probe.expect and str(status) != probe.expect:
        broken.append("unexpected status: {} where {} was due ({})".format(
            status, probe.expect, _message(answer) or answer.body[:120]))
    elif probe.expect == "400" and probe.culprit and probe.culprit not in _message(answer):
        broken.append("unexpected status: 400 not naming {} ({})".format(probe.culprit,
                                                                       _message(answer)))
    return broken


def _message(answer: Answer) -> str:
    try:
        body = json.loads(answer.body)
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else ""


def category(problem: str) -> str:
    return problem.split(":", 1)[0]


# ---- what is drawn ------------------------------------------------------------------------

JSON_TYPE = ((b"Content-Type", b"application/json"),)
JSON_LEAVES = (st.none() | st.booleans() | st.integers() | st.floats()
               | st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)
INPUT_KEYS = st.sampled_from(["input_data", "params", "columns", "index", "data", "inputs",
                              "instances", "dataframe_split", "dataframe_records"])
CONTENT_TYPES = [b"application/json", b"application/json; charset=utf-8", b"Application/JSON",
                 b"text/json", b"application/json; charset=latin-1", b"text/plain", b"text/csv",
                 b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x",
                 b"application/octet-stream", b"application/jsonx", b"json", b"", b";", b"*/*",
                 b"application/json;;;", b"application/\xff"]
ENCODINGS = [b"gzip", b"deflate", b"br", b"zstd", b"compress", b"identity", b"IDENTITY",
             b"gzip, identity", b"x-gzip", b"chunked", b"", b"*", b"\xe9"]
METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD", b"TRACE",
           b"FOO", b"get"]
PATHS = [b"/score", b"/invocations", b"/", b"/swagger.json", b"/version", b"/metrics", b"/ping",
         b"/health", b"/nope", b"//score", b"/score/", b"/SCORE", b"/score%00", b"/%ff",
         b"/score/../score", b"/swagger.json/", b"*"]


#: bodies the example model without a signature (the diabetes regression on a bare array)
#: scores: its probes start from these where the others' start from the signature's payloads
NO_SIGNATURE_SEEDS = (
    {"input_data": [[0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.01]]},
    {"input_data": [[0.01 * i for i in range(10)], [-0.01 * i for i in range(10)]]},
    {"input_data": {"columns": list("abcdefghij"), "index": [0], "data": [[0.1] * 10]}},
)


def dumps(body: Any) -> bytes:
    """A body as Azure's clients write it: Python's encoder (NaN and Infinity as bare words)."""
    return json.dumps(body).encode()


def _bytes(values: st.SearchStrategy) -> st.SearchStrategy:
    return values.map(lambda text: text.encode("utf-8"))


def probes(signature: Any, max_body: int, seeds: Sequence[Dict[str, Any]] = NO_SIGNATURE_SEEDS,
           rows: st.SearchStrategy = st.integers(1, 8)) -> st.SearchStrategy:
    """Every kind of probe for a model with MLflow ``signature`` and a server whose body limit
    is ``max_body`` bytes. Without a signature, ``seeds`` (bodies the model scores) stand in for
    the signature's payloads. ``rows``: of the payloads (large bodies repeat rows instead: a
    drawn value costs hypothesis far more than a repeated one)."""
    if signature is not None and getattr(signature, "inputs", None) is not None:
        valid = payloads(signature, rows=rows)
        invalid = invalid_payloads(signature, validation="compatible")
    else:
        valid, invalid = st.sampled_from(list(seeds)), None
    kinds = [
        valid.map(lambda body: Probe("valid", body=dumps(body), headers=JSON_TYPE,
                                     expect="200")),
        valid_get(valid),
        mutated(valid),
        random_json(),
        deep(),
        large(valid, max_body),
        not_json(valid),
        content_types(valid),
        encodings(valid),
        id_headers(valid),
        queries(valid),
        methods_and_paths(),
        chunked(valid, max_body),
        framing(valid),
        invocations(valid),
    ]
    if invalid is not None:
        kinds.insert(1, invalid.map(lambda bad: Probe(
            "invalid", body=dumps(dict(bad)), expect="400", culprit=bad.culprit)))
    return st.one_of(kinds)


def valid_get(valid: st.SearchStrategy) -> st.SearchStrategy:
    """GET /score?input_data=...: a valid input scores 200, or is a 414 when the request line
    is too long for it."""
    def probe(body: Dict[str, Any]) -> Probe:
        query = urllib.parse.urlencode({"input_data": json.dumps(body["input_data"])}).encode()
        target = b"/score?" + query
        line = len(target) + len(b"GET  HTTP/1.1")
        # no expectation within a few bytes of the limit: whether it counts the line's end
        expect = "200" if line < MAX_REQUEST_LINE - 4 else "414" if line > MAX_REQUEST_LINE + 4 \
            else ""
        return Probe("valid GET", b"GET", target, headers=(), expect=expect)
    return valid.map(probe)


def _nodes(value: Any, path: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
    """Every path into a decoded JSON value, the root's () included."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _nodes(item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value[:8]):
            found += _nodes(item, path + (i,))
    return found


def _replace(value: Any, path: Tuple[Any, ...], change: Callable[[Any], Any]) -> Any:
    """A copy of ``value`` with the node at ``path`` changed; a change that returns ``_GONE``
    removes the node."""
    if not path:
        return change(value)
    head, rest = path[0], path[1:]
    out = dict(value) if isinstance(value, dict) else list(value)
    new = _replace(value[head], rest, change)
    if new is _GONE:
        del out[head]
    else:
        out[head] = new
    return out


_GONE = object()


def mutated(valid: st.SearchStrategy) -> st.SearchStrategy:
    """A valid body with a wrong JSON type (or a removal, a list around it, an extra key) at one
    node of any depth."""
    @st.composite
    def draw_probe(draw: Callable) -> Probe:
        body = draw(valid)
        path = draw(st.sampled_from(_nodes(body)))
        how = draw(st.sampled_from(["replace", "remove", "wrap", "add key"]))
        if how == "replace":
            new = draw(JSON_VALUES)
            body = _replace(body, path, lambda _: new)
        elif how == "remove" and path:
            body = _replace(body, path, lambda _: _GONE)
        elif how == "wrap":
            body = _replace(body, path, lambda node: [node])
        else:
            key, extra = draw(INPUT_KEYS | st.text(max_size=6)), draw(JSON_VALUES)
            body = _replace(body, path, lambda node: dict(node, **{key: extra})
                            if isinstance(node, dict) else node)
        return Probe("mutated", body=dumps(body))
    return draw_probe()


def random_json() -> st.SearchStrategy:
    """Any JSON document, alone or as input_data or params."""
    @st.composite
    def draw_probe(draw: Callable) -> Probe:
        value = draw(JSON_VALUES)
        where = draw(st.sampled_from(["alone", "input_data", "params", "both"]))
        if where == "input_data":
            value = {"input_data": value}
        elif where == "params":
            value = {"input_data": [[1]], "params": value}
        elif where == "both":
            value = {"input_data": value, "params": draw(JSON_VALUES)}
        return Probe("random JSON", body=dumps(value))
    return draw_probe()


def deep() -> st.SearchStrategy:
    """Arrays and objects nested around the server's cap and far past it, closed or not, as the
    body, as input_data or in GET /score's query string."""
    @st.composite
    def draw_probe(draw: Callable) -> Probe:
        cap = payload.MAX_DEPTH
        depth = draw(st.integers(cap - 3, cap + 3) | st.integers(1, 5000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"),
                                               (b'[{"a":', b"}]"), (b'["\\"[",', b"]")]))
        inner = draw(st.sampled_from([b"1", b"[]", b"{}", b'"x"', b""]))
        closed = draw(st.booleans())
        text = opener * depth + inner + (closer * depth if closed else b"")
        if draw(st.booleans()):
            return Probe("deep GET", b"GET", b"/score?input_data=" + urllib.parse.quote(
                text).encode(), headers=())
        if draw(st.booleans()):
            text = b'{"input_data": ' + text + b"}"
        return Probe("deep", body=text)
    return draw_probe()


def large(valid: st.SearchStrategy, max_body: int) -> st.SearchStrategy:
    """Bodies near and past the limit: repeated rows, one long string, a number of thousands
    of digits, thousands of columns; past the limit the answer is a 413."""
    @st.composite
    def draw_probe(draw: Callable) -> Probe:
        size = draw(st.integers(max_body // 2, max_body + max_body // 4))
        how = draw(st.sampled_from(["rows", "string", "digits", "columns", "padding"]))
        if how == "rows":
            body = copy.deepcopy(draw(valid))
            data = body["input_data"]
            if isinstance(data, dict) and "data" in data:  # the split orientation
                data.pop("index", None)
                data["data"] = data["data"][:1] * max(1, size // len(dumps(data["data"][:1])))
            elif isinstance(data, dict):  # named tensors, each repeating its first row
                one = len(dumps({k: v[:1] for k, v in data.items()}))
                body["input_data"] = {k: v[:1] * max(1, size // one) for k, v in data.items()}
            else:
                body["input_data"] = data[:1] * max(1, size // len(dumps(data[:1])))
            raw = dumps(body)
        elif how == "string":
            raw = dumps({"input_data": [["x" * size]]})
        elif how == "digits":
            digits = draw(st.integers(300, 6000))
            raw = b'{"input_data": [[' + b"9" * digits + b"]]}"
        elif how == "columns":
            n = max(1, size // 12)
            raw = dumps({"input_data": {"columns": ["c{}".format(i) for i in range(n)],
                                        "data": [[0] * n]}})
        else:
            raw = dumps(draw(valid))
            raw = raw + b" " * max(0, size - len(raw))
        return Probe("large", body=raw, expect="413" if len(raw) > max_body else "")
    return draw_probe()


def not_json(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Bytes that are not UTF-8 JSON: random bytes, a valid body cut short or with a byte
    broken, a BOM, UTF-16, lone surrogate escapes, NaN where a number goes."""
    @st.composite
    def draw_probe(draw: Callable) -> Probe:
        how = draw(st.sampled_from(["bytes", "cut", "byte", "bom", "utf-16", "surrogate",
                                    "nul", "nan"]))
        raw = dumps(draw(valid))
        if how == "bytes":
            raw = draw(st.binary(max_size=200))
        elif how == "cut":
            raw = raw[:draw(st.integers(0, max(0, len(raw) - 1)))]
        elif how == "byte":
            i = draw(st.integers(0, len(raw) - 1))
            raw = raw[:i] + bytes([draw(st.integers(0x80, 0xff))]) + raw[i + 1:]
        elif how == "bom":
            raw = b"\xef\xbb\xbf" + raw
        elif how == "utf-16":
            raw = raw.decode().encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32"])))
        elif how == "surrogate":
            lone = draw(st.sampled_from([b"\\ud800", b"\\udfff", b"\\uDBFF", b"\\udc00\\ud800"]))
            raw = raw.replace(b'"', b'"' + lone, draw(st.integers(1, 40)))
        elif how == "nul":
            i = draw(st.integers(0, len(raw)))
            raw = raw[:i] + b"\x00" + raw[i:]
        else:
            raw = raw.replace(b"1", draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"])),
                              1)
        return Probe("not JSON", body=raw)
    return draw_probe()


def content_types(valid: st.SearchStrategy) -> st.SearchStrategy:
    @st.composite
    def draw_probe(draw: Callable) -> Probe:
        kind = draw(st.sampled_from(CONTENT_TYPES) | _bytes(st.text(max_size=30)))
        headers = () if draw(st.booleans()) and not kind else ((b"Content-Type", kind),)
        return Probe("content type", headers=headers, body=dumps(draw(valid)))
    return draw_probe()


def encodings(valid: st.SearchStrategy) -> st.SearchStrategy:
    """A Content-Encoding on a body sent plain: 415 unless it says identity."""
    @st.composite
    def draw_probe(draw: Callable) -> Probe:
        coding = draw(st.sampled_from(ENCODINGS) | _bytes(st.text(
            st.characters(min_codepoint=33, max_codepoint=126), max_size=12)))
        plain = coding.strip().lower() in (b"", b"identity")
        return Probe("content encoding", headers=JSON_TYPE + ((b"Content-Encoding", coding),),
                     body=dumps(draw(valid)), expect="" if plain else "415")
    return draw_probe()


#: request id lengths around Azure's limit and past gunicorn's for a header line (8190 bytes)
ID_LENGTHS = st.sampled_from([1, 36, MAX_ID - 1, MAX_ID, MAX_ID + 1, 250, 8200]) | st.integers(
    1, 300)


def id_headers(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Request ids of any length, of printable ASCII or other bytes, repeated: an ASCII id over
    100 characters is a 431."""
    @st.composite
    def draw_probe(draw: Callable) -> Probe:
        headers = list(JSON_TYPE)
        over = odd = False
        for _ in range(draw(st.integers(1, 3))):
            name = draw(st.sampled_from(ID_HEADERS + (b"X-Request-ID", b"x-ms-client-request-id")))
            ascii_only = draw(st.booleans())
            if ascii_only:
                # a drawn piece repeated to the drawn length: long text drawn a character at a
                # time would cost hypothesis a choice each, and it seldom draws it at all
                piece = draw(st.text(st.characters(min_codepoint=33, max_codepoint=126),
                                     min_size=1, max_size=8)).encode()
                length = draw(ID_LENGTHS)
                value = (piece * length)[:length]
                over = over or len(value) > MAX_ID
            else:
                value = draw(st.binary(min_size=1, max_size=150).filter(
                    lambda b: b"\r" not in b and b"\n" not in b))
                odd = True
            headers.append((name, value))
        return Probe("id headers", headers=tuple(headers), body=dumps(draw(valid)),
                     expect="431" if over and not odd else "")
    return draw_probe()


def queries(valid: st.SearchStrategy) -> st.SearchStrategy:
    """GET /score with a query string that is garbage, repeated, not UTF-8 or raw bytes; POST
    /score with one (ignored)."""
    @st.composite
    def draw_probe(draw: Callable) -> Probe:
        how = draw(st.sampled_from(["text", "json", "repeat", "bytes", "raw bytes", "post"]))
        if how == "text":
            query = urllib.parse.urlencode({draw(st.sampled_from(["input_data", "version", "x"])):
                                            draw(st.text(max_size=40))}).encode()
        elif how == "json":
            query = b"input_data=" + urllib.parse.quote(json.dumps(draw(JSON_VALUES))).encode()
        elif how == "repeat":
            body = draw(valid)
            one = urllib.parse.quote(json.dumps(body["input_data"])[:1500]).encode()
            query = b"input_data=" + one + b"&input_data=" + one
        elif how == "bytes":
            query = b"input_data=" + urllib.parse.quote(draw(st.binary(max_size=60))).encode()
        elif how == "raw bytes":
            query = draw(st.binary(max_size=60).filter(
                lambda b: not set(b) & set(b" \r\n#")))
        else:
            return Probe("query", target=b"/score?" + draw(st.binary(max_size=30).filter(
                lambda b: not set(b) & set(b" \r\n#"))), body=dumps(draw(valid)),
                expect="")
        return Probe("query", b"GET", b"/score?" + query, headers=())
    return draw_probe()


def methods_and_paths() -> st.SearchStrategy:
    @st.composite
    def draw_probe(draw: Callable) -> Probe:
        method = draw(st.sampled_from(METHODS))
        path = draw(st.sampled_from(PATHS))
        if draw(st.booleans()):
            path += b"?" + urllib.parse.quote(draw(st.text(max_size=20))).encode()
        body = draw(st.none() | st.just(b'{"input_data": [[1]]}'))
        return Probe("method and path", method, path, body=body)
    return draw_probe()


def chunked(valid: st.SearchStrategy, max_body: int) -> st.SearchStrategy:
    """Bodies sent in chunks: a valid one, one past the limit (413)."""
    @st.composite
    def draw_probe(draw: Callable) -> Probe:
        raw = dumps(draw(valid))
        over = draw(st.booleans())
        if over:
            raw += b" " * (max_body + 1 - len(raw))
        return Probe("chunked", body=raw, chunked=True,
                     expect="413" if len(raw) > max_body else "")
    return draw_probe()


TRANSFER_CODINGS = [b"gzip", b"deflate", b"compress", b"identity", b"x-zip", b"br", b"",
                    b"gzip, deflate", b"chunked, gzip", b"gzip, chunked", b"chunked, chunked",
                    b"Chunked", b"chunked;q=1", b"\tchunked"]
EXPECTATIONS = [b"100-continue", b"100-Continue", b"200-ok", b"", b"x, 100-continue"]
# Content-Lengths that are malformed or shorter than the body: never longer, since a server
# waits for the bytes promised, and a client that never sends them is a slow client (answered
# by the timeouts, not here)
LENGTHS = [b"+5", b"-1", b"1e3", b"0x10", b"5 5", b"", b"00", b"9" * 30]


def framing(valid: st.SearchStrategy) -> st.SearchStrategy:
    """A valid body under odd framing: a Transfer-Encoding beside its Content-Length (a 400: the
    body is not chunked), an Expect, a Content-Length that is malformed or too short (a 400: a
    cut JSON object is no JSON)."""
    @st.composite
    def draw_probe(draw: Callable) -> Probe:
        raw = dumps(draw(valid))
        how = draw(st.sampled_from(["transfer", "expect", "length", "short"]))
        if how == "transfer":
            return Probe("framing", headers=JSON_TYPE + (
                (b"Transfer-Encoding", draw(st.sampled_from(TRANSFER_CODINGS))),), body=raw,
                expect="400")
        if how == "expect":
            return Probe("framing", headers=JSON_TYPE + (
                (b"Expect", draw(st.sampled_from(EXPECTATIONS))),), body=raw)
        if how == "length":
            return Probe("framing", body=raw, length=draw(st.sampled_from(LENGTHS)))
        return Probe("framing", body=raw, expect="400",
                     length=str(draw(st.integers(0, len(raw) - 1))).encode())
    return draw_probe()


def invocations(valid: st.SearchStrategy) -> st.SearchStrategy:
    """MLflow's /invocations: each of its keys around a valid input, and CSV text."""
    @st.composite
    def draw_probe(draw: Callable) -> Probe:
        data = draw(valid)["input_data"]
        if draw(st.booleans()):
            csv = draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
            return Probe("invocations", target=b"/invocations",
                         headers=((b"Content-Type", b"text/csv"),), body=csv)
        key = draw(st.sampled_from(["dataframe_split", "dataframe_records", "inputs",
                                    "instances"]))
        return Probe("invocations", target=b"/invocations", body=dumps({key: data}))
    return draw_probe()
