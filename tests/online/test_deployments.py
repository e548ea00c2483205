"""Deployments against real gunicorn servers on 127.0.0.1: create, predict, update with no failed
request under load, a killed server reported dead and restarted, failures that leave no trace."""

import os
import shutil
import signal
import time

import pandas as pd
import pytest
import requests
from mlflow.models import Model

from mlflow_deploy import online, processes
from mlflow_deploy.errors import (
    AlreadyExists,
    InvalidParameter,
    InvalidState,
    NotFound,
    PredictionFailed,
    ServerFailed,
)
from mlflow_deploy.online import supervisor
from tests.connections import listening_ports
from tests.online.fixtures import server_pids_under
from tests.online.load import SteadyLoad

pytestmark = pytest.mark.slow

COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
ROW = [0.038, 0.05, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017]
SPLIT = {"input_data": {"columns": COLUMNS, "index": [0, 1], "data": [ROW, ROW]}}


def version(deployment):
    return requests.get(deployment["scoring_uri"].replace("/score", "/version"), timeout=10).json()


def assert_untouched(store, names=()):
    """Nothing but ``names`` is left: rows, directories, endpoints, processes."""
    assert sorted(d.name for d in store.list_deployments()) == sorted(names)
    assert sorted(p.name for p in (store.home / "deployments").iterdir()) == sorted(names)


def broken_copy(example_model_dirs, tmp_path):
    """A model directory whose MLmodel is fine but whose weights cannot be loaded."""
    path = tmp_path / "broken-model"
    shutil.copytree(example_model_dirs["diabetes"], path)
    flavor = Model.load(str(path / "MLmodel")).flavors["sklearn"]
    (path / flavor.get("pickled_model", "model.skops")).write_bytes(b"not a model")
    return path


def test_create_predict_list_delete(deploy_home, example_models):
    store = deploy_home
    created = online.create_deployment("blue", example_models["diabetes"])
    assert created["name"] == "blue" and created["flavor"] == "python_function"
    assert created["endpoint"] == "blue" and created["state"] == "Running"
    assert created["instance_count"] == 1 and created["traffic"] == 100
    assert created["scoring_uri"] == f"http://127.0.0.1:{created['port']}/score"
    assert os.path.exists(created["log_path"]) and created["pid"]

    endpoint = online.get_endpoint("blue")
    assert endpoint["scoring_uri"].startswith("http://127.0.0.1:")
    assert endpoint["scoring_uri"] != created["scoring_uri"]  # the gateway, not the server
    assert endpoint["traffic"] == {"blue": 100} and endpoint["auth_mode"] == "key"

    by_dict = online.predict("blue", SPLIT)
    by_frame = online.predict("blue", pd.DataFrame([ROW, ROW], columns=COLUMNS))
    by_endpoint = online.predict(None, SPLIT, endpoint="blue")
    assert by_dict == by_frame == by_endpoint and len(by_dict) == 2
    direct = requests.post(created["scoring_uri"], json=SPLIT, timeout=10)
    assert direct.status_code == 200 and direct.json() == by_dict
    # no process of the instance listens on TCP: its only listener is its socket, in a folder
    # only its owner enters; the deployment's port is the gateway's, which passes it through
    for pid in [created["pid"]] + processes.children(created["pid"]):
        assert listening_ports(pid) == set(), pid
    folder = os.path.dirname(created["log_path"])
    assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
    assert os.listdir(folder).count("server.sock") == 1
    assert created["port"] in listening_ports(store.get_endpoint("blue").pid)

    with pytest.raises(PredictionFailed) as caught:
        online.predict("blue", {"input_data": {"columns": ["age"], "data": [[1.0]]}})
    assert caught.value.status == 400 and caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert str(caught.value).startswith("424 (the deployment answered 400): ")

    assert [d["name"] for d in online.list_deployments()] == ["blue"]
    assert [d["name"] for d in online.list_deployments(endpoint="blue")] == ["blue"]
    with pytest.raises(NotFound):
        online.list_deployments(endpoint="nope")
    with pytest.raises(NotFound):
        online.get_deployment("blue", endpoint="other")

    online.delete_deployment("blue")
    assert not supervisor.is_alive(created["pid"])
    assert online.list_deployments() == [] and online.list_endpoints() == []
    assert_untouched(store)
    with pytest.raises(NotFound, match="No deployment with this name"):
        online.get_deployment("blue")


