"""``mlflow-deploy serve MODEL_URI``: one model in the foreground, no deployment recorded."""
from typing import Optional

import click

from .common import VALIDATION

__all__ = ["serve_command"]


@click.command("serve")
@click.argument("model_uri")
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1 (default 5001).")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes.")
@VALIDATION
@click.option(
    "--env-manager",
    type=click.Choice(["uv", "virtualenv", "local", "conda"]),
    default="uv",
    show_default=True,
    help="uv/virtualenv: the model's own locked, cached environment; local: this Python.",
)
def serve_command(model_uri: str, port: Optional[int], workers: int, validation: str,
                  env_manager: str):
    """Serve MODEL_URI in the foreground (Ctrl-C stops it)."""
    from mlflow_deploy.online.foreground import serve as serve_foreground

    config = {"environment_variables": {"WORKER_COUNT": workers}, "validation": validation,
              "env_manager": env_manager}
    if port is not None:
        config["port"] = port
    serve_foreground(model_uri, config=config)
