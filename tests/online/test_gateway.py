"""An endpoint's gateway, end to end: real gateways in front of real deployments of real logged
models. Two pyfunc models answer the same question (x -> 2x): blue always right, green wrong on
known rows, failing, or slow on others, so routing, mirroring and every status can be told apart
by the answer alone."""
import gzip
import json
import os
import signal
import socket
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
import requests

from example_models.build import shared_requirements
from mlflow_deploy import online, processes
from mlflow_deploy.online import endpoints as _endpoints
from mlflow_deploy.online import frontend, instances, supervisor
from mlflow_deploy.errors import InvalidState, PredictionFailed
from tests import prometheus
from tests.connections import wait_until
from tests.online.load import SteadyLoad

pytestmark = pytest.mark.slow

DOUBLER = textwrap.dedent('''
    import time

    import mlflow.models
    import mlflow.pyfunc

    WRONG_ON, NOISY_ON, FAILS_ON, SLOW_ON = {wrong}, {noisy}, {fails}, {slow}


    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            out = []
            for x in model_input["x"]:
                if x in FAILS_ON:
                    raise RuntimeError("this deployment fails on this row")
                if x in SLOW_ON:
                    time.sleep(3)
                y = 2.0 * x
                if x in WRONG_ON:
                    y += 1.0
                if x in NOISY_ON:
                    y *= 1.0 + 1e-9
                out.append(y)
            return out


    mlflow.models.set_model(Doubler())
''')
WRONG, NOISY, FAILS, SLOW = 13.0, 7.0, -2.0, -1.0


def save_doubler(root, name, **rows):
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    values = {key: "{%r}" % rows[key] if key in rows else "set()"
              for key in ("wrong", "noisy", "fails", "slow")}
    folder = root / name
    folder.mkdir()
    (folder / "doubler.py").write_text(DOUBLER.format(**values))
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    mlflow.pyfunc.save_model(str(folder / "model"), python_model=str(folder / "doubler.py"),
                             signature=infer_signature(frame, [2.0, 4.0]),
                             pip_requirements=shared_requirements())
    return str(folder / "model")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("doublers")
    return {
        "right": save_doubler(root, "right", slow=SLOW),
        "green": save_doubler(root, "green", wrong=WRONG, noisy=NOISY, fails=FAILS, slow=SLOW),
    }


def body(*xs):
    return {"input_data": {"columns": ["x"], "data": [[x] for x in xs]}}


LOADED = {"max_concurrent_requests_per_instance": "8",
          "environment_variables": {"WORKER_COUNT": "2"}}


def two_deployments(models, traffic="blue=90 green=10", green_model="green", **endpoint):
    created = online.create_endpoint("ept", config=endpoint or None)
    online.create_deployment("blue", models["right"], endpoint="ept", config=LOADED)
    online.create_deployment("green", models[green_model], endpoint="ept", config=LOADED)
    if traffic:
        online.update_endpoint("ept", config={"traffic": traffic})
    return created


def auth(key):
    return {"Authorization": "Bearer " + key}


def test_endpoint_with_keys_splits_traffic_and_routes_by_header(deploy_home, models):
    created = two_deployments(models)
    uri = created["scoring_uri"]
    assert created["auth_mode"] == "key" and created["openapi_uri"].endswith("/swagger.json")
    keys = online.get_endpoint("ept")
    assert "primaryKey" not in str(keys)  # show never carries the keys
    keys = _endpoints.get_credentials("ept")
    assert set(keys) == {"primaryKey", "secondaryKey"} and keys["primaryKey"] != keys["secondaryKey"]
    key_file = deploy_home.endpoint_dir("ept") / "keys.json"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert oct(key_file.parent.stat().st_mode & 0o777) == "0o700"

    answered = {"blue": 0, "green": 0}

    def one(_):
        answer = requests.post(uri, json=body(1.0), headers=auth(keys["primaryKey"]), timeout=30)
        assert answer.status_code == 200 and answer.json() == [2.0]
        return answer.headers["azureml-model-deployment"]

    with ThreadPoolExecutor(8) as pool:
        for name in pool.map(one, range(2000)):
            answered[name] += 1
    # green's share of 2000 draws at p = 0.1: mean 200, sd 13.4; 5 sd either side
    assert 133 <= answered["green"] <= 267, answered

    # the endpoint's /metrics, under its key: the gateway's counts and each instance's own
    metrics_uri = uri.replace("/score", "/metrics")
    assert requests.get(metrics_uri, timeout=30).status_code == 401
    scrape = requests.get(metrics_uri, headers=auth(keys["primaryKey"]), timeout=30)
    assert scrape.status_code == 200 and scrape.headers["Content-Type"].startswith("text/plain")
    scraped = prometheus.parse(scrape.text)
    for name, count in answered.items():
        labels = {"endpoint": "ept", "deployment": name}
        assert prometheus.value(scraped, "mlflow_deploy_gateway_requests_total", status="200",
                                **labels) == count
        assert prometheus.value(scraped, "mlflow_deploy_gateway_request_duration_seconds_count",
                                **labels) == count
        assert prometheus.value(scraped, "mlflow_deploy_gateway_traffic_weight", **labels) == \
            {"blue": 90, "green": 10}[name]
        # the instance's own scrape, labelled: what the gateway sent it and its self-test
        assert prometheus.total(scraped, "mlflow_deploy_requests_total", deployment=name,
                                instance="0", route="score") == count + 1
    assert prometheus.value(scraped, "mlflow_deploy_gateway_refused_total", endpoint="ept",
                            status="401") == 1

    header = {**auth(keys["secondaryKey"]), "azureml-model-deployment": "green"}
    for _ in range(20):
        answer = requests.post(uri, json=body(WRONG), headers=header, timeout=30)
        assert answer.headers["azureml-model-deployment"] == "green"
        assert answer.json() == [2 * WRONG + 1]
    # the request id passes both hops and comes back
    answer = requests.post(uri, json=body(1.0), timeout=30,
                           headers={**auth(keys["primaryKey"]), "x-request-id": "trace-1"})
    assert answer.headers["x-request-id"] == "trace-1"
    assert online.predict(None, body(1.0), endpoint="ept") == [2.0]  # the key sent for the user
    assert online.predict("green", body(WRONG), endpoint="ept") == [2 * WRONG + 1]


