"""Deployments with a scoring script (Azure's code_configuration): the seed's multi-model script on
a folder of plain pickles, a post-processing script on an MLflow model, and a script that fails."""

import os
import sys

import pytest
import requests

from example_models.scripts.multi_model.build import build as build_multi_model
from mlflow_deploy import online
from mlflow_deploy.errors import InvalidParameter, ServerFailed
from tests.online.fixtures import server_pids_under

pytestmark = pytest.mark.slow

SCRIPTS = os.path.join(os.path.dirname(__file__), "..", "..", "example_models", "scripts")
MULTI = os.path.abspath(os.path.join(SCRIPTS, "multi_model"))
POSTPROCESS = os.path.abspath(os.path.join(SCRIPTS, "postprocess"))


def post(deployment, body, **kwargs):
    return requests.post(deployment["scoring_uri"], data=body, timeout=30, **kwargs)


def test_the_seed_multi_model_script_serves_a_folder_of_models(deploy_home, tmp_path, capfd):
    models = build_multi_model(str(tmp_path / "models"))
    created = online.create_deployment(
        "multi", models, config={"code": MULTI, "scoring_script": "score.py"}
    )
    # no conda_file, no requirements.txt, no MLflow model: this Python, and a notice naming it
    assert created["environment"]["manager"] == "local"
    assert sys.executable in capfd.readouterr().err

    answer = post(created, '{"model_id": "model_A", "data": [[1, 2, 3], [4, 5, 6]]}')
    assert answer.status_code == 200
    assert answer.json()["result"] == pytest.approx([14.0, 32.0], abs=1e-6)
    model_b = post(created, '{"model_id": "model_B", "data": [[1, 2, 3]]}').json()
    assert model_b["result"][0] == pytest.approx(60.0, rel=0.05)
    unknown = post(created, '{"model_id": "model_Z", "data": [[1, 2, 3]]}')
    assert unknown.status_code == 200 and unknown.json() == {"error": "Invalid or missing model_id"}

    # the script ran from a copy of the code folder, against AZUREML_MODEL_DIR/models/...
    files = os.listdir(os.path.join(deploy_home.deployment_dir("multi"), "model", "1", "models"))
    assert sorted(files) == ["model_A", "model_B", "model_C"]
    assert "Model model_A loaded successfully" in open(created["log_path"]).read()


def test_a_postprocess_script_runs_in_the_mlflow_models_environment(
    deploy_home, example_models, capfd
):
    created = online.create_deployment(
        "proba",
        example_models["heart"],  # registered: models:/heart/1 -> $AZUREML_MODEL_DIR/model/
        config={"code": POSTPROCESS, "scoring_script": "score.py"},
    )
    model_root = deploy_home.deployment_dir("proba") / "model" / "1"
    assert (model_root / "model" / "MLmodel").is_file()
    assert created["environment"]["manager"] == "uv"
    assert "MLflow model's environment" in capfd.readouterr().err
    with open(os.path.join(SCRIPTS, "..", "payloads", "heart-split.json")) as f:
        answer = post(created, f.read(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    rows = answer.json()["probabilities"]
    assert rows and all(sum(row) == pytest.approx(1.0) for row in rows)


def test_a_failing_init_leaves_a_failed_deployment_and_others_keep_serving(
    deploy_home, tmp_path, example_models
):
    online.create_deployment("steady", example_models["diabetes"])
    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text(
        "def init():\n    raise RuntimeError('no weights here')\n\n"
        "def run(raw_data):\n    return raw_data\n"
    )
    (tmp_path / "model.pkl").write_bytes(b"")
    with pytest.raises(ServerFailed) as caught:
        online.create_deployment(
            "broken",
            str(tmp_path / "model.pkl"),
            config={"code": str(code), "scoring_script": "score.py", "env_manager": "local"},
        )
    failed = online.get_deployment("broken")
    assert failed["state"] == "Failed" and failed["traffic"] == 0
    assert "RuntimeError" in str(caught.value)
    log = open(failed["log_path"]).read()
    assert "Traceback" in log and "no weights here" in log
    assert online.get_deployment("steady")["state"] == "Running"
    assert server_pids_under(deploy_home.home)  # only steady's server
    online.delete_deployment("broken")
    assert [d["name"] for d in online.list_deployments()] == ["steady"]


def test_script_settings_are_checked_before_anything_runs(deploy_home, tmp_path):
    with pytest.raises(InvalidParameter, match="go together"):
        online.create_deployment("half", str(tmp_path), config={"code": str(tmp_path)})
    assert online.list_deployments() == []
