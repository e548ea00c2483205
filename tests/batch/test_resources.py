"""Batch endpoints, deployments and computes through the Python API: real model folders, real
(cached) environments, the repository's Azure YAML files."""
import os
import sys
from pathlib import Path

import pytest

from mlflow_deploy import online
from mlflow_deploy.batch import computes, deployments, endpoints
from mlflow_deploy.errors import AlreadyExists, InvalidParameter, InvalidState, NotFound
from mlflow_deploy.specs import load_batch_deployment_spec, load_batch_endpoint_spec
from mlflow_deploy.store import BATCH_DEPLOYMENTS, JOBS, Job
from tests.online.fixtures import private_home

YAML = Path(__file__).resolve().parents[1] / "data" / "azure_yaml" / "batch"


@pytest.fixture
def home(tmp_path, monkeypatch):
    yield from private_home(tmp_path, monkeypatch)


@pytest.fixture
def diabetes(example_model_dirs):
    return example_model_dirs["diabetes"]


def make_endpoint(store, name="scores", **kwargs):
    return endpoints.create_batch_endpoint(name, store=store, **kwargs)


def deploy(store, name, model, endpoint="scores", config=None, **kwargs):
    return deployments.create_batch_deployment(name, endpoint, model, config, store=store,
                                               **kwargs)


def folders(store, endpoint, name, kind):
    root = store.batch_deployment_dir(endpoint, name) / kind
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


# ---- computes ---------------------------------------------------------------------------------

def test_computes_are_registered_checked_listed_and_deleted(home):
    local = computes.create_compute("cpu-cluster", "local", store=home)
    assert local == {**local, "name": "cpu-cluster", "type": "local", "scheduler_address": None,
                     "provisioning_state": "Succeeded", "batch_deployments": []}
    dask = computes.create_compute("dask-one", "DASK", "tcp://127.0.0.1:8786", store=home)
    assert (dask["type"], dask["scheduler_address"]) == ("dask", "tcp://127.0.0.1:8786")
    assert computes.create_compute("dask-local", "dask", store=home)["scheduler_address"] is None
    assert [c["name"] for c in computes.list_computes(home)] == ["cpu-cluster", "dask-one",
                                                                 "dask-local"]
    assert computes.show_compute("dask-one", home)["type"] == "dask"

    with pytest.raises(AlreadyExists, match=r"already exists: delete it first"):
        computes.create_compute("cpu-cluster", "local", store=home)
    with pytest.raises(InvalidParameter, match="type must be one of: local, dask"):
        computes.create_compute("gpu", "amlcompute", store=home)
    with pytest.raises(InvalidParameter, match="for a compute of type dask only"):
        computes.create_compute("c2", "local", "tcp://127.0.0.1:8786", store=home)
    for address in ("127.0.0.1:8786", "tcp://host", "tcp://host:99999", "http://h:1"):
        with pytest.raises(InvalidParameter, match="must be tcp://HOST:PORT") as caught:
            computes.create_compute("c3", "dask", address, store=home)
        assert address not in str(caught.value)
    with pytest.raises(InvalidParameter, match=r"Invalid compute name: "):
        computes.create_compute("no/slash", "local", store=home)
    with pytest.raises(NotFound, match=r"No compute with the name given is registered"):
        computes.show_compute("absent", home)

    computes.delete_compute("dask-local", home)
    assert [c["name"] for c in computes.list_computes(home)] == ["cpu-cluster", "dask-one"]


# ---- endpoints ---------------------------------------------------------------------------------

