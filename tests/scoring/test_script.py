"""User scoring scripts (Azure's code_configuration) on real gunicorn servers: init() once per
worker, run() with the raw body, Azure's rendering and errors, and the example scripts."""
import http.client
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
import requests

from mlflow_deploy.scoring.script import RUN_FAILED
from tests.conftest import ROOT, Server, wait_ready_file

SCRIPTS = os.path.join(ROOT, "example_models", "scripts")

# one script exercising the whole contract; the request body picks what run() does
ECHO = '''
import json
import os
import pickle
import sys

import helper  # a module next to score.py: the code folder is on sys.path


def init():
    global model
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "m.pkl"), "rb") as f:
        model = pickle.load(f)
    with open("inits.txt", "a") as f:  # relative: the working directory is the code folder
        f.write("{}\\n".format(os.getpid()))
    print("init in", os.getpid())


def run(raw_data, request_headers):
    print("run got", len(raw_data), "characters")
    if raw_data == "fail":
        raise RuntimeError("do-not-leak")
    if raw_data == "str":
        return "plain text"
    if raw_data == "none":
        return None
    if raw_data == "numpy":
        import numpy
        return {"a": numpy.arange(3), "x": numpy.float32(1.5)}
    if raw_data == "object":
        return object()
    if raw_data == "response":
        from flask import Response
        return Response("<b>hi</b>", status=201, content_type="text/html",
                        headers={"X-Script": "yes"})
    return {"raw": raw_data, "pid": os.getpid(), "model": model, "helper": helper.VALUE,
            "custom_header": request_headers.get("X-Custom"),
            "mlflow_imported": "mlflow" in sys.modules, "cwd": os.getcwd(),
            "env": {k: os.environ.get(k) for k in
                    ("AZUREML_MODEL_DIR", "AML_APP_ROOT", "AZUREML_ENTRY_SCRIPT")}}
'''

SLOW = '''
import os
import time


def init():
    with open("inits.txt", "a") as f:
        f.write("{}\\n".format(os.getpid()))


def run(raw_data):
    if raw_data == "sleep":
        time.sleep(30)
    if raw_data == "swallow":  # a script that catches everything must not hide the timeout
        try:
            time.sleep(30)
        except Exception:
            return "swallowed"
    return "done"
'''


