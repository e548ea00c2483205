"""The ``mlflow-deploy`` command line, shaped like ``az ml``: one module per noun, each a click
group or command, all registered here (the ``NOUNS`` below).

Every failure ends in one line ``Error: ...`` and a non-zero exit code, never a traceback: our own
errors are click exceptions already, and the root group turns any other MLflow or OS error into
one. An error about one argument of the library's functions (its ``argument``) ends with the flag
of the command that gave it (``No deployment with this name (--name).``): the library's messages
know no flags.

Nothing here imports mlflow at start (about 1.7 s of every call): the commands that need it import
it themselves (see mlflow_deploy/errors.py), and a test keeps it so. Nothing outside this package
imports it either: it is reached only through the ``mlflow-deploy`` console script and
``python -m mlflow_deploy.cli``.
"""
import importlib
import sys
from typing import Iterator, List, Optional

import click

from mlflow_deploy import __version__
from mlflow_deploy.errors import DeployError

from .common import OUTPUT
from .progress import quiet_mode

__all__ = ["main", "cli"]

#: each noun's name, module and command, imported when a command line names it (click's lazy
#: group): a command imports its own noun's module alone, where importing all of them (the env
#: builders, the batch and check machinery) was 0.25 s of every call; --help imports them all
NOUNS = {
    "online-endpoint": ("online_endpoint", "online_endpoint_group"),
    "online-deployment": ("online_deployment", "online_deployment_group"),
    "batch-endpoint": ("batch_endpoint", "batch_endpoint_group"),
    "batch-deployment": ("batch_deployment", "batch_deployment_group"),
    "compute": ("compute", "compute_group"),
    "job": ("job", "job_group"),
    "serve": ("serve", "serve_command"),
    "validate": ("validate", "validate_command"),
    "check": ("check", "check_command"),
    "env": ("env", "env_group"),
    "package": ("package", "package_command"),
}


class OneLineErrors(click.Group):
    """A group whose every failure is one ``Error: ...`` line: MLflow's and the OS's errors are
    turned into ours; anything else is a bug and keeps its traceback. Its nouns load on first
    use (NOUNS)."""

    def list_commands(self, ctx: click.Context) -> List[str]:
        return sorted(NOUNS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name not in NOUNS:
            return None
        if cmd_name not in self.commands:
            module, attribute = NOUNS[cmd_name]
            command = getattr(importlib.import_module("." + module, __name__), attribute)
            for each in _commands(command):
                each.context_class = FlagContext
            self.add_command(command, cmd_name)
        return self.commands[cmd_name]

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


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlflow-deploy")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress and no warnings: only results and errors (a job's final line).")
@OUTPUT
@click.pass_context
def cli(ctx: click.Context, quiet: bool):
    """Deploy MLflow models on this machine the way Azure ML no-code deployment does.

    Long work (environment builds, package, batch jobs) shows its progress on stderr: a live
    display on a terminal, plain lines elsewhere."""
    ctx.with_resource(quiet_mode(quiet))


class FlagContext(click.Context):
    """The context of every command: an error about an argument of the library's functions
    (``DeployError.argument``) gets the command's flag for it, if it has one. The flag is the
    option of that name, of that name plus ``_`` (``input_``: a builtin's name) or ``_name``
    (``endpoint``: ``--endpoint-name``), or ``--name`` when the argument is the noun itself
    (``endpoint`` in ``online-endpoint show --name``)."""

    def invoke(self, callback, *args, **kwargs):
        try:
            return super().invoke(callback, *args, **kwargs)
        except DeployError as exc:
            flag = self._flag(exc.argument) if exc.argument else None
            if flag and flag not in exc.message:
                body = exc.message[:-1] if exc.message.endswith(".") else exc.message
                exc.message = f"{body} ({flag})."
            raise

    def _flag(self, argument: str) -> Optional[str]:
        options = {param.name: param for param in self.command.params
                   if isinstance(param, click.Option)}
        noun = self.parent.command.name if self.parent is not None else None
        itself = ["name"] if noun and noun.endswith(argument) else []
        for name in [argument, argument + "_", argument + "_name", *itself]:
            if name in options:
                return max(options[name].opts, key=len)  # --name rather than -n
        return None


def _commands(command: click.Command) -> Iterator[click.Command]:
    yield command
    for sub in getattr(command, "commands", {}).values():
        yield from _commands(sub)


cli.context_class = FlagContext


def main(argv=None) -> None:
    """Console script entry point."""
    cli.main(args=argv, prog_name="mlflow-deploy")
