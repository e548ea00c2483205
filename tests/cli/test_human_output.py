"""What a person reads from the CLI: `-o table` beside the default JSON, and errors that name the
user's own argument (the flag, the taken port and who holds it, the next step, the registry
searched, the line of a broken MLmodel). In-process (click's CliRunner) on a home of the test's
own; nothing here starts a process: the store rows a taken name or port needs are written
directly, as the commands would have."""
import json

import pytest
from click.testing import CliRunner

from mlflow_deploy.cli import cli
from mlflow_deploy.envs.cache import HOME_ENV
from mlflow_deploy.store import Deployment, Endpoint, Store


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def run(home, *args, code=0):
    result = CliRunner().invoke(cli, [str(a) for a in args], env={HOME_ENV: str(home)})
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result


def test_show_and_list_print_json_or_a_table(home):
    run(home, "compute", "create", "-n", "cpu", "-t", "local")
    run(home, "compute", "create", "-n", "cluster", "-t", "dask", "--scheduler-address",
        "tcp://127.0.0.1:8786")
    run(home, "batch-endpoint", "create", "-n", "scores")
    assert [c["name"] for c in json.loads(run(home, "compute", "list").stdout)] == ["cpu",
                                                                                    "cluster"]
    # stdout is no terminal here: plain text, nothing cut, no colour, no trailing space
    assert run(home, "compute", "list", "-o", "table").stdout == (
        "NAME     TYPE   SCHEDULER_ADDRESS     PROVISIONING_STATE  BATCH_DEPLOYMENTS\n"
        "-------- ------ --------------------- ------------------- -----------------\n"
        "cpu      local  -                     Succeeded           -\n"
        "cluster  dask   tcp://127.0.0.1:8786  Succeeded           -\n")
    # the root group's -o reaches every command; a show is a table of one row
    assert run(home, "-o", "table", "batch-endpoint", "show", "-n", "scores").stdout == (
        "NAME    DEPLOYMENT_NAME  DEPLOYMENTS  PROVISIONING_STATE  DESCRIPTION\n"
        "------- ---------------- ------------ ------------------- -----------\n"
        "scores  -                -            Succeeded           -\n")
    assert json.loads(run(home, "-o", "table", "compute", "show", "-n", "cpu", "-o",
                          "json").stdout)["name"] == "cpu"  # the command's own -o wins
    assert "Invalid value for '-o'" in run(home, "compute", "list", "-o", "yaml", code=2).output


def test_taken_names_and_ports_say_so_with_the_flag_and_the_next_step(home, tmp_path):
    store = Store(home)
    store.add_endpoint(Endpoint(name="diab", port=40001))
    store.add_deployment(Deployment(
        name="blue", endpoint="diab", model_uri="models:/diabetes/1", flavor="python_function",
        config={}, port=40002, dir=str(store.deployment_dir("blue")),
        log_path=str(store.deployment_dir("blue") / "server.log"),
        pidfile=str(store.deployment_dir("blue") / "gunicorn.pid"), state="Succeeded"))
    create = ("online-deployment", "create", "-e", "diab", "--set", f"model.path={tmp_path}")

    taken = run(home, *create, "-n", "blue", code=4)
    assert taken.stderr == ("Error: A deployment with this name already exists: update it "
                            "instead, or delete it first (--name).\n")
    assert run(home, "online-endpoint", "create", "-n", "diab", code=4).stderr == (
        "Error: An endpoint with this name already exists: update it instead, or delete it "
        "first (--name).\n")
    for port, holder in ((40001, "the gateway of endpoint diab"),
                         (40002, "deployment blue of endpoint diab")):
        busy = run(home, *create, "-n", "green", "--set", f"tags.mlflow-deploy/port={port}",
                   code=5)
        assert busy.stderr == (f"Error: Port {port} (config 'port') is taken by {holder}: give "
                               "another port, or none to get a free one.\n")
    # the library's error names its argument (endpoint); the command, its own flag for it
    assert run(home, "online-deployment", "show", "-n", "blue", "-e", "nowhere",
               code=3).stderr == "Error: The endpoint has no deployment with this name (--name).\n"
    assert run(home, "job", "list", "--endpoint-name", "nowhere", code=3).stderr == (
        "Error: No batch endpoint with this name (--endpoint-name).\n")


def test_a_missing_registered_model_names_the_registry_searched(tracking_uri, tmp_path):
    result = CliRunner().invoke(cli, ["check", "models:/no-such-model/1", "--no-server"])
    assert result.exit_code == 1, result.output
    [line] = [line for line in result.output.splitlines() if "  fail  MLmodel" in line]
    assert line.endswith("The registered model named by the models: model URI does not exist in "
                         f"the model registry at {tracking_uri} (MLFLOW_REGISTRY_URI, else "
                         "MLFLOW_TRACKING_URI).")


def test_a_corrupt_mlmodel_names_its_line_not_its_text(tmp_path):
    model = tmp_path / "broken"
    model.mkdir()
    (model / "MLmodel").write_text("artifact_path: model\nflavors:\n  python_function:\n"
                                   "    loader_module: mlflow.sklearn\n   secret-token: [1, 2\n")
    result = CliRunner().invoke(cli, ["check", str(model), "--no-server"])
    assert result.exit_code == 1, result.output
    assert "  fail  MLmodel  The MLmodel file of the local path model could not be read at line " \
           "5 (ParserError)." in result.output
    assert "secret-token" not in result.output