def test_every_status_of_the_router(deploy_home, models):
    created = online.create_endpoint("ept")
    uri = created["scoring_uri"]
    key = _endpoints.get_credentials("ept")["primaryKey"]
    online.create_deployment("blue", models["right"], endpoint="ept",
                             config={"request_timeout_ms": "1000", "max_request_mb": "1"})
    answer = requests.post(uri, json=body(1.0), headers=auth(key), timeout=30)
    assert answer.status_code == 404  # a new deployment of an existing endpoint takes no traffic
    assert answer.json()["message"] == (
        "The endpoint doesn't have any valid deployment with positive weight.")
    online.update_endpoint("ept", config={"traffic": "blue=100"})

    for headers in ({}, auth("wrong-key"), {"Authorization": key}):
        answer = requests.post(uri, json=body(1.0), headers=headers, timeout=30)
        assert answer.status_code == 401 and key not in answer.text
    answer = requests.post(uri, json=body(1.0), timeout=30,
                           headers={**auth(key), "azureml-model-deployment": "ghost"})
    assert answer.status_code == 404 and "ghost" not in answer.text

    answer = requests.post(uri, json={"input_data": {"columns": ["y"], "data": [[1.0]]}},
                           headers=auth(key), timeout=30)
    assert answer.status_code == 424
    assert answer.headers["ms-azureml-model-error-statuscode"] == "400"
    assert answer.headers["ms-azureml-model-error-reason"] == "model_error"
    assert "'x'" in answer.json()["message"]  # the deployment's own message, passed on
    with pytest.raises(PredictionFailed, match=r"^424 \(the deployment answered 400\)"):
        online.predict(None, {"input_data": {"columns": ["y"], "data": [[1.0]]}}, endpoint="ept")
    # an encoded body reaches the deployment as sent, which refuses it as Azure's server would
    answer = requests.post(uri, data=gzip.compress(json.dumps(body(1.0)).encode()), timeout=30,
                           headers={**auth(key), "Content-Type": "application/json",
                                    "Content-Encoding": "gzip"})
    assert answer.status_code == 424
    assert answer.headers["ms-azureml-model-error-statuscode"] == "415"

    answer = requests.post(uri, data=b"x" * (1024 * 1024 + 1), headers=auth(key), timeout=30)
    assert answer.status_code == 413

    started = time.monotonic()
    answer = requests.post(uri, json=body(SLOW), headers=auth(key), timeout=30)
    elapsed = time.monotonic() - started
    assert answer.status_code == 408 and 0.9 <= elapsed < 5.0, elapsed
    # the instance itself gives up later (the gateway's 408 never races its 504), and recycles
    # the stuck worker then
    direct = f"http://127.0.0.1:{deploy_home.get_deployment('blue').port}/score"
    started = time.monotonic()
    answer = requests.post(direct, json=body(SLOW), timeout=30)
    elapsed = time.monotonic() - started
    # the upper bound only says it is not left hanging: a loaded machine adds seconds
    assert answer.status_code == 504 and 1.4 <= elapsed < 6.0, elapsed
    assert answer.json()["message"] == "Scoring timeout after 1500 ms"

    # one instance, max_concurrent_requests_per_instance 1: a third request in flight is a 429
    with ThreadPoolExecutor(3) as pool:
        statuses = sorted(pool.map(
            lambda _: requests.post(uri, json=body(SLOW), headers=auth(key), timeout=30)
            .status_code, range(3)))
    assert 429 in statuses, statuses

    deployment = deploy_home.get_deployment("blue")
    os.killpg(os.getpgid(deployment.pid), signal.SIGKILL)
    answer = requests.post(uri, json=body(1.0), headers=auth(key), timeout=30)
    assert answer.status_code == 502


def test_key_rotation(deploy_home, models):
    created = online.create_deployment("blue", models["right"])  # an implicit endpoint: 100 %
    uri = online.get_endpoint("blue")["scoring_uri"]
    assert created["traffic"] == 100
    old = _endpoints.get_credentials("blue")
    _endpoints.regenerate_keys("blue", "primary")
    new = _endpoints.get_credentials("blue")
    assert new["secondaryKey"] == old["secondaryKey"] and new["primaryKey"] != old["primaryKey"]
    assert requests.post(uri, json=body(1.0), headers=auth(old["primaryKey"]),
                         timeout=30).status_code == 401
    for key in (new["primaryKey"], old["secondaryKey"]):
        assert requests.post(uri, json=body(1.0), headers=auth(key), timeout=30).status_code == 200


