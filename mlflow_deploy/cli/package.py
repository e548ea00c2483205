"""``mlflow-deploy package MODEL_URI --output DIR``: a model with its lock and every wheel it needs,
so that its environment builds later on a machine with no network."""
import contextlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import click

from mlflow_deploy.envs import PythonVersionWarning, lock_requirements, write_package
from mlflow_deploy.envs.cache import tree_size
from mlflow_deploy.errors import AlreadyExists

from .common import EXCLUDE_NEWER, PYTHON_VERSION_POLICY, checked_date, human, say
from .progress import steps

__all__ = ["package_command"]


@click.command("package")
@click.argument("model_uri")
@click.option("--output", "-o", required=True, metavar="DIR",
              help="Folder to write (must not exist, or be empty).")
@PYTHON_VERSION_POLICY
@click.option("--refresh", is_flag=True, help="Resolve the requirements again.")
@EXCLUDE_NEWER
def package_command(model_uri: str, output: str, python_version_policy: str, refresh: bool,
                    exclude_newer: Optional[str]):
    """Write MODEL_URI with its lock and every wheel it needs into DIR, so that its environment
    builds later with no network: `mlflow-deploy env build DIR/model --package DIR`."""
    from mlflow_deploy.model import load_model  # imports mlflow's model API

    target = Path(output).expanduser().absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise AlreadyExists("The output folder already exists and is not empty (--output).")
    target.parent.mkdir(parents=True, exist_ok=True)
    # written aside and renamed: an interrupted package leaves no half folder at DIR
    staging = Path(tempfile.mkdtemp(prefix="." + target.name + ".partial-", dir=str(target.parent)))
    try:
        with steps():
            info = load_model(model_uri, staging / "download", copy_local=True)
            os.rename(str(info.path), str(staging / "model"))
            shutil.rmtree(str(staging / "download"), ignore_errors=True)
            with contextlib.ExitStack() as hold:  # the wheel stays ours (`env prune`) until copied
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", PythonVersionWarning)
                    locked = lock_requirements(staging / "model", python_version_policy,
                                               refresh, say, hold=hold,
                                               exclude_newer=checked_date(exclude_newer))
                package = write_package(locked, staging, model_uri=model_uri, progress=say)
        if target.exists():
            target.rmdir()
        os.rename(str(staging), str(target))
    except BaseException:
        shutil.rmtree(str(staging), ignore_errors=True)
        raise
    wheels = sorted((target / "wheelhouse").glob("*.whl"))
    click.echo("package: {}\npython: {}\nwheels: {}\nsize: {}\nenv_key: {}".format(
        target, package.manifest["python_version"], len(wheels), human(tree_size(target)),
        package.manifest["env_key"]))
