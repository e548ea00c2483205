"""Real gunicorn servers on 127.0.0.1: every route, header and status code of Azure's
scoring server."""
import json
import os
import threading
import time
import urllib.parse

import pytest
import requests
from gunicorn import util as gunicorn_util

from tests import prometheus
from tests.conftest import Server
from tests.connections import accepted, wait_until
from tests.scoring.test_pipeline import AZURE_ROUND_2, VALID


@pytest.mark.parametrize("name", sorted(VALID))
def test_each_example_model_scores_over_http(servers, name):
    server = servers[name]
    assert requests.get(server.url + "/").text == "Healthy"
    response = server.post(body=VALID[name])
    assert response.status_code == 200, response.text
    assert isinstance(response.json(), list)
    headers = response.headers
    assert headers["x-ms-run-function-failed"] == "False"
    assert headers["x-ms-request-id"] == headers["x-request-id"] == headers["x-ms-client-request-id"]
    assert float(headers["x-ms-run-fn-exec-ms"]) >= 0
    assert server.ready_state()["ok"] is True


def test_request_ids_are_echoed_and_bounded(servers):
    server = servers["diabetes"]
    response = server.post(body=VALID["diabetes"], headers={
        "x-request-id": "abc", "x-ms-client-request-id": "client-1",
        "Content-Type": "application/json"})
    assert response.headers["x-request-id"] == response.headers["x-ms-request-id"] == "abc"
    assert response.headers["x-ms-client-request-id"] == "client-1"
    too_long = server.post(body=VALID["diabetes"], headers={
        "x-request-id": "r" * 101, "Content-Type": "application/json"})
    assert too_long.status_code == 431
    assert too_long.json()["message"] == "x-request-id must not exceed 100 characters"


@pytest.mark.parametrize("kwargs, status, message", [
    ({"data": "{}", "headers": {"Content-Type": "text/plain"}}, 415,
     "Expects Content-Type to be application/json"),
    ({"data": "", "headers": {"Content-Type": "application/json"}}, 400,
     "POST body is empty. Expecting a JSON dictionary."),
    ({"data": "{oops", "headers": {"Content-Type": "application/json"}}, 400,
     "POST body could not be decoded as JSON: "),
    ({"data": "[1]", "headers": {"Content-Type": "application/json"}}, 400,
     "POST body should be a JSON dictionary."),
    ({"data": '{"inputs": 1}', "headers": {"Content-Type": "application/json"}}, 400,
     "A value is not provided for the 'input_data' parameter."),
    ({"data": json.dumps({"input_data": {"columns": ["age"], "data": [[1]]}}),
      "headers": {"Content-Type": "application/json"}}, 400, "missing required columns 'sex'"),
    ({"data": "x" * 60000, "headers": {"Content-Type": "application/json"}}, 413,
     "The request body is larger than the deployment's limit of 0.05 MB."),
])
def test_error_statuses(servers, kwargs, status, message):
    response = servers["diabetes"].post(**kwargs)
    assert response.status_code == status
    assert response.json()["message"].startswith(message)
    assert response.headers["x-ms-run-function-failed"] == "True"
    assert "x-ms-run-fn-exec-ms" not in response.headers


def test_coercions_header_and_strict_mode(servers, tmp_path, example_model_dirs):
    body = {"input_data": {"columns": ["count", "price", "label"], "data": [[2.5, "9.99", None]]}}
    response = servers["mixed-params"].post(body=body)
    assert response.status_code == 200
    notes = response.headers["x-mlflow-deploy-coercions"]
    assert "column 'count' had fractional values" in notes and "column 'price'" in notes
    assert "column 'label' had null values" in notes
    counted = prometheus.parse(requests.get(servers["mixed-params"].url + "/metrics").text)
    for kind in ("fraction_truncated", "number_from_string", "null_as_nan"):
        assert prometheus.value(counted, "mlflow_deploy_coercions_total", kind=kind) >= 1
    strict = Server(tmp_path, example_model_dirs["mixed-params"], validation="strict")
    try:
        strict.wait_ready()
        rejected = strict.post(body=body)
        assert rejected.status_code == 400
        assert "(validation is strict)" in rejected.json()["message"]
        # the workers' metrics files live in a directory of the server's own while it runs
        assert len(list(tmp_path.glob("metrics.*/counter_*.db"))) >= 1
    finally:
        strict.stop()
    assert not list(tmp_path.glob("metrics.*"))  # and it is gone once the server stopped


