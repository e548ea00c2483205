"""Endpoints without deployments: names, config keys, keys, traffic syntax, the gateway's life,
and the store's migration of endpoints made before gateways. Fast: no model server starts."""

import json
import sqlite3

import pytest
import requests

from mlflow_deploy import online
from mlflow_deploy.errors import AlreadyExists, InvalidParameter, InvalidState, NotFound
from mlflow_deploy.online import endpoints
from mlflow_deploy.online.endpoints import parse_traffic
from mlflow_deploy.store import MIGRATIONS, SCHEMA_VERSION, Store
from tests.online.fixtures import server_pids_under


def test_endpoint_crud(deploy_home):
    created = online.create_endpoint("diab", config={"description": "diabetes"})
    uri = created.pop("scoring_uri")
    assert uri.startswith("http://127.0.0.1:") and uri.endswith("/score")
    assert created.pop("openapi_uri") == uri[: -len("/score")] + "/swagger.json"
    assert created == {
        "name": "diab",
        "auth_mode": "key",
        "description": "diabetes",
        "traffic": {},
        "mirror_traffic": {},
        "deployments": [],
        "provisioning_state": "Succeeded",
        "state": "Running",
    }
    keys = endpoints.get_credentials("diab")
    answer = requests.post(uri, json={}, timeout=10,
                           headers={"Authorization": "Bearer " + keys["primaryKey"]})
    assert answer.status_code == 404  # the gateway answers: no deployment takes traffic
    assert requests.post(uri, json={}, timeout=10).status_code == 401
    with pytest.raises(AlreadyExists):
        online.create_endpoint("diab")
    assert endpoints.get_credentials("diab") == keys  # the failed create touched nothing
    assert online.update_endpoint("diab", config={"description": "new"})["description"] == "new"
    assert [e["name"] for e in online.list_endpoints()] == ["diab"]
    with pytest.raises(InvalidState, match="no deployment"):
        online.predict(None, [[1]], endpoint="diab")
    gateway = deploy_home.get_endpoint("diab").pid
    online.delete_endpoint("diab")
    assert gateway not in server_pids_under(deploy_home.home)
    with pytest.raises(NotFound):
        online.get_endpoint("diab")
    online.delete_endpoint("diab")  # idempotent, as MLflow's client contract says
    assert not deploy_home.endpoint_dir("diab").joinpath("keys.json").exists()


def test_auth_none_and_rotation_without_a_deployment(deploy_home):
    created = online.create_endpoint("open", config={"auth_mode": "none"})
    assert requests.post(created["scoring_uri"], json={}, timeout=10).status_code == 404
    with pytest.raises(InvalidState, match="keys"):
        endpoints.get_credentials("open")
    online.update_endpoint("open", config={"auth_mode": "key"})
    assert requests.post(created["scoring_uri"], json={}, timeout=10).status_code == 401
    before = endpoints.get_credentials("open")
    endpoints.regenerate_keys("open", "secondary")
    after = endpoints.get_credentials("open")
    assert after["primaryKey"] == before["primaryKey"]
    assert after["secondaryKey"] != before["secondaryKey"]
    with pytest.raises(InvalidParameter, match="key_type"):
        endpoints.regenerate_keys("open", "tertiary")


def test_endpoint_config_errors(deploy_home):
    with pytest.raises(InvalidParameter, match="tokens need Azure"):
        online.create_endpoint("diab", config={"auth_mode": "aml_token"})
    with pytest.raises(InvalidParameter, match="Unknown endpoint config key 'colour'"):
        online.create_endpoint("diab", config={"colour": "red"})
    with pytest.raises(InvalidParameter, match="Invalid endpoint name") as caught:
        online.create_endpoint("9lives")
    assert caught.value.argument == "endpoint"
    with pytest.raises(InvalidParameter, match="needs auth_mode 'key'"):
        online.create_endpoint("diab", config={"host": "0.0.0.0", "auth_mode": "none"})
    assert online.list_endpoints() == [] and server_pids_under(deploy_home.home) == []
    online.create_endpoint("diab")
    with pytest.raises(InvalidParameter, match="does not have"):
        online.update_endpoint("diab", config={"traffic": "ghost=100"})
    with pytest.raises(InvalidParameter, match="does not have"):
        online.update_endpoint("diab", config={"mirror_traffic": "ghost=10"})


def test_a_taken_port_fails_the_create_and_leaves_nothing(deploy_home):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InvalidState, match="port"):
            online.create_endpoint("diab", config={"port": port})
    assert online.list_endpoints() == [] and server_pids_under(deploy_home.home) == []


def test_traffic_syntax():
    assert parse_traffic("blue=90 green=10") == {"blue": 90, "green": 10}
    assert parse_traffic("blue=90,green=10") == {"blue": 90, "green": 10}
    assert parse_traffic('{"blue": 100}') == {"blue": 100}
    assert parse_traffic({"blue": 100}) == {"blue": 100}
    for bad in ("blue", "blue=x", "blue=101", "[1]", "{bad json"):
        with pytest.raises(InvalidParameter, match="'traffic'"):
            parse_traffic(bad)


def test_a_store_from_before_gateways_migrates(tmp_path, monkeypatch):
    """An endpoint recorded at schema version 2 had no key and no gateway: it keeps auth none,
    and its gateway starts on a free port the first time it is needed."""
    home = tmp_path / "home"
    home.mkdir()
    with sqlite3.connect(home / "state.db") as conn:  # as the release at version 2 left it
        for migrate in MIGRATIONS[:2]:
            migrate(conn)
        conn.execute("INSERT INTO endpoints VALUES ('old', 'none', 'from v2', ?, 0, 1.0, 1.0)",
                     (json.dumps({}),))
        conn.execute("PRAGMA user_version = 2")
    monkeypatch.setenv("MLFLOW_DEPLOY_HOME", str(home))
    migrated = Store(home)
    with sqlite3.connect(migrated.path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    old = migrated.get_endpoint("old")
    assert (old.auth_mode, old.port, old.pid, old.mirror_traffic) == ("none", None, None, {})
    assert online.get_endpoint("old", store=migrated)["state"] == "Stopped"
    started = endpoints.start_endpoint("old", store=migrated)
    try:
        assert started["state"] == "Running"
        assert requests.post(started["scoring_uri"], json={}, timeout=10).status_code == 404
    finally:
        online.delete_endpoint("old", store=migrated)
