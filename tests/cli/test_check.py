"""`mlflow-deploy check`: the report of tests/testing/test_check.py as a command, its exit code
saying whether the model is deployable."""
import json

from click.testing import CliRunner

from mlflow_deploy.cli import cli
from mlflow_deploy.cli.check import check_command


def test_click_command(example_models):
    result = CliRunner().invoke(check_command, [example_models["iris-tensor"], "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["deployable"] is True


def test_a_failing_check_exits_1(tmp_path):
    result = CliRunner().invoke(cli, ["check", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert result.output.splitlines()[1].startswith("  fail  MLmodel")
    assert result.output.rstrip().endswith("NOT DEPLOYABLE: 1 failed, 0 warning(s)")
