"""``mlflow-deploy compute ...``: the computes batch deployments name (``compute:
azureml:NAME``), as ``az ml compute`` registers them in a workspace: ``local`` (this machine's
processes) or ``dask`` (a Dask cluster's scheduler, or a local cluster per job). JSON on stdout.
"""
from typing import Optional

import click

from .common import say
from .online_endpoint import print_json

__all__ = ["compute_group"]


@click.group("compute")
def compute_group():
    """Computes: where batch jobs run (local processes or a Dask cluster)."""


@compute_group.command("create")
@click.option("-n", "--name", required=True, help="The compute's name.")
@click.option("-t", "--type", "type_", required=True, metavar="local|dask",
              help="local: this machine's processes; dask: a Dask cluster.")
@click.option("--scheduler-address", default=None, metavar="tcp://HOST:PORT",
              help="The Dask scheduler (type dask); without it each job starts a local "
              "cluster.")
@click.option("--description", default=None, help="A description.")
def create(name: str, type_: str, scheduler_address: Optional[str], description: Optional[str]):
    """Register a compute; print it."""
    from mlflow_deploy.batch import computes

    print_json(computes.create_compute(name, type_, scheduler_address, description))


@compute_group.command("show")
@click.option("-n", "--name", required=True, help="The compute's name.")
def show(name: str):
    """Print the compute, with the batch deployments that use it."""
    from mlflow_deploy.batch import computes

    print_json(computes.show_compute(name))


@compute_group.command("list")
def list_():
    """Print every compute."""
    from mlflow_deploy.batch import computes

    print_json(computes.list_computes())


@compute_group.command("delete")
@click.option("-n", "--name", required=True, help="The compute's name.")
@click.option("-y", "--yes", is_flag=True, help="Accepted: deletes do not ask here.")
def delete(name: str, yes: bool):
    """Delete a compute no batch deployment uses."""
    from mlflow_deploy.batch import computes

    computes.delete_compute(name)
    say("deleted compute " + name)