def test_mirror_reports_agreement_and_never_reaches_the_caller(deploy_home, models):
    created = two_deployments(models, traffic="blue=100", auth_mode="none")
    uri = created["scoring_uri"]
    online.update_endpoint("ept", config={"mirror_traffic": "green=50"})
    with pytest.raises(Exception, match="live and mirrored"):
        online.update_endpoint("ept", config={"traffic": "blue=50 green=50"})
    rows = [1.0, 2.0, WRONG, NOISY, FAILS, 3.0, 4.0, 5.0] * 50
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda x: requests.post(uri, json=body(x), timeout=30), rows))
    assert all(a.status_code == 200 for a in answers)  # green's failures never reach a caller
    assert [a.json() for a in answers] == [[2.0 * x] for x in rows]

    def report(rtol=None):
        return _endpoints.mirror_report("ept", rtol=rtol)["green"]

    deadline = time.monotonic() + 30
    while True:  # the copies finish after their callers were answered
        now = report()
        settled = now["compared"] + sum(now["mirror_errors"].values()) + now["live_errors"]
        if settled == now["requests_mirrored"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert settled == now["requests_mirrored"]
    # green's share of 400 draws at p = 0.5: 200 +- 5 sd
    assert 150 <= now["requests_mirrored"] <= 250, now
    # a copy of a FAILS row fails at green (500), one of a WRONG row differs at any tolerance,
    # one of a NOISY row only below 1e-9
    failed = now["mirror_errors"].get("500", 0)
    strict, loose = report(rtol=0.0), report(rtol=1e-6)
    assert 0 < failed < now["requests_mirrored"] / 4
    wrong = loose["differing"]
    noisy = strict["differing"] - wrong
    assert wrong > 0 and noisy > 0
    assert strict["compared"] == loose["compared"] == now["requests_mirrored"] - failed
    assert loose["identical"] == strict["agreeing"]
    assert loose["agreeing"] + loose["differing"] == loose["compared"]
    assert loose["latency_ms"]["mirror"]["p99"] is not None
    assert len(loose["first_differing_request_ids"]) > 0

    # a slow or dead mirror costs the caller nothing
    started = time.monotonic()
    for _ in range(10):
        assert requests.post(uri, json=body(2.0), timeout=30).status_code == 200
    assert time.monotonic() - started < 3.0
    green = deploy_home.get_deployment("green")
    os.killpg(os.getpgid(green.pid), signal.SIGKILL)
    for _ in range(20):
        assert requests.post(uri, json=body(2.0), timeout=30).status_code == 200


def test_lifecycle_changes_under_load_fail_no_request(deploy_home, models):
    created = online.create_endpoint("ept", config={"auth_mode": "none"})
    uri = created["scoring_uri"]
    blue = online.create_deployment("blue", models["right"], endpoint="ept",
                                    config={**LOADED, "all_traffic": "true"})
    with SteadyLoad(uri, body(2.0), expect=[4.0]) as load:
        load.served_more()
        online.create_deployment("green", models["right"], endpoint="ept", config=LOADED)
        load.served_more()
        online.update_endpoint("ept", config={"traffic": "blue=50 green=50"})
        load.served_more()
        online.update_deployment("green", config={"request_timeout_ms": "4000"})
        load.served_more()
        online.update_endpoint("ept", config={"traffic": "green=100"})
        load.served_more()
        with pytest.raises(InvalidState, match="traffic"):
            online.delete_deployment("green", endpoint="ept")
        online.delete_deployment("blue", endpoint="ept")
        assert supervisor.port_is_free(blue["port"])  # the gateway serving on released it
        load.served_more()
    assert load.failed == [] and load.ok > 100


def trickle_headers(slow, seconds, stop):
    """Each of the connections ``slow`` sends one more byte of its headers every 0.5 s, for
    ``seconds`` (or until ``stop`` is set)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop.is_set():
        for sock in slow:
            sock.sendall(b"a")
        stop.wait(0.5)


def test_slow_clients_never_hold_a_worker(deploy_home, models):
    """Clients that trickle their headers, at the endpoint's port and at the deployment's own,
    and 100 that send their headers and then trickle their bodies: the gateway holds them all,
    and a deployment with one worker keeps answering everybody else at once, on both ports."""
    created = online.create_deployment("blue", models["right"])
    online.update_endpoint("blue", config={"auth_mode": "none"})
    uri = online.get_endpoint("blue")["scoring_uri"]
    port = int(uri.split(":")[2].split("/")[0])
    stop = threading.Event()
    trickling = [socket.create_connection(("127.0.0.1", p), timeout=10)
                 for p in (port, created["port"]) for _ in range(20)]
    try:
        for sock in trickling:  # connected first: a sync worker would be theirs now
            sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        with ThreadPoolExecutor(1) as pool:
            slowed = pool.submit(trickle_headers, trickling, 5.0, stop)
            try:
                while not slowed.done():
                    for target in (uri, created["scoring_uri"]):
                        started = time.monotonic()
                        answer = requests.post(target, json=body(1.0), timeout=10)
                        assert answer.status_code == 200 and answer.json() == [2.0]
                        assert time.monotonic() - started < 1.0, target
            finally:
                stop.set()
            slowed.result()
    finally:
        for sock in trickling:
            sock.close()
    payload = b'{"input_data": {"columns": ["x"], "data": [[1.0]]}}'
    slow = []
    try:
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(payload) + payload[:5])
            slow.append(sock)
        for _ in range(20):
            started = time.monotonic()
            answer = requests.post(uri, json=body(1.0), timeout=10)
            assert answer.status_code == 200 and time.monotonic() - started < 2.0
        for sock in slow:  # and the slow ones are served once their bodies are complete
            sock.sendall(payload[5:])
        first = slow[0].recv(4096)
        assert first.startswith(b"HTTP/1.1 200")
    finally:
        for sock in slow:
            sock.close()


def test_restart_after_every_process_is_gone(deploy_home, models):
    created = online.create_deployment("blue", models["right"])
    before = online.get_endpoint("blue")
    keys = _endpoints.get_credentials("blue")
    endpoint = deploy_home.get_endpoint("blue")
    deployment = deploy_home.get_deployment("blue")
    for pid in (endpoint.pid, deployment.pid):  # a reboot, as far as our processes go
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    deadline = time.monotonic() + 10

    def states():
        return online.get_endpoint("blue")["state"], online.get_deployment("blue")["state"]

    while states() != ("Stopped", "Dead") and time.monotonic() < deadline:
        time.sleep(0.05)  # SIGKILL'ed processes take a moment to go
    assert states() == ("Stopped", "Dead")
    assert [e["state"] for e in online.list_endpoints()] == ["Stopped"]
    while not supervisor.port_is_free(deployment.port) and time.monotonic() < deadline:
        time.sleep(0.05)  # what the kernel keeps of the killed gateway's connections
    with socket.socket() as squatter:  # another program took the deployment's port meanwhile
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", deployment.port))
        squatter.listen()
        with pytest.raises(InvalidState, match=f"^The port {deployment.port} of deployment blue "
                                               "is taken by another program; stop it"):
            _endpoints.start_endpoint("blue")
    started = _endpoints.start_endpoint("blue")  # the port is free again: the gateway takes it
    assert started["scoring_uri"] == before["scoring_uri"] and started["state"] == "Running"
    assert _endpoints.get_credentials("blue") == keys
    answer = requests.post(started["scoring_uri"], json=body(1.0), headers=auth(keys["primaryKey"]),
                           timeout=30)
    assert answer.status_code == 200 and answer.json() == [2.0]
    answer = requests.post(created["scoring_uri"], json=body(1.0), timeout=30)
    assert answer.status_code == 200 and answer.json() == [2.0]



def test_deleting_needs_no_gateway_when_its_port_was_taken_after_a_reboot(deploy_home, models):
    """Every process gone and another program on the endpoint's port: deleting a deployment,
    then the endpoint, stops and removes what is left without starting the gateway (it could
    not start), and leaves the other program's port alone."""
    online.create_endpoint("ept", config={"auth_mode": "none"})
    for name in ("blue", "green"):
        online.create_deployment(name, models["right"], endpoint="ept",
                                 config={"all_traffic": "true"} if name == "blue" else {})
    endpoint = deploy_home.get_endpoint("ept")
    for pid in [endpoint.pid] + [d.pid for d in deploy_home.list_deployments("ept")]:
        os.killpg(os.getpgid(pid), signal.SIGKILL)  # a reboot, as far as our processes go
    wait_until(lambda: supervisor.port_is_free(endpoint.port), timeout=10,
               message="the killed gateway's port stayed taken")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", endpoint.port))
        squatter.listen()
        online.delete_deployment("green", endpoint="ept")
        assert [d.name for d in deploy_home.list_deployments("ept")] == ["blue"]
        online.delete_endpoint("ept")
        assert deploy_home.find_endpoint("ept") is None
        assert deploy_home.list_deployments() == []
        with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5):
            pass  # still the other program's


