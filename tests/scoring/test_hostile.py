"""Hostile requests, tried as an attacker would: each gets a precise 4xx (or, for a model output
that cannot be written, a 500 with the request id), never a bare 500, a truncated read or an
echo of the attacker's text, and every answer carries the request ids."""
import json
import os
import socket

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from mlflow_deploy import processes
from mlflow_deploy.scoring import payload, pipeline
from mlflow_deploy.scoring.app import create_app
from mlflow_deploy.scoring.config import ServerConfig
from mlflow_deploy.scoring.errors import PayloadError
from mlflow_deploy.scoring.scorer import Scorer
from tests.conftest import Server
from tests.connections import wait_until

JSON = "application/json"
ROW = {"columns": ["x"], "data": [[1.0]]}
ID_HEADERS = ("x-request-id", "x-ms-request-id", "x-ms-client-request-id")


def has_ids(response, rid=None):
    present = all(response.headers.get(name) for name in ID_HEADERS)
    return present and (rid is None or response.headers["x-request-id"] == rid)


def nested(depth: int) -> bytes:
    """A JSON list `depth` levels deep: two bytes a level."""
    return b"[" * depth + b"]" * depth


def decoders():
    """Every JSON decoder a model's env may give payload.loads: orjson (when installed here)
    and the standard library's, which model envs without an orjson wheel use."""
    found = ["stdlib"]
    if payload.orjson is not None:
        found.insert(0, "orjson")
    return found


@pytest.fixture(params=decoders())
def decoder(request, monkeypatch):
    if request.param == "stdlib":
        monkeypatch.setattr(payload, "orjson", None)
    return request.param


# ---- the core, without a server ---------------------------------------------------------------

@pytest.mark.parametrize("depth", [1000, 5000])
def test_deep_nesting_is_a_400_before_decoding(decoder, depth):
    body = b'{"input_data": ' + nested(depth) + b"}"
    with pytest.raises(PayloadError) as info:
        payload.parse_azure(body, JSON)
    assert info.value.message == ("POST body could not be decoded as JSON: it nests arrays or "
                                  "objects deeper than {} levels".format(payload.MAX_DEPTH))
    with pytest.raises(PayloadError):
        payload.parse_mlflow(b'{"inputs": ' + nested(depth) + b"}", JSON)
    with pytest.raises(PayloadError):
        payload.parse_azure_query(nested(depth).decode())


def test_the_depth_cap_counts_structure_not_strings(decoder):
    cap = payload.MAX_DEPTH
    assert payload.loads(nested(cap)) is not None  # exactly at the cap: decoded
    with pytest.raises(ValueError):
        payload.loads(nested(cap + 1))
    # brackets inside strings, escaped quotes and escaped backslashes are text, not nesting
    text = json.dumps(["[" * 300, '"[{' * 200, "\\" * 3 + '"' + "{" * 150, "}" * 400])
    assert payload.loads(text.encode())[3] == "}" * 400
    wrapped = nested(cap - 1).replace(b"[]", b"[" + text.encode() + b"]")
    assert payload.loads(wrapped) is not None
    # an escaped backslash ends its string: what follows is structure, and counted
    with pytest.raises(ValueError):
        payload.loads(b'["a\\\\", ' + nested(cap) + b"]")
    with pytest.raises(ValueError):  # not JSON at all: still the decoder's ValueError
        payload.loads(b'["' + b"[" * 300)


# strings full of what the skeleton keeps and drops, next to each other: escapes, digits, brackets
_TRICKY = st.text(alphabet='[]{}"\\u0123456789.-+,: \ntrufalsedD8\ud800\U0001f600', max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | _TRICKY,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TRICKY, inner, max_size=4),
    max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(value=_JSON, indent=st.sampled_from([None, 1]), ascii_only=st.booleans())
def test_the_skeleton_answers_every_scan_as_the_text_does(value, indent, ascii_only):
    """The scans read a payload's skeleton (its text without numbers and separators) instead of
    the text: on any JSON text they must say what they say on the text, and a text with true or
    false must keep it."""
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only).encode(
        "utf-8", "surrogatepass")
    bare = payload.skeleton(text)
    for limit in (0, 1, 2, 3, 5):
        assert payload.nests_deeper_than(bare, limit) == payload.nests_deeper_than(text, limit)
    if payload.has_lone_surrogate(text):
        assert b"\\u" in bare  # where decode looks before it runs the regex on the text
    if payload.has_bools(text):
        assert payload.has_bools(bare)