@pytest.mark.parametrize("name, body, status, expected", AZURE_ROUND_2)
def test_azures_answers_round_2_over_http(servers, name, body, status, expected):
    response = servers[name].post(body=body)
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json() == expected
    else:
        assert response.json()["message"].startswith(expected)
        assert response.headers["x-ms-run-function-failed"] == "True"


def test_dropped_columns_and_unknown_params_share_the_coercions_header(servers):
    """Both are the client's names: a dropped column is counted, an unknown param is named only
    when its name is plain (a newline or a non-Latin-1 character in a header is a 500)."""
    body = {"input_data": {"columns": ["count", "price", "label", "note\r\nX-Evil: 1"],
                           "data": [[2, 9.99, "pen", "a"]]},
            "params": {"scale": 2, "colour": "red", "na\u00efve\u20ac\r\nX-Evil: 1": 1}}
    response = servers["mixed-params"].post(body=body)
    assert response.status_code == 200, response.text
    assert "X-Evil" not in response.headers
    assert response.headers["x-mlflow-deploy-coercions"].split("; ") == [
        "input_data had 1 column the signature does not name, dropped",
        "param 'colour' is not in the model's params schema, ignored",
        "a param is not in the model's params schema, ignored"]


def test_other_routes(servers):
    server = servers["diabetes"]
    query = urllib.parse.quote(json.dumps(VALID["diabetes"]["input_data"]))
    got = requests.get(server.url + "/score?input_data=" + query)
    assert got.status_code == 200 and len(got.json()) == 2
    assert requests.get(server.url + "/score").status_code == 400
    assert requests.options(server.url + "/score").status_code == 200
    for version in ("2", "3", "3.1"):
        doc = requests.get(server.url + "/swagger.json", params={"version": version})
        assert doc.status_code == 200
        assert doc.json().get("swagger", doc.json().get("openapi", "")).startswith(version)
        assert json.dumps(VALID["diabetes"]["input_data"]["columns"]) \
            .strip("[]").split(",")[0] in doc.text
    bad = requests.get(server.url + "/swagger.json", params={"version": "4"})
    assert bad.status_code == 404
    assert bad.json()["message"] == \
        "Swagger version [4] is not valid. Supported versions: [2, 3, 3.1]."
    missing = requests.get(server.url + "/nope")
    assert missing.status_code == 404 and "message" in missing.json()
    wrong = requests.delete(server.url + "/score")
    assert wrong.status_code == 405 and "message" in wrong.json()
    assert requests.get(server.url + "/ping").status_code == 200
    assert requests.get(server.url + "/health").status_code == 200
    version = requests.get(server.url + "/version").json()
    assert version["model_uri"] == "models:/diabetes/1" and version["signature"] == "columns"
    invocations = server.post("/invocations", body={"dataframe_split": VALID["diabetes"]["input_data"]})
    assert invocations.status_code == 200 and len(invocations.json()["predictions"]) == 2
    csv = server.post("/invocations", data="age,sex,bmi,bp,s1,s2,s3,s4,s5,s6\n" + ",".join(["0.1"] * 10),
                      headers={"Content-Type": "text/csv"})
    assert csv.status_code == 200
    metrics = requests.get(server.url + "/metrics")
    assert metrics.status_code == 200
    assert 'mlflow_deploy_requests_total{route="score",status="200"}' in metrics.text
    assert 'mlflow_deploy_requests_total{route="invocations",status="200"} 2.0' in metrics.text


