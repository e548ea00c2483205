"""The ``mlflow-deploy`` command line.

Every failure ends in one line ``Error: ...`` and a non-zero exit code, never a traceback: our own
errors are click exceptions already, and the group turns any other MLflow or OS error into one.
"""
import sys
from pathlib import Path
from typing import Optional

import click
from mlflow.exceptions import MlflowException

from mlflow_deploy import __version__
from mlflow_deploy.errors import DeployError, InvalidParameter, from_scoring_error

__all__ = ["main", "cli"]


class _OneLineErrors(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except MlflowException as exc:
            raise DeployError(exc.message.strip().splitlines()[0] if exc.message else
                              type(exc).__name__) from None
        except OSError as exc:
            raise DeployError(f"{type(exc).__name__}: {exc.strerror or exc}") from None


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlflow-deploy")
def cli():
    """Deploy MLflow models on this machine the way Azure ML no-code deployment does."""


VALIDATION = click.option(
    "--validation", type=click.Choice(["compatible", "strict"]), default="compatible",
    show_default=True,
    help="compatible coerces values like Azure (and reports it); strict rejects them.",
)


@cli.command()
@click.argument("model_uri")
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1 (default 5001).")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes.")
@VALIDATION
def serve(model_uri: str, port: Optional[int], workers: int, validation: str):
    """Serve MODEL_URI in the foreground (Ctrl-C stops it)."""
    from mlflow_deploy.online.foreground import serve as serve_foreground

    config = {"instance_count": workers, "validation": validation}
    if port is not None:
        config["port"] = port
    serve_foreground(model_uri, config=config)


@cli.command()
@click.argument("model_uri")
@click.argument("payload", type=click.Path(dir_okay=False, path_type=Path))
@VALIDATION
def validate(model_uri: str, payload: Path, validation: str):
    """Check an Azure PAYLOAD file against MODEL_URI's signature, with no server: exit 0 and a
    summary, or exit 1 and the message the server would answer."""
    import tempfile

    from mlflow_deploy.model import load_model
    from mlflow_deploy.scoring.errors import ScoringError
    from mlflow_deploy.scoring.pipeline import check
    from mlflow_deploy.scoring.predictor import Predictor

    try:
        raw = payload.read_bytes()
    except OSError:
        raise InvalidParameter("The payload file cannot be read (PAYLOAD).") from None
    with tempfile.TemporaryDirectory(prefix="mlflow-deploy-validate-") as tmp:
        info = load_model(model_uri, Path(tmp) / "model")
        predictor = Predictor.load(str(info.path))
        try:
            enforced = check(raw, "application/json", predictor, validation=validation)
        except ScoringError as exc:
            raise from_scoring_error(exc) from None
    click.echo(f"OK: {enforced.summary()}")


def main(argv=None) -> None:
    """Console script entry point."""
    cli.main(args=argv, prog_name="mlflow-deploy")


if __name__ == "__main__":
    sys.exit(main())