@pytest.mark.parametrize("text", ['"a\\ud800"', '"\\udfff"', '"\\uDBFF x"', '"\\\\\\udc00\\ud800"'])
def test_a_lone_surrogate_escape_is_a_400(decoder, text):
    """A \\u escape of half a UTF-16 pair is no character: Python's decoder takes it, and every
    step after it that encodes text (pandas' strings, the response) fails."""
    body = '{"input_data": {"columns": ["label"], "data": [[' + text + ']]}}'
    with pytest.raises(PayloadError) as info:
        payload.parse_azure(body.encode(), JSON)
    assert info.value.message == ("POST body could not be decoded as JSON: it has a \\u escape "
                                  "of a lone UTF-16 surrogate, which is no character")
    # a pair is one character, and an escaped backslash before 'u' starts no escape
    pair = payload.parse_azure(b'{"input_data": ["\\ud83d\\ude00", "\\\\ud800"]}', JSON)
    assert pair.data == ["\U0001f600", "\\ud800"]


def test_a_lone_surrogate_scores_400_not_500(predictors):
    body = {"input_data": {"columns": ["count", "price", "label"], "data": [[1, 2.0, "\ud800"]]}}
    for raw in (json.dumps(body), json.dumps(dict(body, params={"suffix": "\udfff"}))):
        result = pipeline.score(raw.encode(), JSON, predictors["mixed-params"])
        assert result.status == 400, result.body


@pytest.mark.parametrize("mode, type_name", [("timedelta", "Timedelta"), ("object", "object")])
@pytest.mark.parametrize("render", ["score", "invocations"])
def test_an_output_that_cannot_be_written_is_a_500_naming_its_type(predictors, mode, type_name,
                                                                      render, caplog):
    body = {"input_data": ROW, "params": {"mode": mode}}
    if render == "invocations":
        body = {"dataframe_split": ROW, "params": {"mode": mode}}
    call = pipeline.score if render == "score" else pipeline.invocations
    result = call(json.dumps(body).encode(), JSON, predictors["quirks"], request_id="rid-7")
    assert result.status == 500
    assert json.loads(result.body)["message"] == (
        "The model's output could not be serialised (type {}); the deployment log has the "
        "details for request id rid-7".format(type_name))
    assert "rid-7" in caplog.text and "could not be serialised" in caplog.text


class Broken(Scorer):
    """A scorer that fails where no error is expected: a bug of ours, or of a script outside
    run()."""

    def score(self, request):
        raise RuntimeError("secret-value")

    def describe(self):
        raise RuntimeError("secret-value")


def test_a_failure_of_the_server_itself_is_a_500_with_the_request_ids(caplog):
    client = create_app(Broken(), ServerConfig(model_dir="unused")).test_client()
    for response in (client.post("/score", data="{}", headers={"x-request-id": "b-1"}),
                     client.get("/version", headers={"x-request-id": "b-1"})):
        assert response.status_code == 500
        assert response.get_json()["message"] == (
            "The server failed on this request; the deployment log has the traceback for "
            "request id b-1")
        assert b"secret" not in response.data and has_ids(response, "b-1")
    assert "request b-1: the server failed" in caplog.text and "secret-value" in caplog.text


# ---- a live server ----------------------------------------------------------------------------

LIMIT_MB = 0.05
LIMIT = int(LIMIT_MB * 1024 * 1024)


@pytest.fixture(scope="module")
def server(quirks_dir, tmp_path_factory):
    started = Server(tmp_path_factory.mktemp("hostile"), quirks_dir, deployment="hostile",
                     max_request_mb=LIMIT_MB)
    try:
        yield started.wait_ready()
    finally:
        started.stop()


def test_deep_nesting_is_a_400_on_every_scoring_route(server):
    deep = nested(1000)
    score = server.post(data=b'{"input_data": ' + deep + b"}",
                        headers={"Content-Type": JSON, "x-request-id": "deep-1"})
    # 600 levels: quoted, 1000 would pass gunicorn's limit on the request line (a 414)
    query = requests.get(server.url + "/score", params={"input_data": nested(600).decode()},
                         headers={"x-request-id": "deep-2"})
    mlflow = server.post("/invocations", data=b'{"inputs": ' + deep + b"}",
                         headers={"Content-Type": JSON, "x-request-id": "deep-3"})
    for rid, response in (("deep-1", score), ("deep-2", query), ("deep-3", mlflow)):
        assert response.status_code == 400, response.text
        assert "deeper than {} levels".format(payload.MAX_DEPTH) in response.json()["message"]
        assert has_ids(response, rid)