def test_model_failure_is_500_with_request_id_and_traceback_in_log(servers):
    server = servers["quirks"]
    response = server.post(body={"input_data": {"columns": ["x"], "data": [[1]]},
                                 "params": {"mode": "runtime"}},
                           headers={"x-request-id": "req-42", "Content-Type": "application/json"})
    assert response.status_code == 500
    assert "req-42" in response.json()["message"] and "fire" not in response.text
    deadline = time.monotonic() + 5
    while "the GPU caught fire" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "RuntimeError: the GPU caught fire" in server.log()


@pytest.mark.slow
def test_timeout_is_504_recycles_the_worker_and_others_keep_serving(servers):
    server = servers["quirks"]
    slow = {"input_data": {"columns": ["x"], "data": [[1]]},
            "params": {"mode": "sleep", "seconds": 30}}
    fast = {"input_data": {"columns": ["x"], "data": [[1]]}}
    results = {}

    def call_slow():
        started = time.monotonic()
        results["slow"] = server.post(body=slow)
        results["slow_s"] = time.monotonic() - started

    thread = threading.Thread(target=call_slow)
    wait_until(lambda: not accepted(server.port))  # the earlier tests' requests are done
    thread.start()
    wait_until(lambda: accepted(server.port))  # a worker has taken the slow request
    fast_answers = [server.post(body=fast).status_code for _ in range(5)]
    thread.join(timeout=30)
    assert fast_answers == [200] * 5
    assert results["slow"].status_code == 504
    assert results["slow"].json()["message"] == "Scoring timeout after 1500 ms"
    assert results["slow_s"] < 10
    deadline = time.monotonic() + 10
    while "recycling this worker" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "recycling this worker" in server.log()
    assert all(server.post(body=fast).status_code == 200 for _ in range(6))


def test_a_model_that_cannot_load_is_reported(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "MLmodel").write_text("flavors: {python_function: {loader_module: nope}}\n")
    server = Server(tmp_path, tmp_path / "broken")
    server.proc.wait(timeout=120)
    assert server.proc.returncode != 0
    state = server.ready_state()
    assert state["ok"] is False and state["error"].startswith("the model could not be loaded")


def test_metrics_sum_both_workers_exactly(servers):
    """A known sequence of requests, two of them at once so that both workers serve: every
    count and histogram bucket of the server's /metrics moves by exactly what was sent."""
    server = servers["quirks"]  # 2 workers
    before = prometheus.parse(requests.get(server.url + "/metrics").text)

    def post(mode, rows, path="/score", **params):
        data = [[x] for x in rows]
        body = {"dataframe_split": {"columns": ["x"], "data": data}} if path == "/invocations" \
            else {"input_data": {"columns": ["x"], "data": data}}
        return server.post(path, body=dict(body, params=dict(params, mode=mode)))

    sleeping = [threading.Thread(target=post, args=("sleep", [1.0]), kwargs={"seconds": 0.3})
                for _ in range(2)]
    for thread in sleeping:
        thread.start()
    for thread in sleeping:
        thread.join()
    for rows in ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], ["1.5", "2", "3"], ["4.5", "5", "6"]):
        assert post("ok", rows).status_code == 200
    assert post("value_error", [1.0]).status_code == 400
    assert post("ok", [1.0, 2.0], path="/invocations").status_code == 200
    after = prometheus.parse(requests.get(server.url + "/metrics").text)

    def moved(name, **labels):
        return prometheus.value(after, name, **labels) - prometheus.value(before, name, **labels)

    assert moved("mlflow_deploy_requests_total", route="score", status="200") == 6
    assert moved("mlflow_deploy_requests_total", route="score", status="400") == 1
    assert moved("mlflow_deploy_requests_total", route="invocations", status="200") == 1
    assert moved("mlflow_deploy_rows_scored_total") == 2 * 1 + 4 * 3 + 2
    assert moved("mlflow_deploy_coercions_total", kind="number_from_string") == 2
    predict = "mlflow_deploy_predict_duration_seconds_bucket"
    assert moved("mlflow_deploy_predict_duration_seconds_count") == 7  # not the rejected one
    assert moved(predict, le="0.25") == 5 and moved(predict, le="0.5") == 7
    request = "mlflow_deploy_request_duration_seconds_bucket"
    assert moved("mlflow_deploy_request_duration_seconds_count", route="score") == 7
    assert moved(request, route="score", le="0.25") == 5
    assert moved(request, route="score", le="+Inf") == 7
    assert moved("mlflow_deploy_request_body_bytes_count") == 8
    assert moved("mlflow_deploy_request_body_bytes_bucket", le="256.0") == 8
    assert prometheus.value(after, "mlflow_deploy_requests_in_flight") == 0
    assert prometheus.value(after, "mlflow_deploy_model_load_seconds") > 0


