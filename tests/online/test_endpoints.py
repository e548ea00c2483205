"""Endpoints without deployments: names, config keys, traffic syntax. Fast: no server starts."""

import pytest

from mlflow_deploy import online
from mlflow_deploy.errors import AlreadyExists, InvalidParameter, InvalidState, NotFound
from mlflow_deploy.online.endpoints import parse_traffic


def test_endpoint_crud(deploy_home):
    created = online.create_endpoint("diab", config={"description": "diabetes"})
    assert created == {
        "name": "diab",
        "auth_mode": "none",
        "description": "diabetes",
        "scoring_uri": None,
        "traffic": {},
        "deployments": [],
        "provisioning_state": "Succeeded",
    }
    with pytest.raises(AlreadyExists):
        online.create_endpoint("diab")
    assert online.update_endpoint("diab", config={"description": "new"})["description"] == "new"
    assert [e["name"] for e in online.list_endpoints()] == ["diab"]
    with pytest.raises(InvalidState, match="no deployment"):
        online.predict(None, [[1]], endpoint="diab")
    online.delete_endpoint("diab")
    with pytest.raises(NotFound):
        online.get_endpoint("diab")
    with pytest.raises(NotFound):
        online.delete_endpoint("diab")


def test_endpoint_config_errors(deploy_home):
    with pytest.raises(InvalidParameter, match="key auth comes with the gateway"):
        online.create_endpoint("diab", config={"auth_mode": "key"})
    with pytest.raises(InvalidParameter, match="Unknown endpoint config key 'colour'"):
        online.create_endpoint("diab", config={"colour": "red"})
    with pytest.raises(InvalidParameter, match="--endpoint"):
        online.create_endpoint("9lives")
    assert online.list_endpoints() == []
    online.create_endpoint("diab")
    with pytest.raises(InvalidParameter, match="does not have"):
        online.update_endpoint("diab", config={"traffic": "ghost=100"})


def test_traffic_syntax():
    assert parse_traffic("blue=90 green=10") == {"blue": 90, "green": 10}
    assert parse_traffic("blue=90,green=10") == {"blue": 90, "green": 10}
    assert parse_traffic('{"blue": 100}') == {"blue": 100}
    assert parse_traffic({"blue": 100}) == {"blue": 100}
    for bad in ("blue", "blue=x", "blue=101", "[1]", "{bad json"):
        with pytest.raises(InvalidParameter, match="'traffic'"):
            parse_traffic(bad)