def test_instances_serve_apart_and_one_killed_is_restarted_failing_no_request(deploy_home,
                                                                               models):
    """Two instances, each its own process tree: one killed with SIGKILL under load, the gateway
    sends everything to the other (a refused connection never reached a server), its liveness
    probe fails and the gateway restarts it on its port, and readiness lets it back in."""
    created = online.create_deployment("blue", models["right"],
                                       config={"instance_count": "2", **LOADED})
    first, second = created["instances"]
    assert first["port"] != second["port"] and created["state"] == "Running"
    groups = {os.getpgid(first["pid"]), os.getpgid(second["pid"])}
    assert len(groups) == 2
    online.update_endpoint("blue", config={"auth_mode": "none"})
    uri = online.get_endpoint("blue")["scoring_uri"]
    for _ in range(40):  # least outstanding requests, ties at random: both take some
        answer = requests.post(uri, json=body(1.0), timeout=30)
        assert answer.status_code == 200
    for instance in (first, second):
        direct = requests.post(f"http://127.0.0.1:{instance['port']}/score", json=body(1.0),
                               headers={"x-request-id": f"direct-{instance['index']}"},
                               timeout=30)
        assert direct.status_code == 200
    # each instance's log has its own request's line (written once the answer is sent)
    def logged():
        return {index for index, line in online.deployment_logs("blue", lines=5)
                if f"request_id=direct-{index} " in line}

    deadline = time.monotonic() + 10
    while logged() != {0, 1}:
        assert time.monotonic() < deadline, online.deployment_logs("blue", lines=5)
        time.sleep(0.05)

    with SteadyLoad(uri, body(2.0), threads=3) as load:
        load.served_more(30)
        # between two requests of its own, so none in flight there is lost with it
        os.killpg(os.getpgid(second["pid"]), signal.SIGKILL)
        load.served_more(100)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shown = online.get_deployment("blue")
            if shown["instances"][1]["pid"] != second["pid"] and shown["state"] == "Running":
                break
            time.sleep(0.1)
        load.served_more(30)
    # a request in flight at the killed instance may be lost; none sent after it
    assert len(load.failed) <= 3 and all(f[0] == 502 for f in load.failed), load.failed
    assert [i["state"] for i in shown["instances"]] == ["Running", "Running"], shown
    assert shown["instances"][1]["port"] == second["port"]
    direct = requests.post(f"http://127.0.0.1:{second['port']}/score", json=body(1.0), timeout=30)
    assert direct.json() == [2.0]
    log = (deploy_home.home / "logs" / "gateway-blue.log").read_text()
    assert "failed its liveness probe" in log and "serves" in log
    fewer = online.update_deployment("blue", config={"instance_count": "1"})
    assert len(fewer["instances"]) == 1 and supervisor.port_is_free(second["port"])
    assert not os.path.exists(os.path.join(fewer["log_path"], "..", "instances", "1"))
    assert requests.post(uri, json=body(3.0), timeout=30).json() == [6.0]


def test_instance_count_alone_adds_and_removes_instances_restarting_none(deploy_home, models):
    """A scale-up starts one instance from the running revision, and the endpoint sends it
    requests; the running master is not re-exec'd and no revision is made. A scale-down takes
    the instance out of routing before it stops. Under steady load no request fails."""
    created = online.create_deployment("blue", models["right"], config=LOADED)
    online.update_endpoint("blue", config={"auth_mode": "none"})
    uri = online.get_endpoint("blue")["scoring_uri"]

    def served_by_second():
        return any(index == 1 and "request_id=" in line
                   for index, line in online.deployment_logs("blue", lines=5))

    with SteadyLoad(uri, body(1.0), threads=3, expect=[2.0]) as load:
        load.served_more(30)
        more = online.update_deployment("blue", config={"instance_count": "2"})
        deadline = time.monotonic() + 30
        while not served_by_second():
            assert time.monotonic() < deadline, online.deployment_logs("blue", lines=5)
            time.sleep(0.05)
        fewer = online.update_deployment("blue", config={"instance_count": "1"})
        load.served_more(30)
    assert load.failed == [], load.failed
    assert (more["revision"], more["pid"]) == (created["revision"], created["pid"])
    assert [i["state"] for i in more["instances"]] == ["Running", "Running"]
    assert (fewer["revision"], fewer["pid"]) == (created["revision"], created["pid"])
    assert len(fewer["instances"]) == 1 and fewer["instance_count"] == 1
    assert supervisor.port_is_free(more["instances"][1]["port"])