def chunks(*parts):
    for part in parts:
        yield part


def test_a_chunked_body_over_the_limit_is_413_not_truncated(server):
    valid = json.dumps({"input_data": ROW}).encode()
    fits = server.post(data=chunks(valid, b" " * (LIMIT - len(valid))),
                       headers={"Content-Type": JSON})
    assert fits.status_code == 200, fits.text
    # what the limit would cut off is only spaces: read to the limit, this body would score
    over = server.post(data=chunks(valid, b" " * (LIMIT - len(valid)), b" " * 1000),
                       headers={"Content-Type": JSON, "x-request-id": "big-1"})
    assert over.status_code == 413
    assert over.json()["message"] == \
        "The request body is larger than the deployment's limit of 0.05 MB."
    assert has_ids(over, "big-1")


def raw_exchange(server, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            piece = sock.recv(65536)
            if not piece:
                return answer
            answer += piece


def test_a_broken_chunked_body_is_a_400(server):
    head = (b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    answer = raw_exchange(server, head + b"5\r\n{\"inp\r\nzz\r\n")
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"400", answer
    assert b"x-request-id" in rest.lower()


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate, gzip", "<script>"])
def test_a_content_encoding_is_415_without_echo(server, encoding):
    response = server.post(data=json.dumps({"input_data": ROW}),
                           headers={"Content-Type": JSON, "Content-Encoding": encoding})
    assert response.status_code == 415
    assert response.json()["message"] == (
        "Content-Encoding is not supported: send the body unencoded (identity).")
    assert has_ids(response)
    identity = server.post(data=json.dumps({"input_data": ROW}),
                           headers={"Content-Type": JSON, "Content-Encoding": "identity"})
    assert identity.status_code == 200


def test_swagger_version_is_echoed_only_as_a_short_token(server):
    unknown = requests.get(server.url + "/swagger.json", params={"version": "4.0-rc_1"})
    assert unknown.status_code == 404
    assert unknown.json()["message"] == \
        "Swagger version [4.0-rc_1] is not valid. Supported versions: [2, 3, 3.1]."
    for hostile in ("<script>alert(1)</script>", "3" * 17, "3 ", "\u00e9"):
        response = requests.get(server.url + "/swagger.json", params={"version": hostile})
        assert response.status_code == 400
        assert response.json()["message"] == (
            "The swagger version must be one of 2, 3 or 3.1 (at most 16 letters, digits, "
            "'.', '_' or '-').")
        assert "script" not in response.text and "333" not in response.text
        assert has_ids(response)


def test_wrong_method_has_azures_text(server):
    for method, path in (("DELETE", "/score"), ("GET", "/invocations"), ("POST", "/swagger.json")):
        response = requests.request(method, server.url + path, headers={"x-request-id": "m-1"})
        assert response.status_code == 405
        assert response.json()["message"] == "The method is not allowed for the requested URL."
        assert has_ids(response, "m-1")


@pytest.mark.parametrize("name, message", [
    ("x-request-id", "x-request-id must not exceed 100 characters"),
    ("x-ms-request-id", "x-ms-request-id and x-ms-client-request-id must not exceed 100 "
                        "characters"),
    ("x-ms-client-request-id", "x-ms-request-id and x-ms-client-request-id must not exceed 100 "
                               "characters"),
])
def test_over_long_ids_are_431_and_never_echoed(server, name, message):
    long_id = "r" * 101
    for path in ("/score", "/swagger.json"):
        response = server.post(body={"input_data": ROW}, headers={name: long_id}) \
            if path == "/score" else requests.get(server.url + path, headers={name: long_id})
        assert response.status_code == 431
        assert response.json()["message"] == message
        assert long_id not in str(response.headers) and has_ids(response)
    fits = server.post(body={"input_data": ROW}, headers={name: "r" * 100})
    assert fits.status_code == 200 and "r" * 100 in fits.headers.values()


def test_every_answer_carries_the_request_ids(server):
    for response in (requests.get(server.url + "/nope", headers={"x-request-id": "a-1"}),
                     requests.get(server.url + "/swagger.json", headers={"x-request-id": "a-1"}),
                     requests.get(server.url + "/", headers={"x-request-id": "a-1"})):
        assert has_ids(response, "a-1"), response.status_code


def test_an_output_that_cannot_be_written_is_a_500_with_the_request_id(server):
    response = server.post(body={"input_data": ROW, "params": {"mode": "timedelta"}},
                           headers={"x-request-id": "out-1", "Content-Type": JSON})
    assert response.status_code == 500
    assert response.json()["message"] == (
        "The model's output could not be serialised (type Timedelta); the deployment log has "
        "the details for request id out-1")
    assert has_ids(response, "out-1")
    assert response.headers["x-ms-run-function-failed"] == "True"
    wait_until(lambda: "request out-1: the model's output could not be serialised" in server.log(),
               timeout=10)


# ---- a huge payload ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def one_feature_model(tmp_path_factory):
    """y = 2x, one double column."""
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    model = LinearRegression().fit(frame, [2.0, 4.0, 6.0])
    path = str(tmp_path_factory.mktemp("one-feature") / "model")
    mlflow.sklearn.save_model(model, path, signature=infer_signature(frame, model.predict(frame)))
    return path


@pytest.fixture
def server_env(decoder, tmp_path, monkeypatch):
    """The environment a server started now runs with: for the stdlib decoder, one where
    ``import orjson`` fails, as in a model env without an orjson wheel."""
    if decoder == "stdlib":
        (tmp_path / "no-orjson").mkdir()
        (tmp_path / "no-orjson" / "orjson.py").write_text(
            "raise ModuleNotFoundError(\"No module named 'orjson'\", name='orjson')\n")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
            filter(None, [str(tmp_path / "no-orjson"), os.environ.get("PYTHONPATH")])))
    return decoder


