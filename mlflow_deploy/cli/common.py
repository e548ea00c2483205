"""What several command modules share: progress lines, results (JSON, or a table with
``-o table``), sizes, the options they have in common, the ``show``/``list``/``delete`` commands
every resource has and the check of a date argument. Kept free of mlflow like the rest of the
CLI."""
import io
import json
import re
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import click

from mlflow_deploy.envs import POLICIES
from mlflow_deploy.errors import InvalidParameter
# a command's progress lines and warnings go where the library's go (the terminal display of
# cli/progress.py, plain lines, or nowhere with --quiet)
from mlflow_deploy.progress import say

__all__ = ["say", "say_warnings", "print_json", "print_table", "OUTPUT", "remember_output",
           "columns", "human", "checked_date", "add_show_list_delete", "with_options", "named_flag",
           "VALIDATION", "PYTHON_VERSION_POLICY", "EXCLUDE_NEWER"]


def say_warnings(spec):
    """A loaded YAML spec, once its warnings (keys ignored here, values coerced) are said."""
    for warning in spec.warnings:
        say(warning)
    return spec


OUTPUT_FORMATS = ("json", "table")
# where -o sits for the command running: click shares a context's meta with the contexts nested in
# it, so the root group's -o reaches every command and a command's own -o overrides it
_OUTPUT_KEY = "mlflow_deploy.output"


def remember_output(ctx: click.Context, _param, value: Optional[str]) -> None:
    """The callback of an option that chooses the output: an absent one (None) leaves the
    choice of the root group's -o in place."""
    if value is not None:
        ctx.meta[_OUTPUT_KEY] = value


#: ``-o/--output json|table``, as ``az``'s ``--output``: on the root group and on every
#: ``show``/``list``; the result is then printed by print_json
OUTPUT = click.option(
    "-o", "--output", type=click.Choice(OUTPUT_FORMATS), default=None, expose_value=False,
    callback=remember_output,
    help="json (the default, as az ml prints it) or table (for people; not for scripts).")

#: a table's column: its header and how a row's cell is taken from one result item
Column = Tuple[str, Callable[[Any], Any]]


def columns(*keys: str) -> List[Column]:
    """Columns of result keys, a dotted key for a nested one (``defaults.deployment_name``):
    the header is the last key's, in capitals."""
    def get(item: Any, path: List[str]) -> Any:
        for part in path:
            item = item.get(part) if isinstance(item, dict) else None
        return item

    return [(key.rsplit(".", 1)[-1].upper(), lambda item, path=key.split("."): get(item, path))
            for key in keys]


def print_json(value: Any, table: Optional[Sequence[Column]] = None) -> None:
    """A command's result, on stdout, as ``az ml`` prints it: JSON, or a table with ``-o table``
    (of the columns ``table``, else one column per key whose values are flat)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(_OUTPUT_KEY) == "table":
        items = value if isinstance(value, list) else [value]
        print_table(items, table or _flat_columns(items))
        return
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return " ".join(f"{key}={_cell(item)}" for key, item in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_cell(item) for item in value) or "-"
    return str(value)


def _flat(value: Any) -> bool:
    """Whether a value fits in a cell: a scalar, or a list or mapping of scalars."""
    scalar = (str, int, float, bool, type(None))
    if isinstance(value, dict):
        return all(isinstance(item, scalar) for item in value.values())
    if isinstance(value, list):
        return all(isinstance(item, scalar) for item in value)
    return isinstance(value, scalar)


def _flat_columns(items: Sequence[Any]) -> List[Column]:
    """A column per key, in the order the items give them, whose values all fit in a cell;
    a result that is no mapping is a column of its own."""
    keys: List[str] = []
    for item in items:
        if not isinstance(item, dict):
            return [("VALUE", lambda value: value)]
        keys += [key for key in item if key not in keys]
    return [(key.upper(), lambda item, key=key: item.get(key))
            for key in keys if all(_flat(item.get(key)) for item in items)]


def _ascii_head():
    from rich.box import Box

    # az's plain table: a row of dashes under each header, nothing else
    return Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)


def print_table(items: Sequence[Any], columns: Sequence[Column]) -> None:
    """``items`` as a table (rich's) on stdout: one row each. On a terminal it fits the window,
    with a bold header; anywhere else it is plain text, never cut or wrapped, without colour or
    trailing spaces, so a pipe (grep, a file) gets whole lines."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from .progress import interactive

    stream = sys.stdout
    terminal = interactive(stream)
    # plain: each row of dashes starts under its header, as in az's tables
    table = Table(box=box.SIMPLE_HEAD if terminal else _ascii_head(), show_edge=False,
                  pad_edge=False, padding=(0, 1) if terminal else (0, 1, 0, 0),
                  header_style="bold" if terminal else None)
    for index, (header, _) in enumerate(columns):
        table.add_column(header, overflow="fold", no_wrap=index == 0)
    for item in items:
        table.add_row(*(_cell(cell(item)) for _, cell in columns))
    if terminal:
        Console(file=stream, highlight=False).print(table)
        return
    buffer = io.StringIO()
    Console(file=buffer, width=1 << 16, color_system=None, highlight=False,
            force_terminal=False).print(table)
    click.echo("\n".join(line.rstrip() for line in buffer.getvalue().splitlines()))


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
                         delete: Callable[..., None], table: Sequence[Column], *,
                         of_endpoint: bool = False, no_wait: bool = True) -> None:
    """Add to ``group`` the commands every resource has, alike on every noun: ``show -n NAME``
    and ``list`` print JSON on stdout (a table with ``-o table``); ``delete -n NAME`` (``-y``
    accepted, as nothing asks here; ``--no-wait`` too when ``no_wait``) says on stderr
    ``deleted <deleted> NAME``. ``show``,
    ``list_`` and ``delete`` do the work, their docstrings being the commands' help; they are
    called with the options as keywords: ``name``, and ``endpoint_name`` for a resource of an
    endpoint (``of_endpoint``). ``noun`` is the resource in the help of ``--name``; ``table``
    the columns of ``-o table``."""
    name = click.option("-n", "--name", required=True, help=f"The {noun}'s name.")
    endpoint = (_ENDPOINT_NAME,) if of_endpoint else ()

    @group.command("show", help=show.__doc__)
    @with_options(name, *endpoint, OUTPUT)
    def show_command(**options):
        print_json(show(**options), table)

    @group.command("list", help=list_.__doc__)
    @with_options(*endpoint, OUTPUT)
    def list_command(**options):
        print_json(list_(**options), table)

    @group.command("delete", help=delete.__doc__)
    @with_options(name, *endpoint, _YES, *((_NO_WAIT,) if no_wait else ()))
    def delete_command(yes: bool, no_wait: bool = False, **options):
        delete(**options)
        say(f"deleted {deleted} {options['name']}")