def test_reloads_while_requests_are_in_flight_leave_no_phantom_load(deploy_home, models):
    """The 429 limit counts what is in flight: requests that were in flight across a reload of
    the routing table count down when they finish, or the endpoint would soon refuse all."""
    # 1 instance, 1 concurrent request: the limit is 2 in flight; 2 workers take both at once
    online.create_deployment("blue", models["right"],
                             config={"environment_variables": {"WORKER_COUNT": "2"}})
    online.update_endpoint("blue", config={"auth_mode": "none"})
    uri = online.get_endpoint("blue")["scoring_uri"]
    with ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(requests.post, uri, json=body(SLOW), timeout=30) for _ in range(2)]
        for number in range(3):  # each a reload of the gateway's table
            online.update_endpoint("blue", config={"description": str(number)})
        assert [f.result().status_code for f in slow] == [200, 200]
    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(lambda _: requests.post(uri, json=body(1.0), timeout=30)
                                 .status_code, range(20)))
    assert statuses == [200] * 20


def test_a_hung_instance_loses_its_traffic_then_is_restarted(deploy_home, models):
    """An instance stopped with SIGSTOP accepts connections and answers nothing: its readiness
    probe takes it out of the rotation (every request goes to the other), then its liveness
    probe has the gateway restart it."""
    probes = {"readiness_probe": {"timeout": 1, "failure_threshold": 1},
              "liveness_probe": {"timeout": 1, "failure_threshold": 3}}
    created = online.create_deployment("blue", models["right"],
                                       config={"instance_count": "2", **LOADED, **probes})
    online.update_endpoint("blue", config={"auth_mode": "none"})
    uri = online.get_endpoint("blue")["scoring_uri"]
    hung = created["instances"][1]
    log = deploy_home.home / "logs" / "gateway-blue.log"

    def wait_for_log(text):
        deadline = time.monotonic() + 30
        while text not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert text in log.read_text()

    os.killpg(os.getpgid(hung["pid"]), signal.SIGSTOP)
    try:
        wait_for_log("failed its readiness probe")
        for _ in range(20):
            started = time.monotonic()
            assert requests.post(uri, json=body(1.0), timeout=30).status_code == 200
            assert time.monotonic() - started < 1.0
        wait_for_log("serves")
    finally:
        try:
            os.killpg(os.getpgid(hung["pid"]), signal.SIGCONT)
        except ProcessLookupError:
            pass
    shown = online.get_deployment("blue")
    assert shown["instances"][1]["pid"] != hung["pid"]
    assert [i["state"] for i in shown["instances"]] == ["Running", "Running"]
    direct = requests.post(f"http://127.0.0.1:{hung['port']}/score", json=body(2.0), timeout=30)
    assert direct.json() == [4.0]



def test_an_instance_busy_past_the_health_check_is_running_and_a_hung_one_is_not(
        deploy_home, models):
    """Its one worker busy for longer than the control plane's 2 s health check, an instance
    answers no check, yet is healthy: show says Running, and an invoke that names the deployment
    (which refuses a deployment not Running) is answered. Stopped with SIGSTOP, nothing in
    flight, the same instance is Unhealthy."""
    online.create_deployment("blue", models["right"], config={
        "max_concurrent_requests_per_instance": "2", "request_timeout_ms": "30000",
        "environment_variables": {"WORKER_COUNT": "1"}})
    online.update_endpoint("blue", config={"auth_mode": "none"})
    uri = online.get_endpoint("blue")["scoring_uri"]

    address = instances.instances_of(deploy_home.get_deployment("blue"))[0].address

    # two slow requests in turn keep the worker busy for 6 s
    with ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(requests.post, uri, json=body(SLOW), timeout=60) for _ in range(2)]
        wait_until(lambda: supervisor.liveness(address, timeout=0.5) is None, timeout=30,
                   message="the instance kept answering its health check")
        shown = online.get_deployment("blue")
        assert not all(f.done() for f in slow), "the worker was idle again before the check"
        # checks the deployment's state while the worker is busy, then waits its turn
        invoked = _endpoints.invoke("blue", json.dumps(body(1.0)).encode(),
                                    deployment_name="blue")
        assert [f.result().status_code for f in slow] == [200, 200]
    assert (shown["state"], [i["state"] for i in shown["instances"]]) == ("Running", ["Running"])
    assert invoked == [2.0]

    pid = shown["instances"][0]["pid"]
    os.killpg(os.getpgid(pid), signal.SIGSTOP)
    try:
        hung = online.get_deployment("blue")
    finally:
        os.killpg(os.getpgid(pid), signal.SIGCONT)
    assert (hung["state"], [i["state"] for i in hung["instances"]]) == ("Unhealthy",
                                                                         ["Unhealthy"])
    assert online.get_deployment("blue")["state"] == "Running"


