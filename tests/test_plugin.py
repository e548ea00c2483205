"""The azureml-local plugin through MLflow's own entry points: the `mlflow deployments` CLI in a
subprocess (servers must outlive it) and `mlflow.deployments.get_deploy_client`."""

import inspect
import io
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import requests
from mlflow.deployments import BaseDeploymentClient, PredictionsResponse, get_deploy_client

import mlflow_azureml_local
from mlflow_deploy.errors import InvalidParameter, PredictionFailed
from mlflow_deploy.online import supervisor
from tests.online.fixtures import private_home, server_pids_under

COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
ROW = [0.038, 0.05, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017]
SPLIT = {"input_data": {"columns": COLUMNS, "index": [0, 1], "data": [ROW, ROW]}}
TENSOR = {"input_data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
NAMED = {
    "input_data": {
        "tokens": [[0, 655, 85, 5, 23, 84, 23, 52, 856, 5, 23, 1]],
        "mask": [[0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]],
    }
}


@pytest.fixture
def deploy_home(tmp_path, monkeypatch):
    yield from private_home(tmp_path, monkeypatch)


def mlflow_cli(*args, check=True):
    """`mlflow deployments ...` in its own process, as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "deployments", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def test_module_shape_is_what_mlflow_loads():
    clients = [
        obj
        for _, obj in inspect.getmembers(mlflow_azureml_local)
        if inspect.isclass(obj)
        and issubclass(obj, BaseDeploymentClient)
        and obj is not BaseDeploymentClient
    ]
    assert len(clients) == 1
    assert callable(mlflow_azureml_local.run_local) and callable(mlflow_azureml_local.target_help)
    assert list(inspect.signature(mlflow_azureml_local.run_local).parameters) == [
        "name",
        "model_uri",
        "flavor",
        "config",
    ]
    assert "endpoint" in inspect.signature(clients[0].create_endpoint).parameters
    assert "params" in inspect.signature(clients[0].predict).parameters
    text = mlflow_azureml_local.target_help()
    assert "params" in text and "--input-path" in text and "instance_count" in text


@pytest.mark.slow
def test_get_deploy_client_end_to_end(deploy_home, example_models):
    client = get_deploy_client("azureml-local")
    assert type(client).__name__ == "AzureMLLocalDeploymentClient"

    iris = client.create_deployment("iris", example_models["iris-tensor"])
    tokens = client.create_deployment("tokens", example_models["tokens-mask"], endpoint="text")
    mixed = client.create_deployment(
        "mixed", example_models["mixed-params"], config={"validation": "strict"}
    )
    for created in (iris, tokens, mixed):
        assert {
            "name",
            "flavor",
            "endpoint",
            "model_uri",
            "state",
            "scoring_uri",
            "instance_count",
            "port",
            "log_path",
            "pid",
        } <= set(created)
        assert created["state"] == "Running"
    assert tokens["endpoint"] == "text"

    result = client.predict("iris", TENSOR)
    assert isinstance(result, PredictionsResponse) and len(result["predictions"]) == 2
    assert client.predict("iris", TENSOR["input_data"]) == result
    import numpy as np

    assert client.predict("iris", np.array(TENSOR["input_data"])) == result
    # what `predict --input-path` hands over: pd.read_json of an Azure payload
    as_cli = pd.read_json(io.StringIO(json.dumps(TENSOR)))
    assert client.predict("iris", as_cli) == result
    named = client.predict(None, pd.read_json(io.StringIO(json.dumps(NAMED))), endpoint="text")
    assert named["predictions"] == [{"kept": 10, "id_sum": 1811}]
    assert client.predict("tokens", NAMED) == named

    frame = pd.DataFrame({"count": [2], "price": [1.5], "label": ["pen"]})
    plain = client.predict("mixed", frame)["predictions"]
    scaled = client.predict("mixed", frame, params={"scale": 2.0, "suffix": "!"})["predictions"]
    assert plain == [{"total": 3.0, "label": "pen"}] and scaled == [{"total": 6.0, "label": "pen!"}]
    inner_400 = r"^424 \(the deployment answered 400\): .*'scale'"  # the endpoint wraps it
    with pytest.raises(PredictionFailed, match=inner_400) as caught:
        client.predict("mixed", frame, params={"scale": "big"})
    assert "big" not in str(caught.value)
    with_params = pd.read_json(
        io.StringIO(
            json.dumps(
                {"input_data": {"columns": ["count"], "data": [[1]]}, "params": {"scale": 2}}
            )
        )
    )
    with pytest.raises(InvalidParameter, match="params cannot be sent in a file"):
        client.predict("mixed", with_params)

    assert sorted(d["name"] for d in client.list_deployments()) == ["iris", "mixed", "tokens"]
    assert [d["name"] for d in client.list_deployments(endpoint="text")] == ["tokens"]
    assert client.get_deployment("tokens", endpoint="text")["scoring_uri"] == tokens["scoring_uri"]
    endpoint = client.get_endpoint("text")
    assert endpoint["scoring_uri"] != tokens["scoring_uri"]  # the gateway, not the server
    assert "primaryKey" not in str(endpoint) and endpoint["auth_mode"] == "key"
    assert sorted(e["name"] for e in client.list_endpoints()) == ["iris", "mixed", "text"]

    updated = client.update_deployment("iris", config={"instance_count": "2"})
    assert updated["instance_count"] == 2 and updated["flavor"] == "python_function"
    client.delete_endpoint("text")
    client.delete_deployment("iris")
    client.delete_deployment("mixed", endpoint="mixed")
    assert client.list_deployments() == [] and client.list_endpoints() == []
    for created in (iris, tokens, mixed):
        assert not supervisor.is_alive(created["pid"])


@pytest.mark.slow
def test_mlflow_cli_end_to_end(deploy_home, example_models, tmp_path):
    target = ["-t", "azureml-local"]
    created = mlflow_cli(
        "create",
        *target,
        "--name",
        "blue",
        "-m",
        example_models["diabetes"],
        "--endpoint",
        "diab",
        "-C",
        "instance_count=2",
    )
    assert "python_function deployment blue is created" in created.stdout

    # the CLI process has exited: the server it started still serves
    row = deploy_home.get_deployment("blue")
    scoring_uri = f"http://127.0.0.1:{row.port}/score"
    assert requests.post(scoring_uri, json=SPLIT, timeout=10).status_code == 200

    got = mlflow_cli("get", *target, "--name", "blue").stdout
    assert "state: Running" in got and f"scoring_uri: {scoring_uri}" in got
    assert "flavor: python_function" in got and "instance_count: 2" in got
    assert "'name': 'blue'" in mlflow_cli("list", *target).stdout

    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(SPLIT))
    by_name = json.loads(
        mlflow_cli("predict", *target, "--name", "blue", "--input-path", str(payload)).stdout
    )
    by_endpoint = json.loads(
        mlflow_cli("predict", *target, "--endpoint", "diab", "--input-path", str(payload)).stdout
    )
    assert by_name == by_endpoint and len(by_name["predictions"]) == 2

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"input_data": {"columns": ["age"], "data": [[1.0]]}}))
    rejected = mlflow_cli(
        "predict", *target, "--name", "blue", "--input-path", str(bad), check=False
    )
    assert rejected.returncode != 0 and "Traceback" not in rejected.stderr
    assert rejected.stderr.strip().splitlines()[-1].startswith(
        "Error: 424 (the deployment answered 400): ")

    # instance_count alone: the surplus instance stops, the first serves on untouched (no new
    # revision, no restart)
    updated = mlflow_cli("update", *target, "--name", "blue", "-C", "instance_count=1")
    assert "Deployment blue is updated (with flavor python_function)" in updated.stdout
    scaled = deploy_home.get_deployment("blue")
    assert (scaled.revision, scaled.pid) == (row.revision, row.pid)
    assert "instance_count: 1" in mlflow_cli("get", *target, "--name", "blue").stdout
    assert requests.post(scoring_uri, json=SPLIT, timeout=10).status_code == 200

    failed = mlflow_cli("create", *target, "--name", "green", "-m", "ftp://host/model", check=False)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert failed.stderr.strip() == (
        "Error: Unsupported model URI scheme 'ftp': use a local path, "
        "file:, runs:/, models:/ or azureml: URI."
    )
    failed = mlflow_cli(
        "create",
        *target,
        "--name",
        "green",
        "-m",
        example_models["diabetes"],
        "-C",
        "instance_count=lots",
        check=False,
    )
    assert failed.returncode == 2
    assert failed.stderr.strip() == "Error: Config 'instance_count' must be an integer."
    missing = mlflow_cli("get", *target, "--name", "green", check=False)
    assert missing.returncode == 3 and missing.stderr.strip().startswith("Error: No deployment")

    mlflow_cli("delete", *target, "--name", "blue")
    assert not supervisor.is_alive(row.pid) and server_pids_under(deploy_home.home) == []
    assert deploy_home.list_deployments() == []

    # MLflow 3.17's own `create-endpoint` command fails before reaching any plugin (its callback
    # takes `name` but click passes `endpoint`), so the endpoint is made through the client; the
    # client also accepts that `endpoint=` keyword should MLflow start passing it
    get_deploy_client("azureml-local").create_endpoint(endpoint="epx")
    assert (
        "Endpoint epx is updated"
        in mlflow_cli(
            "update-endpoint", *target, "--endpoint", "epx", "-C", "description=mine"
        ).stdout
    )
    got = mlflow_cli("get-endpoint", *target, "--endpoint", "epx").stdout
    assert "name: epx" in got and "description: mine" in got
    assert "'name': 'epx'" in mlflow_cli("list-endpoints", *target).stdout
    mlflow_cli("delete-endpoint", *target, "--endpoint", "epx")
    assert "params" in mlflow_cli("help", *target).stdout


def test_batch_endpoints_and_deployments_through_get_deploy_client(deploy_home, example_models):
    """kind=batch makes a batch endpoint; the calls naming it reach the batch control plane."""
    from mlflow.exceptions import MlflowException

    client = get_deploy_client("azureml-local")
    made = client.create_endpoint("scores", config={"kind": "batch", "description": "nightly",
                                                    "tags": '{"team": "ml"}'})
    assert (made["kind"], made["description"], made["tags"]) == ("batch", "nightly",
                                                                 {"team": "ml"})
    blue = client.create_deployment("blue", example_models["diabetes"], endpoint="scores",
                                    config={"mini_batch_size": "5", "max_retries": "1"})
    assert blue["is_default"] and blue["model"] == example_models["diabetes"]
    assert blue["settings"]["mini_batch_size"] == 5
    assert blue["settings"]["retry_settings"] == {"max_retries": 1, "timeout": 30}
    assert (deploy_home.batch_deployment_dir("scores", "blue") / "model" / "1" /
            "MLmodel").is_file()  # models:/ fetched into the deployment
    green = client.create_deployment("green", example_models["diabetes"], endpoint="scores",
                                     config={"set_default": "true"})
    assert green["is_default"]
    assert client.get_deployment("blue", endpoint="scores")["is_default"] is False
    assert [d["name"] for d in client.list_deployments(endpoint="scores")] == ["blue", "green"]
    assert [d["name"] for d in client.list_deployments()] == ["blue", "green"]
    updated = client.update_deployment("blue", endpoint="scores",
                                       config={"error_threshold": "3"})
    assert updated["revision"] == 2 and updated["settings"]["error_threshold"] == 3
    assert client.update_endpoint("scores", config={"default_deployment": "blue"})[
        "defaults"] == {"deployment_name": "blue"}
    assert client.get_endpoint("scores")["deployments"] == ["blue", "green"]
    assert [e["name"] for e in client.list_endpoints()] == ["scores"]

    with pytest.raises(InvalidParameter, match="batch-endpoint invoke") as caught:
        client.predict(endpoint="scores", inputs=pd.DataFrame({"age": [1.0]}))
    assert isinstance(caught.value, MlflowException)
    with pytest.raises(InvalidParameter, match="Unknown config key 'workers'"):
        client.create_deployment("red", example_models["diabetes"], endpoint="scores",
                                 config={"workers": "2"})
    with pytest.raises(InvalidParameter, match="Config 'kind' must be"):
        client.create_endpoint("other", config={"kind": "stream"})
    with pytest.raises(MlflowException, match="A batch endpoint has this name"):
        client.create_endpoint("scores")  # an online one

    client.delete_deployment("green", endpoint="scores")
    client.delete_endpoint("scores")
    assert client.list_endpoints() == [] and client.list_deployments() == []
    assert "kind=batch" in mlflow_azureml_local.target_help()
