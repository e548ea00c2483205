"""``mlflow-deploy compute ...``: the computes batch deployments name (``compute:
azureml:NAME``), as ``az ml compute`` registers them in a workspace: ``local`` (this machine's
processes) or ``dask`` (a Dask cluster's scheduler, or a local cluster per job). JSON on stdout.
"""
from typing import Optional

import click

from .common import add_show_list_delete, columns, print_json

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


def _show(name: str):
    """Print the compute, with the batch deployments that use it."""
    from mlflow_deploy.batch import computes

    return computes.show_compute(name)


def _list():
    """Print every compute."""
    from mlflow_deploy.batch import computes

    return computes.list_computes()


def _delete(name: str):
    """Delete a compute no batch deployment uses."""
    from mlflow_deploy.batch import computes

    computes.delete_compute(name)


add_show_list_delete(compute_group, "compute", "compute", _show, _list, _delete,
                     columns("name", "type", "scheduler_address", "provisioning_state",
                             "batch_deployments"), no_wait=False)