def sockets(pid):
    """How many sockets the process has open: a sync worker holds one more while it serves."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:  # closed meanwhile
            pass
    return count


def test_a_worker_killed_mid_request_is_a_502_and_fails_no_other_request(deploy_home, models):
    """SIGKILL on the worker serving a slow request: its caller gets the gateway's 502 (not a
    reset connection), the other worker goes on serving a steady load that loses nothing, and
    the master's fresh worker serves the next request."""
    online.create_deployment("blue", models["right"], config=LOADED)
    online.update_endpoint("blue", config={"auth_mode": "none"})
    uri = online.get_endpoint("blue")["scoring_uri"]
    master = deploy_home.get_deployment("blue").pid
    workers = processes.children(master)
    assert len(workers) == 2, workers
    idle = {pid: sockets(pid) for pid in workers}
    busy = []

    def serving():
        # the same one worker holding a client connection at two looks apart (a probe's
        # request, on either, lasts a few ms; the slow one 3 s)
        now = [pid for pid in workers if sockets(pid) > idle[pid]]
        if len(now) == 1 and now == busy[-1:]:
            return True
        busy.append(now[0] if len(now) == 1 else None)
        time.sleep(0.1)
        return False

    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(requests.post, uri, json=body(SLOW), timeout=30,
                           headers={"x-request-id": "the-slow-one"})
        wait_until(serving, timeout=10, message="no worker took the slow request")
        victim = busy[-1]
        with SteadyLoad(uri, body(1.0), threads=2, expect=[2.0]) as load:
            load.served_more(20)
            os.kill(victim, signal.SIGKILL)
            answer = slow.result()
            load.served_more(20)
            wait_until(lambda: len(processes.children(master)) == 2
                       and victim not in processes.children(master), timeout=30,
                       message="the master forked no new worker")
            load.served_more(20)
    assert answer.status_code == 502, (answer.status_code, answer.text)
    assert answer.json()["message"] == ("The deployment's instance closed the connection "
                                        "without an answer.")
    assert answer.headers["x-request-id"] == "the-slow-one"
    assert load.failed == [] and load.ok >= 60
    answer = requests.post(uri, json=body(3.0), timeout=30)
    assert answer.status_code == 200 and answer.json() == [6.0]


PAUSER = textwrap.dedent('''
    import os
    import time

    import mlflow.models
    import mlflow.pyfunc


    class Pauser(mlflow.pyfunc.PythonModel):
        """A row x >= 0 pauses x seconds; a row x < 0 first creates the file -x in {marks!r}:
        the test knows its request has reached a worker."""

        def predict(self, context, model_input, params=None):
            for x in model_input["x"]:
                if x < 0:
                    open(os.path.join({marks!r}, str(int(-x))), "w").close()
                else:
                    time.sleep(x)
            return [0.0] * len(model_input)


    mlflow.models.set_model(Pauser())
''')


def test_a_request_never_waits_behind_another_on_a_busy_worker_while_one_is_free(
        deploy_home, tmp_path):
    """Two workers, each keeping one connection of the gateway. A long request sent while both
    were busy came on a new connection, and the first worker free took it; that worker's kept
    connection then waits idle in the gateway. A short request sent now must not go there,
    behind the long one: it waits for whichever worker is free first (the other, once its own
    request is done), as it would in a sync worker's shared queue."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "pauser.py").write_text(PAUSER.format(marks=str(marks)))
    mlflow.pyfunc.save_model(str(tmp_path / "model"), python_model=str(tmp_path / "pauser.py"),
                             signature=infer_signature(pd.DataFrame({"x": [1.0]}), [0.0]),
                             pip_requirements=shared_requirements())
    online.create_deployment("blue", str(tmp_path / "model"), config=LOADED)
    online.update_endpoint("blue", config={"auth_mode": "none"})
    uri = online.get_endpoint("blue")["scoring_uri"]

    def reached(mark):
        wait_until(lambda: (marks / str(mark)).exists(), timeout=30,
                   message="request {} reached no worker".format(mark))

    with ThreadPoolExecutor(4) as pool:
        def send(*rows):
            return pool.submit(requests.post, uri, json=body(*rows), timeout=60)

        # each worker answers one of two overlapping requests, and keeps that connection
        first = send(-1.0, 1.0)
        reached(1)
        assert send(-2.0).result().status_code == 200
        assert first.result().status_code == 200
        # both kept connections in use: one worker busy for 2 s, the other for 0.5 s
        long_one = send(-3.0, 2.0)
        reached(3)
        medium = send(-4.0, 0.5)
        reached(4)
        # a new connection; the worker done first (the medium one's) takes it, for 4 s
        longer = send(-5.0, 4.0)
        reached(5)
        short = send(0.0)
        answered = short.result()
        assert answered.status_code == 200 and answered.json() == [0.0]
        assert not longer.done(), "the short request waited behind the longer one"
        for future in (long_one, medium, longer):
            assert future.result().status_code == 200


def test_over_long_request_ids_are_a_431_at_the_gateway_never_echoed(deploy_home, models):
    """Azure's limit on the ids its server echoes, applied by the gateway before it forwards:
    the gateway's own answers never carry such an id back either."""
    online.create_deployment("blue", models["right"])
    online.update_endpoint("blue", config={"auth_mode": "none"})
    uri = online.get_endpoint("blue")["scoring_uri"]
    long = "r" * 101
    for name, message in (
            ("x-request-id", "x-request-id must not exceed 100 characters"),
            ("x-ms-client-request-id", "x-ms-request-id and x-ms-client-request-id must not "
                                       "exceed 100 characters"),
            ("x-ms-request-id", "x-ms-request-id and x-ms-client-request-id must not exceed "
                                "100 characters")):
        answer = requests.post(uri, json=body(1.0), headers={name: long}, timeout=30)
        assert answer.status_code == 431 and answer.json() == {"message": message}, answer.text
        assert long not in repr(answer.headers)
        answer = requests.post(uri, json=body(1.0), headers={name: long[:100]}, timeout=30)
        assert answer.status_code == 200 and answer.json() == [2.0]
        if name != "x-ms-request-id":  # the gateway's x-request-id takes its place
            assert answer.headers[name] == long[:100]
    # not even when the instance is gone and the gateway answers by itself
    os.killpg(os.getpgid(deploy_home.get_deployment("blue").pid), signal.SIGKILL)
    answer = requests.post(uri, json=body(1.0), headers={"x-request-id": long}, timeout=30)
    assert answer.status_code == 431 and long not in repr(answer.headers)


