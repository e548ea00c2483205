"""``mlflow-deploy check MODEL_URI``: the deployability report of mlflow_deploy/testing/check.py,
as text or JSON; exit 1 when any check fails."""
import sys

import click

from mlflow_deploy.testing.check import run_check

__all__ = ["check_command"]


@click.command("check")
@click.argument("model_uri")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json for machines.")
@click.option("--server/--no-server", default=True, show_default=True,
              help="Also post the input example to a real server (gunicorn, a forked worker, "
              "this Python), stopped before the command returns: it shows a model that fails "
              "only after a fork.")
def check_command(model_uri: str, output_format: str, server: bool) -> None:
    """Report whether MODEL_URI deploys on Azure ML without code, one line per check; exit 1 if
    any check fails. Ends with the payload forms the model accepts, as curl commands."""
    text, code = run_check(model_uri, output_format, server=server)
    click.echo(text)
    sys.exit(code)