def read_answer(sock):
    """(head, body) of one answer on a raw socket, read by its Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed before an answer"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length")][0])
    while len(body) < length:
        body += sock.recv(65536)
    return head.decode("latin-1"), body


def test_a_worker_keeps_one_connection_of_its_unix_socket_between_requests(
        start_server, example_model_dirs, request):
    """The gateway's hop: the first connection of the Unix socket stays open, request after
    request, and the worker still answers another connection meanwhile, closing that one after
    its answer (at once), as it does every connection of a TCP port; a request that says close
    closes the kept one, and a stopping server closes it idle without waiting for it."""
    import shutil
    import socket
    import tempfile

    # not under tmp_path, which can be deeper than a Unix socket's address holds (107 bytes)
    folder = tempfile.mkdtemp(prefix="sock-")
    request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    path = os.path.join(folder, "s.sock")
    server = start_server(example_model_dirs["diabetes"], workers=1, unix_socket=path,
                          max_request_mb=0.05)
    payload = json.dumps(VALID["diabetes"]).encode()

    def post(sock, extra=b""):
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n%s\r\n%s" % (len(payload), extra, payload))
        head, body = read_answer(sock)
        assert head.startswith("HTTP/1.1 200 "), head
        assert isinstance(json.loads(body), list)
        return "\r\nConnection: keep-alive" in head, "\r\nConnection: close" in head

    def connect():
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(30)
        sock.connect(path)
        return sock

    kept = connect()
    assert [post(kept) for _ in range(3)] == [(True, False)] * 3
    other = connect()
    assert post(other) == (False, True) and other.recv(1) == b""
    # closed at once, not after waiting for this side's end of stream (gunicorn's graceful
    # close waits 2 s for it, and this server's one worker would wait with it)
    started = time.monotonic()
    assert post(kept) == (True, False) and time.monotonic() - started < 1.5
    tcp = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    assert post(tcp) == (False, True) and tcp.recv(1) == b""
    assert post(kept) == (True, False)
    assert post(kept, b"Connection: close\r\n") == (False, True) and kept.recv(1) == b""

    idle = connect()
    assert post(idle) == (True, False)
    # a request answered before its body is read (over the size limit), on a connection not
    # kept: the worker reads the rest before it closes, so the client can still send it whole
    # rather than fail writing to a closed socket (gunicorn 26's graceful close; an older one
    # closes at once, as it always did)
    early = connect()
    early.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 60000\r\n\r\n")
    head, _ = read_answer(early)
    assert head.startswith("HTTP/1.1 413 ") and "\r\nConnection: close" in head, head
    if hasattr(gunicorn_util, "close_graceful"):
        early.sendall(b" " * 60000)
        assert early.recv(1) == b""

    started = time.monotonic()
    server.stop()
    assert server.proc.returncode == 0 and time.monotonic() - started < 10
    assert idle.recv(1) == b""