def test_shared_endpoint_traffic_rules(deploy_home, example_models, example_model_dirs):
    blue = online.create_deployment("blue", example_models["diabetes"], endpoint="diab")
    green = online.create_deployment(
        "green", example_model_dirs["diabetes"], endpoint="diab", config={"instance_count": "2"}
    )
    # the implicit endpoint's first deployment takes all; a later one none (Azure's rule)
    assert (blue["traffic"], green["traffic"], green["instance_count"]) == (100, 0, 2)

    with pytest.raises(InvalidParameter, match="add up to 100"):
        online.update_endpoint("diab", config={"traffic": "green=90"})
    split = online.update_endpoint("diab", config={"traffic": "blue=50 green=50"})
    assert split["traffic"] == {"blue": 50, "green": 50}
    with pytest.raises(InvalidState, match="traffic"):
        online.delete_deployment("blue", endpoint="diab")
    online.update_endpoint("diab", config={"traffic": "green=100"})  # and now user-managed

    online.delete_deployment("blue", endpoint="diab")
    online.delete_deployment("blue", endpoint="diab")  # again: nothing to do, no error
    endpoint = online.get_endpoint("diab")
    assert endpoint["traffic"] == {"green": 100} and endpoint["deployments"] == ["green"]
    assert len(online.predict(None, SPLIT, endpoint="diab")) == 2
    online.delete_endpoint("diab")  # deletes green with it
    online.delete_endpoint("diab")  # again: nothing to do, no error
    assert online.list_endpoints() == [] and online.list_deployments() == []
    assert not supervisor.is_alive(green["pid"])
    assert server_pids_under(deploy_home.home) == []


def test_update_under_load_has_no_failed_request(deploy_home, example_models, example_model_dirs):
    created = online.create_deployment("blue", example_models["diabetes"])
    with SteadyLoad(created["scoring_uri"], SPLIT) as load:
        load.served_more()  # the load is on
        updated = online.update_deployment(
            "blue", model_uri=str(example_model_dirs["diabetes"]), config={"instance_count": "2"}
        )
        load.served_more()  # and the new masters answer it
    assert load.failed == [] and load.ok > 0
    assert updated["revision"] == 2 and updated["instance_count"] == 2
    assert updated["model_uri"] == str(example_model_dirs["diabetes"])
    assert updated["port"] == created["port"] and updated["pid"] != created["pid"]
    assert not supervisor.is_alive(created["pid"])
    assert version(updated)["revision"] == 2
    # the new master took over the pidfile, so a second update (which needs that) works too
    again = online.update_deployment("blue", config={"request_timeout_ms": "2000"})
    assert again["revision"] == 3 and version(again)["revision"] == 3
    assert again["model_uri"] == updated["model_uri"]
    assert online.predict("blue", SPLIT)


def test_failed_update_keeps_the_old_server(
    deploy_home, example_models, example_model_dirs, tmp_path
):
    created = online.create_deployment("blue", example_models["diabetes"])
    server_json = (deploy_home.deployment_dir("blue") / "server.json").read_text()
    with pytest.raises(ServerFailed, match="(log: .*server.log)"):
        online.update_deployment("blue", model_uri=str(broken_copy(example_model_dirs, tmp_path)))
    kept = online.get_deployment("blue")
    assert kept["state"] == "Running" and kept["revision"] == 1 and kept["pid"] == created["pid"]
    assert kept["model_uri"] == example_models["diabetes"]
    assert version(kept)["revision"] == 1
    assert (deploy_home.deployment_dir("blue") / "server.json").read_text() == server_json
    assert sorted(p.name for p in (deploy_home.deployment_dir("blue") / "model").iterdir()) == ["1"]
    assert online.predict("blue", SPLIT)
    # a bad config or URI is refused before anything starts
    with pytest.raises(InvalidParameter, match="'validation'"):
        online.update_deployment("blue", config={"validation": "loose"})
    with pytest.raises(InvalidParameter, match="'port' cannot change"):
        online.update_deployment("blue", config={"port": str(supervisor.free_port())})
    with pytest.raises(NotFound):
        online.update_deployment("blue", model_uri="models:/diabetes/99")
    # and the next good update still works (the failed attempt's ready file is not mistaken)
    updated = online.update_deployment("blue", config={
        "instance_count": 2, "environment_variables": {"REVISION": "2"}})
    assert updated["revision"] == 2 and version(updated)["revision"] == 2