@pytest.mark.slow
# the standard library's decoder only: it leaves the millions of small objects whose freed
# memory glibc keeps (orjson's leave about 3 %, well within the bound, with or without the fix)
@pytest.mark.parametrize("decoder", ["stdlib"])
def test_a_million_rows_leave_the_worker_no_larger(one_feature_model, server_env, start_server):
    """10^6 rows of one feature (7.5 MB, under the body limit) sent to a server directly: scored
    within the timeout or a 504, and then the worker's resident memory comes back to within 20 %
    of its size before, or the worker was replaced."""
    # a timeout that a loaded machine does not reach: a 504 recycles the worker, which would
    # pass without saying anything about the memory a scored request leaves
    server = start_server(one_feature_model, request_timeout_ms=20000)
    worker, = processes.children(server.proc.pid)
    warm = server.post(body={"input_data": {"columns": ["x"], "data": [[1.0]] * 1000}})
    assert warm.status_code == 200, warm.text
    before = processes.status_field(worker, "VmRSS")
    rows = 10 ** 6
    # a thousand distinct values (the answer's numbers are as long as real ones: four repeated
    # values left the worker as small as before even without the fix)
    data = b",".join([b"[%d.5]" % i for i in range(1000)] * (rows // 1000))
    body = b'{"input_data": {"columns": ["x"], "data": [' + data + b"]}}"
    answer = server.post(data=body, headers={"Content-Type": JSON})
    assert answer.status_code in (200, 504), answer.text[:300]
    if answer.status_code == 200:  # 2x, one value a row (not decoded here: a second a time)
        assert answer.content.startswith(b"[1.0") and answer.content.count(b",") == rows - 1
    sizes = []

    def settled():
        if processes.children(server.proc.pid) != [worker]:
            return True  # recycled: a fresh worker took its place
        sizes.append(processes.status_field(worker, "VmRSS"))
        return sizes[-1] <= 1.2 * before

    try:
        wait_until(settled, timeout=10)
    except AssertionError:
        pytest.fail("the worker kept {} kB after the request, {} kB before".format(sizes[-1],
                                                                                  before))


# ---- what gunicorn reads before the app: the request line and the headers --------------------

class Answer:
    """An answer read off the socket: status, headers (lower-case names), body."""

    def __init__(self, raw: bytes):
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers[name.strip().lower()] = value.strip()


def exchange(server, request: bytes) -> Answer:
    return Answer(raw_exchange(server, request))


def post(target=b"/score", headers=b"", body=None, method=b"POST"):
    body = json.dumps({"input_data": ROW}).encode() if body is None else body
    return (method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + headers + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def gunicorn_version():
    """From the installed package's metadata, not by importing gunicorn: this runs at collection,
    and a test model that fails only in a server's worker (tests/testing/models.py) tells it is
    in one by gunicorn being imported."""
    from importlib.metadata import version

    return tuple(int(part) for part in version("gunicorn").split(".")[:2])


# gunicorn before 22 lets these through to the app, which answers them as any other request
REFUSED_SINCE_22 = pytest.mark.skipif(gunicorn_version() < (22,),
                                      reason="this gunicorn does not refuse it")


@pytest.mark.parametrize("request_bytes, status, message", [
    (post(headers=b"x(y: 1\r\n"), 400, "The request has a malformed header."),
    (post(headers=b"x-request-id: a\x00b\r\n"), 400, "The request has a malformed header."),
    (post(headers=b"Content-Length: 5\r\n"), 400, "The request has a malformed header."),
    (post(headers=b"Transfer-Encoding: Chunked\r\n"), 400, "The request has a malformed header."),
    pytest.param(post(method=b"FOO", target=b"*"), 400,
                 "The request line is not valid HTTP/1.1 (a method, a target and the version).",
                 marks=REFUSED_SINCE_22),
    (post(method=b"post"), 400,
     "The request line is not valid HTTP/1.1 (a method, a target and the version)."),
    (b"GET /score?input_data=" + b"1" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414,
     "The request line is longer than 4094 bytes: send the input in a POST body."),
    (post(headers=b"x-note: " + b"n" * 9000 + b"\r\n"), 431,
     "The request's headers are too large or too many."),
    pytest.param(post(headers=b"Transfer-Encoding: x-zip\r\n"), 400,
                 "Transfer-Encoding is not supported but for chunked: send the body with a "
                 "Content-Length or in chunks.", marks=REFUSED_SINCE_22),
    pytest.param(post(headers=b"Expect: x-proof\r\n"), 417, "Expect takes only 100-continue.",
                 marks=REFUSED_SINCE_22),
])
def test_a_request_gunicorn_refuses_gets_the_apps_kind_of_answer(server, request_bytes, status,
                                                                  message):
    """JSON with a message, the request ids, nothing of the client's text, and never a 5xx
    (gunicorn's own answer is an HTML page quoting the header or request line, and a 501 for
    an unknown transfer coding)."""
    answer = exchange(server, request_bytes)
    assert answer.status == status
    assert json.loads(answer.body) == {"message": message}
    assert all(answer.headers.get(name.encode()) for name in ID_HEADERS)
    assert answer.headers[b"content-type"] == JSON.encode()
    assert b"x(y" not in answer.body and b"x-zip" not in answer.body
    # its access line, as the app's: the new request id, the status, our message as the reason
    line = "request_id={} method=- route=- status={} latency_ms=- reason={}\n".format(
        answer.headers[b"x-request-id"].decode(), status, json.dumps(message))
    wait_until(lambda: line in server.log(), timeout=10, message="no access line")


@pytest.mark.parametrize("coding", [b"gzip", b"deflate", b"identity", b"gzip, deflate"])
def test_a_transfer_coding_but_chunked_is_a_400(server, coding):
    """Where the last coding is not chunked the body's length cannot be known (RFC 9112);
    gunicorn read it by its Content-Length, undecoded, and a body sent as gzip was scored as
    plain JSON."""
    answer = exchange(server, post(headers=b"Transfer-Encoding: " + coding + b"\r\n"))
    assert answer.status == 400, answer.body
    assert json.loads(answer.body) == {
        "message": "Transfer-Encoding is not supported but for chunked: send the body with a "
                   "Content-Length or in chunks."}
    assert all(answer.headers.get(name.encode()) for name in ID_HEADERS)


@pytest.mark.parametrize("headers", [b"SCRIPT_NAME: /elsewhere\r\n", b"SCRIPT_NAME: /score\r\n",
                                     b"X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n"])
def test_forwarding_headers_from_a_client_change_nothing(server, headers):
    """gunicorn trusts SCRIPT_NAME and the scheme headers from local peers and any Unix socket
    peer (SCRIPT_NAME from any peer before gunicorn 22): a client could move the app's routes
    (a 500 for a SCRIPT_NAME the path does not start with) or have the request refused for
    contradicting itself."""
    answer = exchange(server, post(headers=headers))
    assert answer.status == 200, answer.body
    assert json.loads(answer.body) == [2.0]


@pytest.mark.parametrize("target", [b"/score?input_data=\xff", b"/score?\x89",
                                    b"/swagger.json?version=\xe9"])
def test_a_query_string_that_is_not_utf8_is_a_400(server, target):
    answer = exchange(server, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
                      b"x-request-id: q-1\r\n\r\n")
    assert answer.status == 400
    assert json.loads(answer.body) == {
        "message": "The query string is not valid UTF-8: percent-encode its values as UTF-8."}
    assert answer.headers[b"x-request-id"] == b"q-1"
