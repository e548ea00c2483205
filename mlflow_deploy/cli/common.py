"""What several command modules share: progress lines, sizes, the options they have in common and
the check of a date argument. Kept free of mlflow like the rest of the CLI."""
from typing import Optional

import click

from mlflow_deploy.envs import POLICIES
from mlflow_deploy.errors import InvalidParameter

__all__ = ["say", "human", "checked_date", "VALIDATION", "PYTHON_VERSION_POLICY", "EXCLUDE_NEWER"]


def say(message: str) -> None:
    """A progress line, on stderr so that stdout holds only the command's result."""
    click.echo("mlflow-deploy: " + message, err=True)


def human(size: float) -> str:
    """A size in bytes as people read it: 512 B, 3.4 MB."""
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return "{:.0f} {}".format(size, unit) if unit == "B" else "{:.1f} {}".format(size, unit)
        size /= 1024
    return "{:.1f} GB".format(size)


def checked_date(value: Optional[str]) -> Optional[str]:
    """--exclude-newer, checked as the deployment setting ``exclude_newer`` is."""
    from mlflow_deploy.online.settings import parse_settings

    try:
        return parse_settings({"exclude_newer": value}).exclude_newer if value else None
    except InvalidParameter:
        raise click.BadParameter("must be a date (YYYY-MM-DD) or a UTC time "
                                 "(YYYY-MM-DDTHH:MM:SSZ)", param_hint="--exclude-newer") from None


VALIDATION = click.option(
    "--validation",
    type=click.Choice(["compatible", "strict"]),
    default="compatible",
    show_default=True,
    help="compatible coerces values like Azure (and reports it); strict rejects them.",
)

PYTHON_VERSION_POLICY = click.option(
    "--python-version-policy", type=click.Choice(POLICIES), default="exact", show_default=True,
    help="nearest: use the closest Python if the model's is missing.")

EXCLUDE_NEWER = click.option(
    "--exclude-newer", metavar="DATE", default=None,
    help="Resolve as the package indexes were on DATE (2026-11-01, or a UTC time): the same lock "
    "months later. Default: $MLFLOW_DEPLOY_EXCLUDE_NEWER, else today's.")
