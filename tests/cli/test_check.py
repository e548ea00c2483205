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


def test_the_server_check_is_on_by_default(tmp_path):
    """A model that fails only in a forked worker: deployable with --no-server, not without."""
    from tests.testing.models import FORK_SHY_ERROR, save_fork_shy

    model = save_fork_shy(tmp_path)
    served = CliRunner().invoke(cli, ["check", model])
    assert served.exit_code == 1, served.output
    [line] = [line for line in served.output.splitlines() if line.startswith("  fail  server ")]
    assert "answered 500" in line and line.endswith("(logged: RuntimeError: {})".format(
        FORK_SHY_ERROR))
    assert served.output.rstrip().endswith("NOT DEPLOYABLE: 1 failed, 0 warning(s)")
    in_process = CliRunner().invoke(cli, ["check", model, "--no-server"])
    assert in_process.exit_code == 0, in_process.output
    assert "  skip  server         not tried (--no-server)" in in_process.output
