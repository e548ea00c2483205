"""The ``mlflow-deploy`` command line.

Every failure ends in one line ``Error: ...`` and a non-zero exit code, never a traceback: our own
errors are click exceptions already, and the group turns any other MLflow or OS error into one.

Nothing here imports mlflow at start (about 1.7 s of every call): the commands that need it import
it themselves (see mlflow_deploy/errors.py), and a test keeps it so.
"""

import sys
from typing import Optional

import click

from mlflow_deploy import __version__
from mlflow_deploy.check import check_command
from mlflow_deploy.env_commands import env_group, package_command
from mlflow_deploy.errors import DeployError
from mlflow_deploy.testing.validate import validate_command

__all__ = ["main", "cli"]


class _OneLineErrors(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except OSError as exc:
            raise DeployError(f"{type(exc).__name__}: {exc.strerror or exc}") from None
        except Exception as exc:
            if not _is_mlflow_exception(exc):
                raise
            message = str(getattr(exc, "message", "") or "").strip()
            raise DeployError(
                message.splitlines()[0] if message else type(exc).__name__
            ) from None


def _is_mlflow_exception(exc: BaseException) -> bool:
    """Whether ``exc`` is an ``MlflowException``, without importing mlflow: if mlflow.exceptions
    was never imported, nothing could have raised one."""
    module = sys.modules.get("mlflow.exceptions")
    base = getattr(module, "MlflowException", None)
    return base is not None and isinstance(exc, base)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlflow-deploy")
def cli():
    """Deploy MLflow models on this machine the way Azure ML no-code deployment does."""


VALIDATION = click.option(
    "--validation",
    type=click.Choice(["compatible", "strict"]),
    default="compatible",
    show_default=True,
    help="compatible coerces values like Azure (and reports it); strict rejects them.",
)


@cli.command()
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
def serve(model_uri: str, port: Optional[int], workers: int, validation: str, env_manager: str):
    """Serve MODEL_URI in the foreground (Ctrl-C stops it)."""
    from mlflow_deploy.online.foreground import serve as serve_foreground

    config = {"instance_count": workers, "validation": validation, "env_manager": env_manager}
    if port is not None:
        config["port"] = port
    serve_foreground(model_uri, config=config)


# validate (files, folders, globs, JUnit XML) and check live with the testing tools they share
cli.add_command(validate_command)
cli.add_command(check_command)
cli.add_command(env_group)
cli.add_command(package_command)


def main(argv=None) -> None:
    """Console script entry point."""
    cli.main(args=argv, prog_name="mlflow-deploy")


if __name__ == "__main__":
    sys.exit(main())
