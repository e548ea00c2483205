"""The root group (mlflow_deploy/cli/__init__.py): every noun registered once, reached through the
console script and `python -m mlflow_deploy.cli`, and any failure one line."""
import os
import subprocess
import sys

import click
from click.testing import CliRunner

from mlflow_deploy.cli import NOUNS as NOUN_MODULES
from mlflow_deploy.cli import cli, main
from mlflow_deploy.errors import DeployError
from tests.imports import modules_after

NOUNS = {"check", "env", "package", "serve", "validate", "online-endpoint", "online-deployment",
         "batch-endpoint", "batch-deployment", "compute", "job"}


def test_every_noun_is_registered():
    ctx = click.Context(cli)
    assert set(cli.list_commands(ctx)) == NOUNS
    assert all(cli.get_command(ctx, noun).name == noun for noun in NOUNS)
    assert set(cli.get_command(ctx, "env").commands) == {"build", "list", "show", "prune"}
    assert cli.get_command(ctx, "nothing") is None


def test_a_command_imports_its_own_noun_alone(tmp_path):
    """Nouns load when named: `online-endpoint list` does not import the env builders or the
    batch machinery (0.25 s of every call when all were imported)."""
    others = ["mlflow_deploy.cli." + module for module, _ in NOUN_MODULES.values()]
    done, loaded = modules_after(
        "from mlflow_deploy.cli import main\nmain(['online-endpoint', 'list'])", others,
        env={**os.environ, "MLFLOW_DEPLOY_HOME": str(tmp_path)})
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
    assert loaded == ["mlflow_deploy.cli.online_endpoint"], loaded


def test_the_console_script_is_main():
    from importlib.metadata import entry_points

    found = entry_points()
    scripts = (found.select(group="console_scripts") if hasattr(found, "select")
               else found.get("console_scripts", ()))
    [script] = [s for s in scripts if s.name == "mlflow-deploy"]
    assert script.value == "mlflow_deploy.cli:main" and script.load() is main


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "mlflow_deploy.cli", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: mlflow-deploy [OPTIONS] COMMAND [ARGS]...")
    listed = done.stdout.split("Commands:", 1)[1].split()
    assert NOUNS <= set(listed)


def test_registry_errors_are_one_line(example_models, tmp_path):
    """A model the registry does not have: MLflow's lookup error becomes one line, exit 3."""
    payload = tmp_path / "p.json"
    payload.write_text("{}")
    result = CliRunner().invoke(cli, ["validate", "models:/not-registered/1", str(payload)])
    assert result.exit_code == 3
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "Traceback" not in result.output
    assert isinstance(DeployError("x"), click.ClickException)
