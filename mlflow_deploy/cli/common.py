"""What several command modules share: progress lines, JSON results, sizes, the options they
have in common, the ``show``/``list``/``delete`` commands every resource has and the check of a
date argument. Kept free of mlflow like the rest of the CLI."""
import json
import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import click

from mlflow_deploy.envs import POLICIES
from mlflow_deploy.errors import InvalidParameter
# a command's progress lines and warnings go where the library's go (the terminal display of
# cli/progress.py, plain lines, or nowhere with --quiet)
from mlflow_deploy.progress import say

__all__ = ["say", "say_warnings", "print_json", "human", "checked_date", "add_show_list_delete",
           "with_options", "named_flag", "VALIDATION", "PYTHON_VERSION_POLICY", "EXCLUDE_NEWER"]


def say_warnings(spec):
    """A loaded YAML spec, once its warnings (keys ignored here, values coerced) are said."""
    for warning in spec.warnings:
        say(warning)
    return spec


def print_json(value: Any) -> None:
    """A command's result, on stdout, as ``az ml`` prints it."""
    click.echo(json.dumps(value, indent=2, sort_keys=False))


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


_CONFIG_KEY = re.compile(r"^Config '[^']*'")


@contextmanager
def named_flag(flag: str) -> Iterator[None]:
    """A setting given by a flag: the parser's error names the config key (as it must for a
    file or ``--set``), the command line's names the flag (``--mini-batch-size must be ...``)."""
    try:
        yield
    except InvalidParameter as exc:
        raise InvalidParameter(_CONFIG_KEY.sub(flag, exc.message, count=1)) from None


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


_ENDPOINT_NAME = click.option("-e", "--endpoint-name", required=True,
                              help="The endpoint's name.")
_YES = click.option("-y", "--yes", is_flag=True, help="Accepted: deletes do not ask here.")
_NO_WAIT = click.option("--no-wait", is_flag=True, hidden=True, help="Accepted.")


def with_options(*options):
    """Apply click options in the order given, as they would be stacked above a function."""
    def apply(function):
        for option in reversed(options):
            function = option(function)
        return function
    return apply


def add_show_list_delete(group: click.Group, noun: str, deleted: str,
                         show: Callable[..., Any], list_: Callable[..., Any],
                         delete: Callable[..., None], *, of_endpoint: bool = False,
                         no_wait: bool = True) -> None:
    """Add to ``group`` the commands every resource has, alike on every noun: ``show -n NAME``
    and ``list`` print JSON on stdout; ``delete -n NAME`` (``-y`` accepted, as nothing asks here;
    ``--no-wait`` too when ``no_wait``) says on stderr ``deleted <deleted> NAME``. ``show``,
    ``list_`` and ``delete`` do the work, their docstrings being the commands' help; they are
    called with the options as keywords: ``name``, and ``endpoint_name`` for a resource of an
    endpoint (``of_endpoint``). ``noun`` is the resource in the help of ``--name``."""
    name = click.option("-n", "--name", required=True, help=f"The {noun}'s name.")
    endpoint = (_ENDPOINT_NAME,) if of_endpoint else ()

    @group.command("show", help=show.__doc__)
    @with_options(name, *endpoint)
    def show_command(**options):
        print_json(show(**options))

    @group.command("list", help=list_.__doc__)
    @with_options(*endpoint)
    def list_command(**options):
        print_json(list_(**options))

    @group.command("delete", help=delete.__doc__)
    @with_options(name, *endpoint, _YES, *((_NO_WAIT,) if no_wait else ()))
    def delete_command(yes: bool, no_wait: bool = False, **options):
        delete(**options)
        say(f"deleted {deleted} {options['name']}")
