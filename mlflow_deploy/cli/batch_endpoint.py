"""``mlflow-deploy batch-endpoint ...``: ``az ml batch-endpoint`` on this machine, with the same
verbs, flags and YAML files (``-f endpoint.yml``, ``--set defaults.deployment_name=D``).

Like ``az ml``, ``show``, ``list`` and the changes print JSON on stdout; warnings and progress go
to stderr. ``ui``, which ``az ml`` has not (Azure ML studio is its page), serves the jobs' page in
the foreground and prints its URL.
"""
from typing import Optional

import click

from mlflow_deploy.errors import NotFound

from .common import (OUTPUT, add_show_list_delete, columns, named_flag, print_json, say,
                     say_warnings)
from .online_endpoint import CREATE_OPTIONS, FILE, LOCAL, SET

__all__ = ["batch_endpoint_group"]

NAME = click.option("-n", "--name", default=None, help="The endpoint's name.")


@click.group("batch-endpoint")
def batch_endpoint_group():
    """Batch endpoints: a name and a default deployment that jobs run."""


def _spec(file, name, set_values):
    from mlflow_deploy.specs import load_batch_endpoint_spec

    return say_warnings(load_batch_endpoint_spec(file, name=name, set_values=set_values))


@batch_endpoint_group.command("create")
@CREATE_OPTIONS
def create(file: Optional[str], name: Optional[str], set_values, local: bool, no_wait: bool):
    """Create a batch endpoint; print it. ``defaults.deployment_name`` may name a deployment
    still to be created; otherwise its first deployment becomes its default."""
    from mlflow_deploy.batch import endpoints

    spec = _spec(file, name, set_values)
    print_json(endpoints.create_batch_endpoint(spec.name, spec.description, spec.tags,
                                               spec.default_deployment))


@batch_endpoint_group.command("update")
@FILE
@NAME
@SET
@LOCAL
@click.option("--no-wait", is_flag=True, hidden=True, help="Accepted; updates are quick here.")
def update(file, name, set_values, local, no_wait):
    """Change the description, the tags or the default deployment
    (``--set defaults.deployment_name=D``: a deployment of the endpoint)."""
    from mlflow_deploy.batch import endpoints

    spec = _spec(file, name, set_values)
    # a file gives the tags whole; a --set item adds one to the others (under the store's
    # lock), as az ml sets it on the endpoint it fetched
    tagged = any(v.split("=", 1)[0].strip().split(".")[0] == "tags" for v in set_values)
    tags = spec.tags if file or tagged else None
    print_json(endpoints.update_batch_endpoint(
        spec.name, description=spec.description, tags=tags,
        default_deployment=spec.default_deployment, added=not file))


def _show(name: str):
    """Print the endpoint, with its default deployment."""
    from mlflow_deploy.batch import endpoints

    return endpoints.get_batch_endpoint(name)


def _list():
    """Print every batch endpoint."""
    from mlflow_deploy.batch import endpoints

    return endpoints.list_batch_endpoints()


def _delete(name: str):
    """Delete the endpoint and its deployments; its jobs stay listed."""
    from mlflow_deploy.batch import endpoints
    from mlflow_deploy.store import Store

    store = Store()
    if endpoints.find_batch_endpoint(store, name) is None:
        raise NotFound("No batch endpoint with this name (--name).")
    endpoints.delete_batch_endpoint(name, store=store)


add_show_list_delete(batch_endpoint_group, "endpoint", "batch endpoint", _show, _list, _delete,
                     columns("name", "defaults.deployment_name", "deployments",
                             "provisioning_state", "description"))


@batch_endpoint_group.command("invoke")
@click.option("-n", "--name", required=True, help="The endpoint's name.")
@click.option("--input", "input_", required=True, metavar="PATH",
              help="A file, a folder (its files; nested folders are not explored) or a glob.")
@click.option("--input-type", type=click.Choice(["uri_file", "uri_folder"]), default=None,
              help="What --input must be, as az ml takes it.")
@click.option("-d", "--deployment-name", default=None,
              help="Run this deployment instead of the endpoint's default.")
@click.option("--output-path", default=None, metavar="DIR",
              help="The output folder (default: the job's own outputs/ folder).")
@click.option("--set", "set_values", multiple=True, metavar="KEY=VALUE",
              help="Override a setting for this job: output_file_name, output_action, "
                   "output_format (azure, csv, parquet), logging_level, "
                   "environment_variables.NAME, executor (local, dask), scheduler_address, "
                   "...; repeatable.")
@click.option("--mini-batch-size", type=int, default=None, help="Files per mini-batch.")
@click.option("--instance-count", type=int, default=None, help="Instances the job runs on.")
@click.option("--max-concurrency-per-instance", type=int, default=None,
              help="Mini-batches each instance scores at once.")
@click.option("--max-retries", type=int, default=None,
              help="Tries of a failed mini-batch after the first.")
@click.option("--timeout", type=int, default=None, help="Seconds each try of a mini-batch has.")
@click.option("--error-threshold", type=int, default=None,
              help="Failed files the job tolerates (-1: any number).")
@click.option("--wait", is_flag=True,
              help="Follow the job's log and progress until it ends; fail unless it completed.")
def invoke(name, input_, input_type, deployment_name, output_path, set_values, mini_batch_size,
           instance_count, max_concurrency_per_instance, max_retries, timeout, error_threshold,
           wait):
    """Start a batch scoring job over the input; print its name."""
    from mlflow_deploy.batch import jobs

    from .job import raise_unless_completed
    from .progress import follow_job

    flags = dict(mini_batch_size=mini_batch_size, instance_count=instance_count,
                 max_concurrency_per_instance=max_concurrency_per_instance,
                 max_retries=max_retries, timeout=timeout, error_threshold=error_threshold)
    for key, value in flags.items():
        if value is not None:
            with named_flag("--" + key.replace("_", "-")):
                jobs.parse_overrides(**{key: value})
    overrides = jobs.parse_overrides(set_values, **flags)
    job = jobs.invoke(name, input_, deployment=deployment_name, input_type=input_type,
                      output_path=output_path, overrides=overrides)
    for warning in job.get("warnings", ()):
        say(warning)
    click.echo(job["name"])
    if wait:
        raise_unless_completed(follow_job(job["name"]))


@batch_endpoint_group.command("list-jobs")
@click.option("-n", "--name", required=True, help="The endpoint's name.")
@OUTPUT
def list_jobs(name: str):
    """Print the endpoint's jobs, oldest first."""
    from mlflow_deploy.batch import jobs

    from .job import JOB_TABLE

    print_json(jobs.list_jobs(endpoint=name), JOB_TABLE)


@batch_endpoint_group.command("ui")
@NAME
@click.option("--port", type=int, default=0, show_default=True,
              help="Port on 127.0.0.1 (0: a free one).")
def ui(name: Optional[str], port: int):
    """Serve a page of the batch endpoints' jobs (or only this endpoint's) until Ctrl-C: their
    deployments, each job's status, progress, failed files and log, kept up to date. Its
    URL, printed here, carries the page's token: keep it to yourself."""
    from mlflow_deploy.batch import ui as page

    if not 0 <= port <= 65535:
        raise click.BadParameter("must be a port number from 0 to 65535.", param_hint="--port")
    page.serve(name, port, announce=click.echo)