def raw_exchange(port, request, body_after_continue=b""):
    """One request written to ``port`` as raw bytes; (head, body) of the answer, read until
    the gateway closes the connection. With ``body_after_continue`` the request announced it
    with ``Expect: 100-continue``: the interim answer must come first."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        if body_after_continue:
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(4096)
            assert answer == b"HTTP/1.1 100 Continue\r\n\r\n"
            answer = b""
            sock.sendall(body_after_continue)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


class Answers:
    """The answers coming back on one connection, read one at a time by their Content-Length."""

    def __init__(self, sock):
        self.sock, self.buffer = sock, b""

    def _more(self):
        chunk = self.sock.recv(65536)
        assert chunk, "the connection closed before the answer was complete"
        self.buffer += chunk

    def next(self):
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        head = head.decode("latin-1")
        length = int(next(line.split(":", 1)[1] for line in head.split("\r\n")
                          if line.lower().startswith("content-length:")))
        while len(self.buffer) < length:
            self._more()
        answer, self.buffer = self.buffer[:length], self.buffer[length:]
        return head, answer

    def closed(self):
        return self.buffer == b"" and self.sock.recv(1) == b""


def test_a_kept_connection_closes_once_it_waited_the_idle_time_for_a_request(
        deploy_home, models, monkeypatch):
    """A kept connection of the endpoint's port is closed once it has waited the idle time
    (75 s; 2 s here) for its next request, counted from its last answer: a client that keeps
    asking, pausing less than that between requests, keeps it open past the idle time."""
    monkeypatch.setenv(frontend.IDLE_ENV, "2")  # read by the gateway the endpoint starts
    online.create_deployment("blue", models["right"])
    online.update_endpoint("blue", config={"auth_mode": "none"})
    port = int(online.get_endpoint("blue")["scoring_uri"].split(":")[2].split("/")[0])
    payload = json.dumps(body(1.0)).encode()
    request = (b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(payload)) + payload
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        answers = Answers(sock)
        opened = time.monotonic()
        while True:  # for two and a half idle times, never idle for one
            sock.sendall(request)
            head, answer = answers.next()
            assert head.startswith("HTTP/1.1 200 ") and json.loads(answer) == [2.0], head
            answered = time.monotonic()
            if answered - opened > 5:
                break
            time.sleep(0.5)  # the client's pause between requests is what is tested
        assert answers.closed()  # waits for the gateway's close
        assert 1.5 <= time.monotonic() - answered < 10


def test_the_endpoints_port_keeps_connections_and_answers_pipelined_requests_in_order(
        deploy_home, models):
    """HTTP/1.1's persistent connections on the endpoint's port: requests one after another
    and pipelined (three in one write, a failing one among them) are answered in order on the
    same connection, and the last one's ``Connection: close`` closes it; an HTTP/1.0 request is
    answered and closed, unless it asks for keep-alive, which the answer then says. A client's
    end of stream after a whole request still gets the answer, in the middle of one a 400;
    a stopping gateway closes a kept connection after the answer in flight there."""
    # two workers: the page's state, read while the slow request holds one, asks the other
    created = online.create_deployment("blue", models["right"], config=LOADED)
    online.update_endpoint("blue", config={"auth_mode": "none"})
    port = int(online.get_endpoint("blue")["scoring_uri"].split(":")[2].split("/")[0])

    def post(payload, request_id, extra=b"", version=b"1.1"):
        payload = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return (b"POST /score HTTP/%s\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"x-request-id: %s\r\nContent-Length: %d\r\n%s\r\n"
                % (version, request_id, len(payload), extra)) + payload

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        answers = Answers(sock)
        sock.sendall(post(body(1.0), b"one"))
        head, answer = answers.next()
        assert head.startswith("HTTP/1.1 200 ") and json.loads(answer) == [2.0], head
        assert "\r\nx-request-id: one\r\n" in head and "\r\nConnection: keep-alive" in head
        sock.sendall(post(body(2.0), b"two") + post(b"{not json", b"three") +
                     post(body(3.0, 4.0), b"four", b"Connection: close\r\n"))
        for request_id, status, expected in (("two", 200, [4.0]), ("three", 424, None),
                                             ("four", 200, [6.0, 8.0])):
            head, answer = answers.next()
            assert head.startswith("HTTP/1.1 {} ".format(status)), head
            assert "\r\nx-request-id: {}\r\n".format(request_id) in head
            if expected is not None:
                assert json.loads(answer) == expected
        assert "\r\nConnection: close" in head and answers.closed()

    for extra, kept in ((b"", False), (b"Connection: keep-alive\r\n", True)):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            answers = Answers(sock)
            sock.sendall(post(body(5.0), b"old", extra, version=b"1.0"))
            head, answer = answers.next()
            assert head.startswith("HTTP/1.1 200 ") and json.loads(answer) == [10.0], head
            assert ("\r\nConnection: keep-alive" if kept else "\r\nConnection: close") in head
            if kept:
                sock.sendall(post(body(6.0), b"again", extra, version=b"1.0"))
                assert json.loads(answers.next()[1]) == [12.0]
            else:
                assert answers.closed()

    # a client that ends its side of the connection after its request still gets the answer;
    # one that ends it in the middle of a request gets a 400, on both ports
    for to in (port, created["port"]):
        for request, status, expected in (
                (post(body(7.0), b"whole"), 200, [14.0]),
                (post(body(7.0), b"cut")[:-5], 400, {"message": "The connection closed before "
                                                                 "the request was complete."}),
                (b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Le", 400, None)):
            with socket.create_connection(("127.0.0.1", to), timeout=30) as sock:
                answers = Answers(sock)
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)
                head, answer = answers.next()
                assert head.startswith("HTTP/1.1 {} ".format(status)), head
                assert expected is None or json.loads(answer) == expected
                assert status == 200 or "\r\nConnection: close" in head
                assert answers.closed()

    # a stopping gateway answers the request in flight on a kept connection, says it closes
    # it (the client sends nothing more there), and exits
    gateway = deploy_home.get_endpoint("blue").pid
    state = "http://127.0.0.1:{}/ui/api/endpoint".format(port)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        answers = Answers(sock)
        sock.sendall(post(body(SLOW), b"slow"))
        wait_until(lambda: requests.get(state, timeout=30).json()["deployments"][0]["in_flight"],
                   message="the slow request never reached the gateway")
        os.kill(gateway, signal.SIGTERM)
        head, answer = answers.next()
        assert head.startswith("HTTP/1.1 200 ") and json.loads(answer) == [2 * SLOW], head
        assert "\r\nConnection: close" in head and answers.closed()
    wait_until(lambda: not processes.is_running(gateway), timeout=10,
               message="the gateway did not exit")


def test_a_client_that_pipelines_without_reading_is_answered_only_as_fast_as_it_reads(
        deploy_home, models):
    """Requests pipelined by a client that reads none of the answers: the gateway answers until
    the connection's buffers are full, then waits for the client (a few MB held, not 24), and
    once it reads, every answer comes, in order."""
    online.create_deployment("blue", models["right"])
    online.update_endpoint("blue", config={"auth_mode": "none"})
    uri = online.get_endpoint("blue")["scoring_uri"]
    port = int(uri.split(":")[2].split("/")[0])
    swagger = requests.get(uri.replace("/score", "/swagger.json"), timeout=30)
    assert swagger.status_code == 200
    count = 24 * 1024 * 1024 // len(swagger.content)

    def answered():
        scraped = prometheus.parse(requests.get(uri.replace("/score", "/metrics"),
                                                timeout=30).text)
        return prometheus.value(scraped, "mlflow_deploy_gateway_requests_total",
                                endpoint="blue", deployment="blue", status="200")

    before = answered()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(60)
        sock.connect(("127.0.0.1", port))
        # sent from a thread: the gateway stops reading too, and sendall waits for it
        request = b"GET /swagger.json HTTP/1.1\r\nHost: x\r\n\r\n"
        sender = threading.Thread(target=sock.sendall, args=(request * count,), daemon=True)
        sender.start()
        seen = []
        # the count still for 8 scrapes in a row: the gateway waits for the client
        wait_until(lambda: seen.append(answered()) or seen[-8:] == [seen[-1]] * 8,
                   timeout=120, message="the gateway kept answering")
        held = (seen[-1] - before) * len(swagger.content)
        assert 0 < held < 12 * 1024 * 1024, (held, count)
        answers = Answers(sock)
        for _ in range(count):
            head, body = answers.next()
            assert head.startswith("HTTP/1.1 200 ") and body == swagger.content
        sender.join(timeout=30)
    assert answered() - before == count


def test_an_instances_own_port_reads_each_request_whole_and_passes_it_on(deploy_home, models):
    """The deployment's own port: a chunked body, and one sent after ``Expect: 100-continue``,
    reach the instance whole, with the client's request id (a pipelined second request left
    unanswered); headers past the gateway's bound
    are a 431, a body past the deployment's max_request_mb a 413, bytes that are not HTTP a
    400, each the gateway's own JSON answer, and the connection closes after every answer (on
    the endpoint's port too, after those refusals)."""
    created = online.create_deployment("blue", models["right"], config={"max_request_mb": "1"})
    port = created["port"]
    payload = json.dumps(body(1.0, 2.0)).encode()
    start = (b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"x-request-id: mine-1\r\n")

    # a second request pipelined behind the first is not answered: the close says send it again
    head, rest = raw_exchange(port, start + b"Transfer-Encoding: chunked\r\n\r\n" +
                              b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload) +
                              b"GET /other HTTP/1.1\r\nHost: y\r\nx-request-id: mine-2\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK\r\n") and json.loads(rest) == [2.0, 4.0], head
    assert "\r\nx-request-id: mine-1" in head and "\r\nConnection: close" in head

    # the endpoint's port too: the instance is not asked to answer Expect a second time
    online.update_endpoint("blue", config={"auth_mode": "none"})
    endpoint_port = int(online.get_endpoint("blue")["scoring_uri"].split(":")[2].split("/")[0])
    for to in (port, endpoint_port):
        head, rest = raw_exchange(to, start + b"Content-Length: %d\r\nConnection: close\r\n"
                                  b"Expect: 100-continue\r\n\r\n" % len(payload),
                                  body_after_continue=payload)
        assert head.startswith("HTTP/1.1 200 OK\r\n") and json.loads(rest) == [2.0, 4.0], head

    for request, status, message in (
            (b"GET /score HTTP/1.1\r\nHost: x\r\n" + b"X-Big: %s\r\n" % (b"a" * 8000) * 9 +
             b"\r\n", "431 Request Header Fields Too Large",
             "The request's headers are larger than this endpoint accepts (65536 bytes)."),
            (start + b"Content-Length: %d\r\n\r\n" % (1024 * 1024 + 1), "413 Request Entity Too "
             "Large", "The request body is larger than this endpoint accepts (1048576 bytes)."),
            (b"NOT HTTP AT ALL\r\n\r\n", "400 Bad Request", "The request is not valid HTTP/1.1.")):
        for to in (port, endpoint_port):
            head, rest = raw_exchange(to, request)
            assert head.startswith("HTTP/1.1 " + status + "\r\n"), head
            assert json.loads(rest) == {"message": message} and "\r\nConnection: close" in head
    # the endpoint counts those among its own answers, as the others
    scraped = prometheus.parse(requests.get(f"http://127.0.0.1:{endpoint_port}/metrics",
                                            timeout=30).text)
    for status in ("400", "413", "431"):
        assert prometheus.value(scraped, "mlflow_deploy_gateway_refused_total", endpoint="blue",
                                status=status) == 1, status
    # and the port still serves; a HEAD gets a GET's head, without its body, on both ports
    answer = requests.post(created["scoring_uri"], json=body(3.0), timeout=30)
    assert answer.status_code == 200 and answer.json() == [6.0]
    got = requests.get(f"http://127.0.0.1:{port}/", timeout=30)
    assert got.status_code == 200 and got.content
    head, rest = raw_exchange(port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK\r\n") and rest == b"", head
    assert "\r\nContent-Length: {}\r\n".format(len(got.content)) in head
    answer = requests.head(f"http://127.0.0.1:{endpoint_port}/", timeout=30)
    assert answer.status_code == 200 and answer.content == b""
    assert answer.headers["Content-Length"] == str(len(got.content))
