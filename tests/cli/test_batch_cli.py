"""`mlflow-deploy batch-endpoint`, `batch-deployment` and `compute` as an `az ml` user drives
them: the same YAML files and flags, through the real command line (in-process), JSON out, one
line and a non-zero exit on errors."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_deploy.cli import cli
from mlflow_deploy.store import BATCH_DEPLOYMENTS
from tests.online.fixtures import private_home

YAML = Path(__file__).resolve().parents[1] / "data" / "azure_yaml" / "batch"


@pytest.fixture
def home(tmp_path, monkeypatch):
    yield from private_home(tmp_path, monkeypatch)


MLFLOW_DEPLOY = os.path.join(os.path.dirname(sys.executable), "mlflow-deploy")


def run(*args, code=0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    if code:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        return lines[0]
    return json.loads(result.stdout) if result.stdout.strip() else None


def test_computes(home):
    made = run("compute", "create", "--name", "cluster", "--type", "dask",
               "--scheduler-address", "tcp://127.0.0.1:8786")
    assert (made["name"], made["type"], made["scheduler_address"]) == (
        "cluster", "dask", "tcp://127.0.0.1:8786")
    run("compute", "create", "-n", "here", "-t", "local")
    assert [c["name"] for c in run("compute", "list")] == ["cluster", "here"]
    assert run("compute", "show", "--name", "here")["type"] == "local"
    wrong_type = run("compute", "create", "-n", "x", "-t", "gpu", code=2)
    assert wrong_type.endswith("must be one of: local, dask (--type).")
    assert "must be tcp://HOST:PORT" in run("compute", "create", "-n", "x", "-t", "dask",
                                            "--scheduler-address", "h:1", code=2)
    assert "already exists" in run("compute", "create", "-n", "here", "-t", "local", code=4)
    run("compute", "delete", "--name", "here", "--yes")
    assert "--name" in run("compute", "show", "--name", "here", code=3)


def test_endpoints_and_deployments_from_azure_yaml(home, example_model_dirs, tmp_path):
    shutil.copy(YAML / "endpoint.yml", tmp_path / "endpoint.yml")
    os.symlink(example_model_dirs["diabetes"], tmp_path / "model")
    (tmp_path / "deployment.yml").write_text(textwrap.dedent("""\
        $schema: https://azuremlschemas.azureedge.net/latest/modelBatchDeployment.schema.json
        name: diabetes-dpl
        endpoint_name: mnist-batch
        type: model
        model:
          name: diabetes
          path: model
        compute: azureml:batch-cluster
        resources:
          instance_count: 2
        tags:
          mlflow-deploy/python_version_policy: nearest
        settings:
          mini_batch_size: 4
          output_file_name: scores.csv
          retry_settings:
            max_retries: 5
            timeout: 60
          error_threshold: 2
          logging_level: warning
          environment_variables:
            LABELS: digits
    """))
    created = run("batch-endpoint", "create", "-f", tmp_path / "endpoint.yml", "--local")
    assert created["name"] == "mnist-batch" and created["tags"] == {"type": "deep-learning"}
    # compute: azureml:batch-cluster must be registered first; the error names the key only
    error = run("batch-deployment", "create", "-f", tmp_path / "deployment.yml", code=3)
    assert "compute" in error and "batch-cluster" not in error
    run("compute", "create", "-n", "batch-cluster", "-t", "local")

    first = run("batch-deployment", "create", "-f", tmp_path / "deployment.yml")
    assert first["is_default"] and first["resources"] == {"instance_count": 2}
    assert first["settings"]["retry_settings"] == {"max_retries": 5, "timeout": 60}
    assert first["config"]["python_version_policy"] == "nearest"
    second = run("batch-deployment", "create", "-f", tmp_path / "deployment.yml",
                 "--set", "name=second", "--set", "compute=", "--set-default")
    assert second["is_default"] and second["compute"] is None
    shown = run("batch-endpoint", "show", "--name", "mnist-batch")
    assert shown["defaults"] == {"deployment_name": "second"}
    assert shown["deployments"] == ["diabetes-dpl", "second"]
    assert [d["name"] for d in run("batch-deployment", "list", "-e", "mnist-batch")] == [
        "diabetes-dpl", "second"]
    assert [e["name"] for e in run("batch-endpoint", "list")] == ["mnist-batch"]

    # --set alone changes what it names, nothing else
    updated = run("batch-deployment", "update", "--name", "diabetes-dpl", "--endpoint-name",
                  "mnist-batch", "--set", "settings.mini_batch_size=3",
                  "--set", "settings.retry_settings.timeout=9",
                  "--set", "settings.environment_variables.MORE=1",
                  "--set", "tags.mlflow-deploy/env_manager=uv",
                  "--set", "resources={instance_count: 3}")
    assert updated["revision"] == 2 and updated["resources"] == {"instance_count": 3}
    assert updated["settings"]["mini_batch_size"] == 3
    assert updated["settings"]["retry_settings"] == {"max_retries": 5, "timeout": 9}
    assert updated["settings"]["error_threshold"] == 2
    assert updated["config"]["compute"] == "batch-cluster"
    assert updated["settings"]["environment_variables"] == {"LABELS": "digits", "MORE": "1"}
    assert updated["tags"] == {"mlflow-deploy/python_version_policy": "nearest",
                               "mlflow-deploy/env_manager": "uv"}
    assert updated["config"]["python_version_policy"] == "nearest"  # kept from revision 1
    shown = run("batch-deployment", "show", "-n", "diabetes-dpl", "-e", "mnist-batch")
    assert shown == {**updated, "is_default": False}
    # two such updates at once both land: each adds to the deployment as the other left it
    updates = [subprocess.Popen(
        [MLFLOW_DEPLOY, "batch-deployment", "update", "--name", "diabetes-dpl", "--endpoint-name",
         "mnist-batch", "--set", f"settings.environment_variables.{name}=1",
         "--set", f"tags.{name}=1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True) for name in ("FIRST", "SECOND")]
    for update in updates:
        assert update.wait(timeout=300) == 0, update.stderr.read()[-3000:]
        update.stderr.close()
    both = run("batch-deployment", "show", "-n", "diabetes-dpl", "-e", "mnist-batch")
    assert both["settings"]["environment_variables"] == {"LABELS": "digits", "MORE": "1",
                                                         "FIRST": "1", "SECOND": "1"}
    assert both["tags"] == {**updated["tags"], "FIRST": "1", "SECOND": "1"}
    assert both["revision"] == 4
    # the file again: its settings whole
    again = run("batch-deployment", "update", "-f", tmp_path / "deployment.yml", "--set-default")
    assert again["settings"]["mini_batch_size"] == 4 and again["is_default"]
    assert again["revision"] == 5

    run("batch-endpoint", "update", "--name", "mnist-batch",
        "--set", "defaults.deployment_name=second", "--set", "description=digits")
    shown = run("batch-endpoint", "show", "--name", "mnist-batch")
    assert (shown["defaults"]["deployment_name"], shown["description"]) == ("second", "digits")
    assert shown["tags"] == {"type": "deep-learning"}  # not given: kept
    tagged = run("batch-endpoint", "update", "--name", "mnist-batch", "--set", "tags.team=ml")
    assert tagged["tags"] == {"type": "deep-learning", "team": "ml"}
    error = run("batch-endpoint", "update", "--name", "mnist-batch",
                "--set", "defaults.deployment_name=absent", code=3)
    assert "defaults.deployment_name" in error

    assert "endpoint's default" in run("batch-deployment", "delete", "-n", "second",
                                       "-e", "mnist-batch", "--yes", code=5)
    run("batch-deployment", "delete", "-n", "diabetes-dpl", "-e", "mnist-batch", "--yes")
    assert "(--name)" in run("batch-deployment", "show", "-n", "diabetes-dpl",
                             "-e", "mnist-batch", code=3)
    assert run("compute", "show", "-n", "batch-cluster")["batch_deployments"] == []  # freed
    run("compute", "delete", "-n", "batch-cluster")
    run("batch-endpoint", "delete", "--name", "mnist-batch", "--yes")
    assert home.select(BATCH_DEPLOYMENTS) == []
    assert "(--name)" in run("batch-endpoint", "delete", "--name", "mnist-batch", code=3)


def test_yaml_and_argument_errors_are_one_line(home, tmp_path):
    (tmp_path / "bad.yml").write_text("name: blue\nendpoint_name: mnist-batch\nmodel: m\n"
                                      "settings:\n  mini_batch_size: 0\n")
    error = run("batch-deployment", "create", "-f", tmp_path / "bad.yml", code=2)
    assert error.startswith(f"Error: {tmp_path / 'bad.yml'}:5: ")
    assert "settings.mini_batch_size" in error
    (tmp_path / "typo.yml").write_text("name: blue\nendpoint_name: mnist-batch\nmodle: m\n")
    assert "unknown key 'modle'" in run("batch-deployment", "create", "-f",
                                        tmp_path / "typo.yml", code=2)
    assert "no such file" in run("batch-endpoint", "create", "-f", tmp_path / "absent.yml",
                                 code=2)
    assert "--name" in run("batch-endpoint", "create", code=2)
    assert "No batch endpoint" in run("batch-deployment", "create", "--name", "blue",
                                      "--endpoint-name", "nowhere", "--set", "model=m", code=3)
    assert "No batch endpoint" in run("batch-deployment", "list", "-e", "nowhere", code=3)
    run("batch-endpoint", "create", "--name", "twice")
    assert "already exists" in run("batch-endpoint", "create", "--name", "twice", code=4)