def write_code(folder, score, **files):
    """A code folder: score.py plus any other files (name -> text)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in dict(files, **{"score.py": score}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return folder


def script_server(directory, code, model_dir, **settings):
    """Start (not wait for) a server running code/score.py with AZUREML_MODEL_DIR = model_dir."""
    directory.mkdir(parents=True, exist_ok=True)
    return Server(directory, model_dir, code_dir=str(code), scoring_script="score.py",
                  azureml_model_dir=str(model_dir), **settings)


def wait_for_log(server, text, timeout=10.0):
    deadline = time.monotonic() + timeout
    while text not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.log()


def send(server, data, **headers):
    return requests.post(server.url + "/score", data=data, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    """ECHO with two workers and the single-file model layout: $AZUREML_MODEL_DIR/m.pkl."""
    root = tmp_path_factory.mktemp("echo")
    code = write_code(root / "code", ECHO, **{"helper.py": "VALUE = 'helped'\n",
                                              "swagger3.json": '{"openapi": "3.0.0"}'})
    (root / "azureml-models").mkdir()
    with open(root / "azureml-models" / "m.pkl", "wb") as f:
        pickle.dump({"weights": [1, 2, 3]}, f)
    server = script_server(root / "server", code, root / "azureml-models", workers=2,
                           max_request_mb=0.05, deployment="echo")
    try:
        yield wait_ready_file(server)
    finally:
        server.stop()


def test_init_runs_once_per_worker_before_it_takes_traffic(echo):
    inits = (echo.dir.parent / "code" / "inits.txt").read_text().split()
    assert len(inits) == 2 and len(set(inits)) == 2
    state = echo.ready_state()
    assert state["ok"] is True and state["pid"] == echo.proc.pid  # the master's pid
    answered = {send(echo, "hello").json()["pid"] for _ in range(20)}
    assert answered <= {int(pid) for pid in inits}
    assert "init in " + inits[0] in wait_for_log(echo, "init in " + inits[0])  # print() is logged


def test_run_gets_the_raw_body_as_text_and_the_request_headers(echo):
    body = '  {"not": "parsed", "x": [1, 2]}\n'
    response = send(echo, body.encode("utf-8"), **{"Content-Type": "text/plain",
                                                    "X-Custom": "from-client",
                                                    "x-request-id": "req-7"})
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["raw"] == body and got["custom_header"] == "from-client"
    assert got["model"] == {"weights": [1, 2, 3]} and got["helper"] == "helped"
    code = str(echo.dir.parent / "code")
    assert got["cwd"] == code
    assert got["env"] == {"AZUREML_MODEL_DIR": str(echo.dir.parent / "azureml-models"),
                          "AML_APP_ROOT": code,
                          "AZUREML_ENTRY_SCRIPT": os.path.join(code, "score.py")}
    assert got["mlflow_imported"] is False  # the script did not import it, so neither did we
    headers = response.headers
    assert headers["x-request-id"] == headers["x-ms-request-id"] == "req-7"
    assert headers["x-ms-run-function-failed"] == "False"
    assert float(headers["x-ms-run-fn-exec-ms"]) >= 0
    # Azure decodes the body as text whatever its content type, an empty one included
    assert send(echo, b"").json()["raw"] == ""


def test_get_score_hands_run_the_query_as_json(echo):
    response = requests.get(echo.url + "/score", params=[("a", "1"), ("b", "[1, 2]"),
                                                         ("c", "x"), ("c", "y")])
    assert response.status_code == 200
    assert json.loads(response.json()["raw"]) == {"a": 1, "b": [1, 2], "c": ["x", "y"]}
    # nested past what is decoded: handed on as the text it is (unquoted, to fit a request line)
    deep = "[" * 1000 + "]" * 1000
    connection = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=30)
    connection.request("GET", "/score?d=" + deep)
    answer = connection.getresponse()
    assert answer.status == 200
    assert json.loads(json.loads(answer.read())["raw"]) == {"d": deep}
    connection.close()


@pytest.mark.parametrize("body, status, content_type, expected", [
    ("str", 200, "application/json", b'"plain text"'),  # Azure JSON-encodes a str
    ("none", 200, "application/json", b"{}"),
    ("numpy", 200, "application/json", b'{"a":[0,1,2],"x":1.5}'),
    ("response", 201, "text/html", b"<b>hi</b>"),  # passed through as the script set it
])
def test_return_values_are_rendered_like_azure(echo, body, status, content_type, expected):
    response = send(echo, body, **{"x-request-id": "r-1"})
    assert response.status_code == status
    assert response.headers["Content-Type"] == content_type
    assert response.content.replace(b" ", b"") == expected.replace(b" ", b"")
    assert response.headers["x-request-id"] == "r-1"
    if body == "response":
        assert response.headers["X-Script"] == "yes"


def test_an_exception_in_run_is_azures_500_with_the_traceback_only_in_the_log(echo):
    response = send(echo, "fail", **{"x-request-id": "req-fail"})
    assert response.status_code == 500
    assert response.json() == {"message": RUN_FAILED}
    assert "do-not-leak" not in response.text
    assert response.headers["x-ms-run-function-failed"] == "True"
    log = wait_for_log(echo, "RuntimeError: do-not-leak")
    assert "request req-fail: the scoring script's run() failed" in log
    assert "Traceback (most recent call last)" in log and "RuntimeError: do-not-leak" in log


def test_a_return_value_json_cannot_carry_is_500_naming_its_type(echo):
    response = send(echo, "object")
    assert response.status_code == 500
    assert "returned a value of type 'object'" in response.json()["message"]


def test_limits_and_bad_bodies(echo):
    too_big = send(echo, "x" * 60000)
    assert too_big.status_code == 413
    assert too_big.json()["message"] == \
        "The request body is larger than the deployment's limit of 0.05 MB."
    not_text = send(echo, b"\xff\xfe binary")
    assert not_text.status_code == 400
    assert not_text.json()["message"] == \
        "Input cannot be decoded as UTF-8 (invalid byte at position 0)."
    too_long_id = send(echo, "hello", **{"x-request-id": "r" * 101})
    assert too_long_id.status_code == 431


def test_the_other_routes_of_a_script_deployment(echo):
    assert requests.get(echo.url + "/").text == "Healthy"
    assert requests.options(echo.url + "/score").status_code == 200
    assert requests.delete(echo.url + "/score").status_code == 405
    missing = requests.get(echo.url + "/swagger.json")  # Azure: only a user's file is served
    assert missing.status_code == 404
    assert missing.json()["message"] == ("Swagger version [2] is not supported for the scoring "
                                         "script. Supported swagger versions: [3].")
    served = requests.get(echo.url + "/swagger.json", params={"version": "3"})
    assert served.status_code == 200 and served.json() == {"openapi": "3.0.0"}
    invalid = requests.get(echo.url + "/swagger.json", params={"version": "4"})
    assert invalid.json()["message"] == "Swagger version [4] is not valid. Supported versions: [3]."
    invocations = echo.post("/invocations", body={"inputs": [1]})
    assert invocations.status_code == 404 and "POST /score" in invocations.json()["message"]
    version = requests.get(echo.url + "/version").json()
    assert version["scoring_script"] == "score.py" and version["deployment"] == "echo"
    metrics = requests.get(echo.url + "/metrics").text
    assert 'mlflow_deploy_requests_total{route="score",status="200"}' in metrics


def test_the_multi_model_script_of_seed_000_routes_by_model_id(tmp_path):
    """The seed's script as written, the models built by build.py, deployed as a models folder
    ($AZUREML_MODEL_DIR/models/model_A/model.pkl, ...)."""
    model_dir = tmp_path / "azureml-models"
    subprocess.run([sys.executable, os.path.join(SCRIPTS, "multi_model", "build.py"),
                    str(model_dir / "models")], check=True, capture_output=True)
    server = script_server(tmp_path / "server", os.path.join(SCRIPTS, "multi_model"), model_dir,
                           workers=1)
    try:
        wait_ready_file(server)
        a = server.post(body={"model_id": "model_A", "data": [[1, 2, 3], [4, 5, 6]]})
        assert a.status_code == 200
        assert a.json()["result"] == pytest.approx([14.0, 32.0])  # model_A learnt x1 + 2 x2 + 3 x3
        b = server.post(body={"model_id": "model_B", "data": [[7, 8, 9], [10, 11, 12]]})
        assert b.json()["result"] == pytest.approx([240.0, 330.0], rel=0.01)
        c = server.post(body={"model_id": "model_C", "data": [[1, 2, 3], [9, 2, 3]]})
        assert c.json()["result"] == [0.0, 1.0]
        unknown = server.post(body={"model_id": "model_Z", "data": [[1, 2, 3]]})
        assert unknown.status_code == 200  # the script's own answer, as on Azure
        assert unknown.json() == {"error": "Invalid or missing model_id"}
        assert "Model model_B loaded successfully" in server.log()  # its logging reaches the log
    finally:
        server.stop()


def test_the_postprocess_script_answers_probabilities_for_an_mlflow_model(tmp_path,
                                                                           example_model_dirs):
    """An MLflow model folder deployed with a script: $AZUREML_MODEL_DIR/model/MLmodel."""
    model_dir = tmp_path / "azureml-models"
    shutil.copytree(example_model_dirs["heart"], model_dir / "model")
    server = script_server(tmp_path / "server", os.path.join(SCRIPTS, "postprocess"), model_dir)
    try:
        wait_ready_file(server)
        with open(os.path.join(ROOT, "example_models", "payloads", "heart-split.json")) as f:
            body = json.load(f)
        body["input_data"]["data"].append([70, 1, 160, 400, 1, 2, 110, 1, 5.5, 2, 3, 3])
        body["input_data"]["index"].append(2)
        response = server.post(body=body)
        assert response.status_code == 200, response.text
        got = response.json()
        assert got["classes"] == [False, True]
        assert len(got["probabilities"]) == 2
        assert all(len(row) == 2 and sum(row) == pytest.approx(1.0)
                   for row in got["probabilities"])
        assert got["probabilities"][1][1] > got["probabilities"][0][1]  # older, sicker: likelier
        no_input = server.post(body={"data": []})
        assert no_input.status_code == 500 and no_input.json() == {"message": RUN_FAILED}
    finally:
        server.stop()


def failed(server):
    """Wait for a server that must not serve to exit; returns (exit code, ready state, log)."""
    code = server.proc.wait(timeout=120)
    return code, server.ready_state(), server.log()


def test_an_import_error_stops_the_server_and_says_why(tmp_path):
    code = write_code(tmp_path / "code", "import not_a_module_xyz\n\ndef init():\n    pass\n\n"
                                         "def run(raw_data):\n    return raw_data\n")
    code_, state, log = failed(script_server(tmp_path / "server", code, tmp_path))
    assert code_ != 0
    assert state["ok"] is False
    assert state["error"] == ("the scoring script could not be imported: ModuleNotFoundError: "
                              "No module named 'not_a_module_xyz'")
    assert "Traceback (most recent call last)" in log and "import not_a_module_xyz" in log


def test_an_init_error_stops_the_server_and_says_why(tmp_path):
    code = write_code(tmp_path / "code", '''
        import os

        def init():
            raise ValueError("no model at " + os.environ["AZUREML_MODEL_DIR"])

        def run(raw_data):
            return raw_data
        ''')
    server = script_server(tmp_path / "server", code, tmp_path / "models", workers=2)
    exit_code, state, log = failed(server)
    assert exit_code != 0  # the worker's boot error (exit 3) halted the master
    assert "exited with code 3" in log
    assert state["ok"] is False and state["pid"] == server.proc.pid
    assert state["error"] == "the scoring script's init() failed: ValueError: no model at " + \
        str(tmp_path / "models")
    assert "Traceback (most recent call last)" in log and 'raise ValueError("no model at "' in log


@pytest.mark.parametrize("source, error", [
    ("def init():\n    pass\n", "the scoring script has no run() function"),
    ("def run(data):\n    return data\n", "the scoring script has no init() function"),
    ("def init():\n    pass\n\ndef run(*args):\n    return 1\n",
     "run() cannot accept positional-only arguments, *args, or **kwargs."),
    ("def init():\n    pass\n\ndef run(request_headers):\n    return 1\n",
     "run() needs to accept an argument for input data."),
])
def test_a_script_azure_would_refuse_is_refused(tmp_path, source, error):
    code = write_code(tmp_path / "code", source)
    exit_code, state, _ = failed(script_server(tmp_path / "server", code, tmp_path))
    assert exit_code != 0 and state == {"revision": 1, "pid": state["pid"], "ok": False,
                                        "error": error}


def test_a_missing_script_is_reported(tmp_path):
    (tmp_path / "code").mkdir()
    _, state, _ = failed(script_server(tmp_path / "server", tmp_path / "code", tmp_path))
    assert state["error"] == "the scoring script is not in the code folder"


@pytest.mark.slow
def test_a_slow_run_is_504_and_its_worker_is_replaced_with_a_fresh_init(tmp_path):
    code = write_code(tmp_path / "code", SLOW)
    server = script_server(tmp_path / "server", code, tmp_path, workers=1,
                           request_timeout_ms=1000)
    try:
        wait_ready_file(server)
        for body in ("sleep", "swallow"):
            started = time.monotonic()
            response = send(server, body)
            assert response.status_code == 504, body
            assert response.json() == {"message": "Scoring timeout after 1000 ms"}
            assert time.monotonic() - started < 10
        assert send(server, "quick").json() == "done"  # the replacement worker serves
        inits = (code / "inits.txt").read_text().split()
        assert len(inits) >= 2 and len(set(inits)) == len(inits)  # each new worker ran init()
        assert "recycling this worker" in server.log()
    finally:
        server.stop()


# Azure's @rawhttp contract, as azureml_inference_server_http.api ships it: the decorator sets a
# module flag the server reads, and AMLResponse is a flask Response. The package is not installed
# here, so the code folder carries these few lines of it, as a user's environment would carry it.
AML_REQUEST = '''
_rawHttpRequested = False


def rawhttp(func):
    global _rawHttpRequested
    _rawHttpRequested = True
    return func
'''
AML_RESPONSE = '''
from flask import Response


class AMLResponse(Response):
    def __init__(self, message, status_code, response_headers={}, json_str=False):
        super().__init__(message, status=status_code)
        for header, value in response_headers.items():
            self.headers[header] = value
'''
RAW = '''
from azureml_inference_server_http.api.aml_request import rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    if request.method == "GET":
        return {"args": request.args.to_dict()}
    return AMLResponse(request.get_data()[::-1], 200, {"Content-Type": "application/octet-stream"})
'''


def test_rawhttp_run_gets_the_request_and_may_answer_bytes(tmp_path):
    package = "azureml_inference_server_http/"
    code = write_code(tmp_path / "code", RAW, **{
        package + "__init__.py": "", package + "api/__init__.py": "",
        package + "api/aml_request.py": AML_REQUEST, package + "api/aml_response.py": AML_RESPONSE})
    server = script_server(tmp_path / "server", code, tmp_path)
    try:
        wait_ready_file(server)
        response = send(server, b"\x89PNG\xff\x00", **{"x-request-id": "raw-1"})
        assert response.status_code == 200
        assert response.content == b"\x00\xffGNP\x89"
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["x-request-id"] == "raw-1"
        got = requests.get(server.url + "/score", params={"q": "1"})
        assert got.json() == {"args": {"q": "1"}}
    finally:
        server.stop()


# inference-schema as the server sees it: @input_schema records the function and
# schema_util.is_schema_decorated says so (the real package also converts each argument). Not
# installed here, so the code folder carries these lines of it.
SCHEMA_UTIL = '''
decorated = set()


def is_schema_decorated(func):
    return func in decorated
'''
SCHEMA_DECORATORS = '''
from inference_schema.schema_util import decorated


def input_schema(param_name, param_type):
    def decorate(func):
        decorated.add(func)
        return func
    return decorate
'''
SCHEMA = '''
from inference_schema.schema_decorators import input_schema


def init():
    pass


@input_schema("data", None)
def run(data, scale=2, request_headers=None):
    return {"scaled": [x * scale for x in data], "has_headers": bool(request_headers)}
'''


def test_an_input_schema_decorated_run_gets_the_json_keys_as_arguments(tmp_path):
    code = write_code(tmp_path / "code", SCHEMA, **{
        "inference_schema/__init__.py": "", "inference_schema/schema_util.py": SCHEMA_UTIL,
        "inference_schema/schema_decorators.py": SCHEMA_DECORATORS})
    server = script_server(tmp_path / "server", code, tmp_path)
    try:
        wait_ready_file(server)
        assert server.post(body={"data": [1, 2]}).json() == {"scaled": [2, 4], "has_headers": True}
        assert server.post(body={"data": [1], "scale": 3, "extra": 0}).json()["scaled"] == [3]
        got = requests.get(server.url + "/score", params={"data": "[1, 2]", "scale": "5"})
        assert got.json()["scaled"] == [5, 10]
        for kwargs, status, message in [
                ({"body": {"scale": 3}}, 400, "A value is not provided for the 'data' parameter."),
                ({"data": "[1]", "headers": {"Content-Type": "application/json"}}, 400,
                 "POST body should be a JSON dictionary."),
                ({"data": "", "headers": {"Content-Type": "application/json"}}, 400,
                 "POST body is empty. Expecting a JSON dictionary."),
                ({"data": '{"data": [1]}', "headers": {"Content-Type": "text/plain"}}, 415,
                 "Expects Content-Type to be application/json")]:
            response = server.post(**kwargs)
            assert (response.status_code, response.json()["message"]) == (status, message)
        assert requests.get(server.url + "/version").json()["run_input"] == "schema"
    finally:
        server.stop()