def test_endpoints_from_azure_yaml_show_list_update_delete(home):
    spec = load_batch_endpoint_spec(str(YAML / "endpoint.yml"))
    created = endpoints.create_batch_endpoint(spec.name, spec.description, spec.tags,
                                              spec.default_deployment, store=home)
    assert created == {
        "name": "mnist-batch", "kind": "batch",
        "description": "A batch endpoint for scoring images from the MNIST dataset.",
        "tags": {"type": "deep-learning"}, "defaults": {"deployment_name": None},
        "deployments": [], "auth_mode": "none", "provisioning_state": "Succeeded",
        "invoke": "mlflow-deploy batch-endpoint invoke --name mnist-batch --input PATH"}
    # Azure's own example names its default before the deployment exists: kept as given
    spec = load_batch_endpoint_spec(str(YAML / "endpoint-defaults.yml"))
    endpoints.create_batch_endpoint(spec.name, spec.description, spec.tags,
                                    spec.default_deployment, store=home)
    listed = endpoints.list_batch_endpoints(home)
    assert [e["name"] for e in listed] == ["mnist-batch", "heart-classifier-batch"]
    assert listed[1]["defaults"] == {"deployment_name": "classifier-xgboost-mlflow"}
    with pytest.raises(InvalidState, match="does not exist yet"):
        deployments.resolve_deployment(home, "heart-classifier-batch")

    updated = endpoints.update_batch_endpoint("mnist-batch", description="digits",
                                              tags={"team": "ml"}, store=home)
    assert (updated["description"], updated["tags"]) == ("digits", {"team": "ml"})
    with pytest.raises(NotFound, match="defaults.deployment_name"):
        endpoints.update_batch_endpoint("mnist-batch", default_deployment="nobody", store=home)
    with pytest.raises(AlreadyExists, match=r"batch endpoint with this name already exists"):
        endpoints.create_batch_endpoint("mnist-batch", store=home)
    with pytest.raises(InvalidParameter, match=r"Invalid endpoint name"):
        endpoints.create_batch_endpoint("no_underscores", store=home)

    endpoints.delete_batch_endpoint("mnist-batch", home)
    endpoints.delete_batch_endpoint("mnist-batch", home)  # gone already: not an error
    with pytest.raises(NotFound, match=r"No batch endpoint with this name\.$"):
        endpoints.get_batch_endpoint("mnist-batch", home)


def test_endpoint_names_are_unique_online_and_batch_alike(home, diabetes):
    online.create_endpoint("taken-online", config={"auth_mode": "none"}, store=home)
    with pytest.raises(AlreadyExists, match="An online endpoint has this name"):
        endpoints.create_batch_endpoint("taken-online", store=home)
    make_endpoint(home, "taken-batch")
    with pytest.raises(AlreadyExists, match="A batch endpoint has this name"):
        online.create_endpoint("taken-batch", store=home)
    # nor by the endpoint an online deployment creates for itself: refused before any build
    with pytest.raises(AlreadyExists, match="A batch endpoint has this name"):
        online.create_deployment("blue", str(diabetes), endpoint="taken-batch", store=home)
    assert home.list_deployments() == [] and not home.deployment_dir("blue").exists()


# ---- deployments -------------------------------------------------------------------------------