def test_killed_server_is_reported_dead_and_restarts(deploy_home, example_models):
    # a liveness probe this patient leaves the restart to the update (the gateway's own
    # restart: tests/online/test_gateway.py)
    created = online.create_deployment("blue", example_models["diabetes"], config={
        "liveness_probe": {"failure_threshold": 1000}})
    os.killpg(created["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (
        server_pids_under(deploy_home.home) or supervisor.is_alive(created["pid"])
    ) and time.monotonic() < deadline:
        time.sleep(0.1)
    dead = online.get_deployment("blue")
    assert dead["state"] == "Dead" and dead["pid"] is None
    assert online.list_deployments()[0]["state"] == "Dead"
    with pytest.raises(ServerFailed, match="not running \\(state Dead\\)"):
        online.predict("blue", SPLIT)
    restarted = online.update_deployment("blue")
    assert restarted["state"] == "Running" and restarted["port"] == created["port"]
    assert online.predict("blue", SPLIT)


def test_failed_creates_leave_no_trace(deploy_home, example_models, example_model_dirs, tmp_path):
    store = deploy_home
    with pytest.raises(NotFound):
        online.create_deployment("blue", "models:/diabetes/42")
    with pytest.raises(InvalidParameter, match="scheme 'ftp'"):
        online.create_deployment("blue", "ftp://host/model")
    with pytest.raises(InvalidParameter, match="'instance_count'"):
        online.create_deployment("blue", example_models["diabetes"], config={"instance_count": "x"})
    with pytest.raises(InvalidParameter, match="Unknown config key 'colour'"):
        online.create_deployment("blue", example_models["diabetes"], config={"colour": "red"})
    with pytest.raises(InvalidParameter, match="Invalid deployment name"):
        online.create_deployment("b", example_models["diabetes"])
    with pytest.raises(InvalidParameter, match="python_function flavor"):
        online.create_deployment("blue", example_models["diabetes"], flavor="sklearn")
    assert_untouched(store)
    assert online.list_endpoints() == [] and server_pids_under(store.home) == []


def test_a_model_that_fails_to_load_leaves_a_failed_deployment(
    deploy_home, example_models, example_model_dirs, tmp_path
):
    """As in Azure: the deployment is kept as Failed, with no traffic and its log, until it is
    updated with a working model or deleted."""
    with pytest.raises(ServerFailed, match="could not be loaded|failed to load") as caught:
        online.create_deployment("blue", str(broken_copy(example_model_dirs, tmp_path)))
    failed = online.get_deployment("blue")
    assert failed["state"] == "Failed" and failed["pid"] is None and failed["traffic"] == 0
    assert failed["error"] == str(caught.value) and failed["log_path"] in failed["error"]
    assert "Traceback" in open(failed["log_path"]).read()
    # only its endpoint's gateway runs (and answers 404: no deployment takes traffic)
    assert server_pids_under(deploy_home.home) == [deploy_home.get_endpoint("blue").pid]
    with pytest.raises(ServerFailed, match="state Failed"):
        online.predict("blue", SPLIT)

    fixed = online.update_deployment("blue", model_uri=example_models["diabetes"])
    assert fixed["state"] == "Running" and fixed["error"] is None
    assert len(online.predict("blue", SPLIT)) == 2
    online.delete_deployment("blue")
    assert_untouched(deploy_home)


def test_duplicates_and_ports(deploy_home, example_models):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(InvalidState, match="config 'port'"):
            online.create_deployment(
                "blue", example_models["diabetes"], config={"port": str(taken.getsockname()[1])}
            )
    port = supervisor.free_port()
    created = online.create_deployment("blue", example_models["diabetes"], config={"port": port})
    assert created["port"] == port and created["config"]["port"] == port
    with pytest.raises(AlreadyExists, match="already exists: update it instead"):
        online.create_deployment("blue", example_models["diabetes"])
    with pytest.raises(InvalidState, match=f"Port {port} .config 'port'. is taken by deployment "
                       "blue of endpoint blue"):
        online.create_deployment("green", example_models["diabetes"], config={"port": port})
    assert_untouched(deploy_home, ["blue"])
    assert online.get_deployment("blue")["state"] == "Running"
