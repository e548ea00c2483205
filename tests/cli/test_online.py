"""`mlflow-deploy online-endpoint` and `online-deployment` as an `az ml` user drives them: the
same YAML files and flags, through the real console script, against real gateways and servers."""
import json
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import requests

from mlflow_deploy import logs, processes
from mlflow_deploy.online import traffic
from mlflow_deploy.scoring import logfile
from tests.connections import wait_until
from tests.online.fixtures import private_home, server_pids_under

pytestmark = pytest.mark.slow

SPLIT = {"input_data": {"columns": ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"],
                        "data": [[0.038, 0.05, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002,
                                  0.019, -0.017]]}}


@pytest.fixture
def deploy_home(tmp_path, monkeypatch):
    yield from private_home(tmp_path, monkeypatch)


MLFLOW_DEPLOY = os.path.join(os.path.dirname(sys.executable), "mlflow-deploy")


def cli(*args, check=True):
    done = subprocess.run([MLFLOW_DEPLOY, *args], capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_endpoint_and_deployments_from_azure_yaml(deploy_home, example_model_dirs, tmp_path,
                                                  monkeypatch):
    # small enough that the requests of check_logs rotate blue's log
    monkeypatch.setenv(logfile.MAX_BYTES_ENV, str(LOG_LIMIT))
    model = example_model_dirs["diabetes"]
    (tmp_path / "endpoint.yml").write_text(textwrap.dedent("""\
        $schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json
        name: diab-ep
        auth_mode: key
        description: diabetes
        tags: {team: ml}
    """))
    (tmp_path / "blue.yml").write_text(textwrap.dedent(f"""\
        $schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
        name: blue
        endpoint_name: diab-ep
        model:
          path: {os.path.relpath(model, tmp_path)}
        instance_type: Standard_DS3_v2
        instance_count: 1
        request_settings:
          request_timeout_ms: 3000
          max_concurrent_requests_per_instance: 4
        environment_variables:
          WORKER_COUNT: 2
        liveness_probe:
          period: 2
        readiness_probe:
          failure_threshold: 5
        app_insights_enabled: true
    """))
    created = json.loads(cli("online-endpoint", "create", "-f", str(tmp_path / "endpoint.yml"),
                             "--local").stdout)
    assert created["name"] == "diab-ep" and created["auth_mode"] == "key"
    made = cli("online-deployment", "create", "-f", str(tmp_path / "blue.yml"), "--all-traffic")
    blue = json.loads(made.stdout)
    assert blue["traffic"] == 100 and blue["worker_count"] == 2
    workers = [p for p in processes.pids() if processes.stat_field(p, processes.PPID) == blue["pid"]]
    assert len(workers) == 2  # WORKER_COUNT, as azmlinfsrv reads it
    assert blue["config"]["request_timeout_ms"] == 3000
    # the gateway probes by these (given fields over the local defaults)
    assert blue["config"]["liveness_probe"]["period"] == 2
    assert blue["config"]["readiness_probe"] == {"initial_delay": 0, "period": 1, "timeout": 2,
                                                 "failure_threshold": 5, "success_threshold": 1}
    gateway = json.loads((deploy_home.endpoint_dir("diab-ep") / "gateway.json").read_text())
    assert gateway["deployments"]["blue"]["liveness"]["period"] == 2
    # the gateway reaches the instance on its Unix socket, in a folder only its owner enters
    socket_path = gateway["deployments"]["blue"]["upstreams"][0][len("unix:"):]
    assert os.stat(os.path.dirname(socket_path)).st_mode & 0o777 == 0o700
    assert "app_insights_enabled" in made.stderr and "instance_type" in made.stderr
    green = json.loads(cli("online-deployment", "create", "-f", str(tmp_path / "blue.yml"),
                           "--set", "name=green", "--set",
                           "request_settings.request_timeout_ms=4000", "--set",
                           "tags.mlflow-deploy/max_request_mb=2").stdout)
    assert green["traffic"] == 0 and green["config"]["request_timeout_ms"] == 4000
    # --set alone changes what it names, the rest of the deployment kept (as az ml does); two
    # such updates at once both land: each changes the deployment as the other left it
    updates = [subprocess.Popen([MLFLOW_DEPLOY, "online-deployment", "update", "-n", "green",
                                 "-e", "diab-ep", "--set", item, "--set", also],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for item, also in (("environment_variables.EXTRA=1", "liveness_probe.timeout=3"),
                                  ("environment_variables.MORE=2", "liveness_probe.period=2"))]
    for update in updates:
        assert update.wait(timeout=600) == 0, update.stderr.read()[-3000:]
        update.stderr.close()
    kept = {**green["config"],
            "environment_variables": {"WORKER_COUNT": "2", "EXTRA": "1", "MORE": "2"},
            "liveness_probe": {**green["config"]["liveness_probe"], "timeout": 3}}
    assert green["config"]["max_request_mb"] == 2 and kept["liveness_probe"]["period"] == 2

    keys = json.loads(cli("online-endpoint", "get-credentials", "-n", "diab-ep").stdout)
    assert set(keys) == {"primaryKey", "secondaryKey"}
    shown = json.loads(cli("online-endpoint", "show", "-n", "diab-ep").stdout)
    assert keys["primaryKey"] not in json.dumps(shown)
    answer = requests.post(shown["scoring_uri"], json=SPLIT, timeout=30,
                           headers={"Authorization": "Bearer " + keys["secondaryKey"]})
    assert answer.status_code == 200 and answer.headers["azureml-model-deployment"] == "blue"

    request = tmp_path / "request.json"
    request.write_text(json.dumps(SPLIT))
    invoked = json.loads(cli("online-endpoint", "invoke", "-n", "diab-ep", "--request-file",
                             str(request), "--deployment-name", "green").stdout)
    assert invoked == answer.json()
    bad = tmp_path / "bad.json"
    bad.write_text('{"input_data": {"columns": ["age"], "data": [[1.0]]}}')
    failed = cli("online-endpoint", "invoke", "-n", "diab-ep", "-r", str(bad), check=False)
    assert failed.returncode != 0 and failed.stderr.count("\n") == 1
    assert failed.stderr.startswith("Error: 424 (the deployment answered 400): ")

    updated = json.loads(cli("online-endpoint", "update", "-n", "diab-ep", "--traffic",
                             "blue=90 green=10").stdout)
    assert updated["traffic"] == {"blue": 90, "green": 10} and updated["auth_mode"] == "key"
    refused = cli("online-endpoint", "update", "-n", "diab-ep", "--traffic", "blue=90 green=10",
                  "--mirror-traffic", "green=10", check=False)
    assert refused.returncode == 2 and "also has live traffic" in refused.stderr
    listed = json.loads(cli("online-deployment", "list", "-e", "diab-ep").stdout)
    assert sorted(d["name"] for d in listed) == ["blue", "green"]
    assert [(d["config"], d["revision"]) for d in listed if d["name"] == "green"] == [
        (kept, green["revision"] + 2)]
    check_logs(deploy_home, blue, shown["scoring_uri"], keys["primaryKey"])

    still = cli("online-deployment", "delete", "-n", "green", "-e", "diab-ep", "--yes",
                check=False)
    assert still.returncode != 0 and "traffic" in still.stderr
    cli("online-endpoint", "update", "-n", "diab-ep", "--traffic", "blue=100 green=0")
    cli("online-endpoint", "regenerate-keys", "-n", "diab-ep", "--key-type", "secondary")
    assert requests.post(shown["scoring_uri"], json=SPLIT, timeout=30, headers={
        "Authorization": "Bearer " + keys["secondaryKey"]}).status_code == 401
    cli("online-deployment", "delete", "-n", "green", "-e", "diab-ep", "--yes")
    assert [e["state"] for e in json.loads(cli("online-endpoint", "list").stdout)] == ["Running"]
    cli("online-endpoint", "delete", "-n", "diab-ep", "--yes")
    assert server_pids_under(deploy_home.home) == []


LOG_LIMIT = 4096


def check_logs(store, blue, scoring_uri, key):
    """`get-logs` shows each request's line (the request id the client got, the 400's reason),
    `--follow` prints a request made after it began, across a rotation of the log, and the
    gateway wrote its own line."""
    log_path = blue["instances"][0]["log_path"]
    headers = {"Authorization": "Bearer " + key, "azureml-model-deployment": "blue"}
    follow = subprocess.Popen([MLFLOW_DEPLOY, "online-deployment", "get-logs", "-n", "blue", "-e",
                               "diab-ep", "--lines", "1", "--follow"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = Lines(follow.stdout)
        lines.until(lambda line: True)  # the last line so far: it follows from here
        copy = rotated_copy(log_path)
        for _ in range(LOG_LIMIT // 100):  # an access line is longer than 100 bytes
            requests.get("http://127.0.0.1:{}/ping".format(blue["port"]), timeout=30)
        wait_until(lambda: rotated_copy(log_path) != copy, timeout=30, message="not rotated")
        ok = requests.post(scoring_uri, json=SPLIT, headers=headers, timeout=30)
        bad = requests.post(scoring_uri, headers=headers, timeout=30,
                            json={"input_data": {"columns": ["age"], "data": [[1.0]]}})
        assert (ok.status_code, bad.status_code) == (200, 424)
        lines.until(lambda line: bad.headers["x-request-id"] in line)
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=30) == 0 and follow.stderr.read() == ""
    finally:
        follow.kill()
        follow.wait()
    last = cli("online-deployment", "get-logs", "-n", "blue", "-e", "diab-ep", "--lines", "5")
    ok_line, = [line for line in last.stdout.splitlines() if ok.headers["x-request-id"] in line]
    bad_line, = [line for line in last.stdout.splitlines() if bad.headers["x-request-id"] in line]
    assert "method=POST route=/score status=200 latency_ms=" in ok_line
    reason = bad.json()["message"]  # the deployment's 400, inside the gateway's 424
    assert "route=/score status=400" in bad_line and \
        bad_line.endswith(" reason=" + json.dumps(reason))
    gateway_log = logs.tail(traffic.gateway_paths(store, "diab-ep")[1])[0]
    assert any(bad.headers["x-request-id"] in line and "deployment=blue status=424" in line and
               line.endswith("upstream_status=400") for line in gateway_log)
    # the access lines (written apart from logging) and the others share one format
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[gateway \d+\] INFO "
    assert all(re.match(stamp, line) for line in gateway_log)
    assert len({re.search(r"\[gateway (\d+)\]", line).group(1)
                for line in gateway_log}) == 1  # one gateway: one pid
    assert any(re.match(stamp + "access ", line) for line in gateway_log) and \
        any(re.match(stamp + "(?!access )", line) for line in gateway_log)


def rotated_copy(path):
    try:
        return os.stat(logfile.rotated(path, 1)).st_ino
    except FileNotFoundError:
        return None


class Lines:
    """A child's output, line by line as it comes, read with a deadline."""

    def __init__(self, stream):
        self.queue = queue.Queue()
        threading.Thread(target=lambda: [self.queue.put(line) for line in stream],
                         daemon=True).start()

    def until(self, wanted, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            line = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            if wanted(line):
                return line


def test_yaml_errors_are_one_line_naming_file_and_line(deploy_home, tmp_path):
    bad = tmp_path / "endpoint.yml"
    bad.write_text("name: diab-ep\nauth_mode: key\ncolour: SECRET-VALUE\n")
    failed = cli("online-endpoint", "create", "-f", str(bad), check=False)
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1
    assert "endpoint.yml:3" in failed.stderr and "colour" in failed.stderr
    assert "SECRET-VALUE" not in failed.stderr
    deployment = tmp_path / "blue.yml"
    deployment.write_text("name: blue\nendpoint_name: diab-ep\nmodel: {path: ./m}\n"
                          "instance_count: 30\n")
    failed = cli("online-deployment", "create", "-f", str(deployment), check=False)
    assert failed.returncode == 2 and "instance_count" in failed.stderr
    assert json.loads(cli("online-endpoint", "list").stdout) == []