def test_a_deployment_from_azure_yaml_records_its_settings_files_and_environment(home, diabetes):
    endpoint = load_batch_endpoint_spec(str(YAML / "endpoint-defaults.yml"))
    endpoints.create_batch_endpoint(endpoint.name, endpoint.description,
                                    default_deployment=endpoint.default_deployment, store=home)
    spec = load_batch_deployment_spec(str(YAML / "deployment-mlflow-settings.yml"),
                                      set_values=[f"model={diabetes}"])
    # compute: azureml:batch-cluster is a workspace resource: unknown until registered
    with pytest.raises(NotFound, match="No compute with the name given in compute") as caught:
        deployments.create_batch_deployment(spec, store=home)
    assert "batch-cluster" not in str(caught.value)
    assert not home.batch_deployment_dir(spec.endpoint_name, spec.name).exists()
    computes.create_compute("batch-cluster", "dask", store=home)

    created = deployments.create_batch_deployment(spec, store=home)
    row = home.find(BATCH_DEPLOYMENTS, "heart-classifier-batch:classifier-xgboost-mlflow")
    assert row.config == {
        "mini_batch_size": 2, "max_concurrency_per_instance": 2, "instance_count": 2,
        "output_action": "append_row", "output_file_name": "predictions.csv",
        "retry_settings": {"max_retries": 3, "timeout": 300}, "error_threshold": -1,
        "logging_level": "info",
        "environment_variables": {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"},
        "compute": "batch-cluster", "env_manager": "uv", "python_version_policy": "exact",
        "exclude_newer": None, "package": None}
    root = home.batch_deployment_dir("heart-classifier-batch", "classifier-xgboost-mlflow")
    assert row.files == {"model_dir": str(root / "model" / "1"), "code_dir": None,
                         "scoring_script": None, "azureml_model_dir": None}
    assert (root / "model" / "1" / "MLmodel").is_file()
    assert {"python", "key", "lock", "manager", "root", "python_version"} <= set(row.environment)
    assert os.path.exists(row.environment["python"]) and row.environment["manager"] == "uv"
    assert row.state == "Succeeded" and row.revision == 1
    assert created["settings"]["mini_batch_size"] == 2 and created["is_default"]
    assert created["compute"] == "azureml:batch-cluster"
    assert created["resources"] == {"instance_count": 2}
    assert created["tags"] == {"mlflow-deploy/env_manager": "uv"}
    assert deployments.resolve_deployment(home, "heart-classifier-batch").key == row.key
    assert computes.show_compute("batch-cluster", home)["batch_deployments"] == [row.key]
    with pytest.raises(InvalidState, match="used by 1 batch deployment:"):
        computes.delete_compute("batch-cluster", home)
    assert deployments.environments_in_use(home) == {row.environment["key"]: [row.key]}


def test_defaults_updates_and_deletes(home, diabetes, example_model_dirs):
    make_endpoint(home)
    with pytest.raises(InvalidState, match="no default deployment"):
        deployments.resolve_deployment(home, "scores")
    first = deploy(home, "first", str(diabetes), config={"mini_batch_size": "5",
                                                          "retry_settings": '{"timeout": 7}'})
    assert first["is_default"]  # the endpoint had none: the first deployment is it
    assert first["settings"]["retry_settings"] == {"max_retries": 3, "timeout": 7}
    second = deploy(home, "second", str(diabetes))
    assert not second["is_default"]
    assert endpoints.get_batch_endpoint("scores", home)["defaults"]["deployment_name"] == "first"
    third = deploy(home, "third", str(diabetes), config={"set_default": "true"})
    assert third["is_default"]
    assert deployments.resolve_deployment(home, "scores").name == "third"
    assert deployments.resolve_deployment(home, "scores", "second").name == "second"
    with pytest.raises(NotFound, match=r"no deployment with this name") as caught:
        deployments.resolve_deployment(home, "scores", "fourth")
    assert caught.value.argument == "deployment"
    with pytest.raises(NotFound, match=r"No batch endpoint with this name"):
        deployments.resolve_deployment(home, "nowhere")
    assert [d["name"] for d in deployments.list_batch_deployments("scores", home)] == [
        "first", "second", "third"]
    with pytest.raises(AlreadyExists, match=r"already has a deployment with this name"):
        deploy(home, "second", str(diabetes))
    endpoints.update_batch_endpoint("scores", default_deployment="second", store=home)
    assert deployments.resolve_deployment(home, "scores").name == "second"

    # an update of the settings: a new revision, the model staged again from the current one
    updated = deployments.update_batch_deployment("first", "scores", config={
        "mini_batch_size": 3, "error_threshold": 4}, store=home)
    assert (updated["revision"], updated["settings"]["mini_batch_size"]) == (2, 3)
    assert updated["settings"]["retry_settings"]["timeout"] == 7  # kept
    assert updated["settings"]["error_threshold"] == 4
    assert folders(home, "scores", "first", "model") == ["1"]  # the model did not change
    # a new model: revision 3 with its own copy, the older revisions removed
    updated = deployments.update_batch_deployment(
        "first", "scores", str(example_model_dirs["heart"]), store=home)
    assert updated["revision"] == 3 and folders(home, "scores", "first", "model") == ["3"]
    assert updated["model"] == str(example_model_dirs["heart"])

    # a failed update leaves the deployment as it was: its row, files and environment
    before = home.find(BATCH_DEPLOYMENTS, "scores:first")
    for config, error in (({"mini_batch_size": 0}, InvalidParameter),
                          ({"compute": "absent"}, NotFound)):
        with pytest.raises(error):
            deployments.update_batch_deployment("first", "scores", config=config, store=home)
    with pytest.raises(NotFound):
        deployments.update_batch_deployment("first", "scores",
                                            os.path.join(os.path.dirname(diabetes), "no-such-model"), store=home)
    after = home.find(BATCH_DEPLOYMENTS, "scores:first")
    assert (after.revision, after.config, after.files) == (3, before.config, before.files)
    assert folders(home, "scores", "first", "model") == ["3"]
    assert Path(after.files["model_dir"], "MLmodel").is_file()

    # the default cannot go while the endpoint has other deployments (as on Azure)
    with pytest.raises(InvalidState, match="endpoint's default"):
        deployments.delete_batch_deployment("second", "scores", home)
    deployments.delete_batch_deployment("third", "scores", home)
    assert not home.batch_deployment_dir("scores", "third").exists()
    deployments.delete_batch_deployment("third", "scores", home)  # gone: not an error
    endpoints.update_batch_endpoint("scores", default_deployment="first", store=home)
    deployments.delete_batch_deployment("second", "scores", home)
    deployments.delete_batch_deployment("first", "scores", home)  # the last: allowed
    assert endpoints.get_batch_endpoint("scores", home)["defaults"]["deployment_name"] is None


def test_deleting_an_endpoint_deletes_its_deployments_and_keeps_its_jobs(home, diabetes):
    make_endpoint(home)
    deploy(home, "one", str(diabetes))
    deploy(home, "two", str(diabetes))
    home.add(JOBS, Job(name="job-1", endpoint="scores", deployment="one", status="Completed",
                       input="in", output_path="out", dir="d", log_path="l"), "taken")
    running = Job(name="job-2", endpoint="scores", deployment="two", status="Running",
                  input="in", output_path="out", dir="d", log_path="l", pid=os.getpid())
    home.add(JOBS, running, "taken")
    with pytest.raises(InvalidState, match="1 job of the deployment still run"):
        endpoints.delete_batch_endpoint("scores", home)
    assert len(deployments.list_batch_deployments("scores", home)) == 2
    running.status = "Completed"
    home.save(JOBS, running)
    endpoints.delete_batch_endpoint("scores", home)
    assert home.select(BATCH_DEPLOYMENTS) == []
    assert not (home.home / "batch" / "scores").exists()
    assert [j.name for j in home.select(JOBS)] == ["job-1", "job-2"]


def test_a_scoring_script_deployment_places_its_model_and_copies_its_code(home, tmp_path,
                                                                          capfd):
    code = tmp_path / "code"
    code.mkdir()
    (code / "driver.py").write_text("def init():\n    pass\n\n"
                                    "def run(mini_batch):\n    return mini_batch\n")
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\0" * 16)
    make_endpoint(home)
    created = deploy(home, "script", str(weights),
                     config={"code": str(code), "scoring_script": "driver.py"})
    root = home.batch_deployment_dir("scores", "script")
    assert created["files"] == {"model_dir": str(root / "model" / "1" / "weights.bin"),
                                "code_dir": str(root / "code" / "1"),
                                "scoring_script": "driver.py",
                                "azureml_model_dir": str(root / "model" / "1")}
    assert (root / "code" / "1" / "driver.py").is_file()
    # no conda_file, no requirements.txt, no MLflow model: this Python, with a notice
    assert created["environment"]["manager"] == "local"
    assert sys.executable in capfd.readouterr().err
    assert created["code_configuration"] == {"code": str(root / "code" / "1"),
                                             "scoring_script": "driver.py"}
    # an update without new code copies the current revision's code again
    (code / "driver.py").unlink()
    updated = deployments.update_batch_deployment("script", "scores", store=home)
    assert updated["files"]["code_dir"] == str(root / "code" / "2")
    assert (root / "code" / "2" / "driver.py").is_file()
    assert folders(home, "scores", "script", "code") == ["2"]
    assert Path(updated["files"]["model_dir"]).is_file()  # the model of revision 1, kept


def test_settings_are_checked_before_anything_is_built(home, diabetes):
    make_endpoint(home)
    for config, message in (
            ({"mini_batch_size": "many"}, "Config 'mini_batch_size' must be an integer."),
            ({"output_action": "append"}, "Config 'output_action' must be one of"),
            ({"output_file_name": "../x.csv"}, "Config 'output_file_name' must be a plain"),
            ({"retry_settings": '{"tries": 1}'}, "Config 'retry_settings' takes only"),
            ({"logging_level": "loud"}, "Config 'logging_level' must be one of"),
            ({"env_manager": "pip"}, "Config 'env_manager' must be one of"),
            ({"workers": 2}, "Unknown config key 'workers'"),
            ({"scoring_script": "s.py"}, "go together"),
            ({"compute": "a:b"}, r"Invalid compute name \(config 'compute'\)")):
        with pytest.raises(InvalidParameter, match=message):
            deploy(home, "checked", str(diabetes), config=config)
    with pytest.raises(NotFound, match="No batch endpoint"):
        deploy(home, "checked", str(diabetes), endpoint="nowhere")
    with pytest.raises(InvalidParameter, match="needs a model"):
        deploy(home, "checked", None)
    assert not (home.home / "batch" / "scores" / "checked").exists()
