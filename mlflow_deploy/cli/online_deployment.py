"""``mlflow-deploy online-deployment ...``: ``az ml online-deployment`` on this machine, from the
same ``managedOnlineDeployment`` YAML (``model``, ``code_configuration``, ``environment``,
``request_settings``, ``environment_variables``, ...), with the same verbs and flags.

A new deployment of an existing endpoint takes no traffic unless ``--all-traffic`` (Azure's
rule); an endpoint that does not exist yet is created with the deployment and gives it all.
"""
from typing import Optional

import click

from mlflow_deploy.errors import InvalidParameter, NotFound

from .common import add_show_list_delete, columns, print_json, say, say_warnings
from .online_endpoint import FILE, LOCAL, SET
from .progress import steps

__all__ = ["online_deployment_group"]

NAME = click.option("-n", "--name", default=None, help="The deployment's name.")
ENDPOINT = click.option("-e", "--endpoint-name", default=None, help="The endpoint's name.")


@click.group("online-deployment")
def online_deployment_group():
    """Deployments of a model behind an online endpoint."""


def _spec(file, name, endpoint_name, set_values):
    from mlflow_deploy.specs import load_deployment_spec

    return say_warnings(load_deployment_spec(file, name=name, endpoint_name=endpoint_name,
                                             set_values=set_values))


@online_deployment_group.command("create")
@FILE
@NAME
@ENDPOINT
@SET
@click.option("--all-traffic", is_flag=True, help="Give the new deployment all the endpoint's "
              "traffic once it is ready.")
@LOCAL
@click.option("--no-wait", is_flag=True, hidden=True, help="Accepted.")
def create(file, name, endpoint_name, set_values, all_traffic, local, no_wait):
    """Build the model's environment, start the deployment, self-test it; print it."""
    from mlflow_deploy import online
    from mlflow_deploy.online.settings import config_from_spec

    spec = _spec(file, name, endpoint_name, set_values)
    config = config_from_spec(spec)
    if not spec.model:
        raise InvalidParameter("key 'model' is missing: give the model in the file or with "
                               "--set model=...")
    config["all_traffic"] = all_traffic
    with steps():
        created = online.create_deployment(spec.name, spec.model, config=config,
                                           endpoint=spec.endpoint_name)
    print_json(created)


@online_deployment_group.command("update")
@FILE
@NAME
@ENDPOINT
@SET
@LOCAL
@click.option("--no-wait", is_flag=True, hidden=True, help="Accepted.")
def update(file, name, endpoint_name, set_values, local, no_wait):
    """Serve a new model or settings with no failed request; on failure the running revision
    keeps serving. With a file, the file is the whole deployment (an Azure setting it leaves
    out goes back to its default); with --set items alone, only what they name changes."""
    from mlflow_deploy import online
    from mlflow_deploy.online.settings import config_from_set, config_from_spec
    from mlflow_deploy.specs import set_path

    spec = _spec(file, name, endpoint_name, set_values)
    paths = [set_path(item) for item in set_values]
    with steps():
        # --set items alone change the deployment as it is once its lock is ours
        updated = online.update_deployment(
            spec.name, model_uri=spec.model, endpoint=spec.endpoint_name,
            config=config_from_spec(spec) if file else None,
            config_of=None if file else lambda current: config_from_set(spec, paths, current))
    print_json(updated)


def _show(name: str, endpoint_name: str):
    """Print the deployment, with its state from a live probe."""
    from mlflow_deploy import online

    return online.get_deployment(name, endpoint=endpoint_name)


def _list(endpoint_name: str):
    """Print the endpoint's deployments."""
    from mlflow_deploy import online

    return online.list_deployments(endpoint=endpoint_name)


def _delete(name: str, endpoint_name: str):
    """Delete a deployment that takes no traffic (move its traffic first)."""
    from mlflow_deploy import online
    from mlflow_deploy.store import Store

    store = Store()
    deployment = store.find_deployment(name)
    if deployment is None or deployment.endpoint != endpoint_name:
        raise NotFound("The endpoint has no deployment with this name (--name, --endpoint-name).")
    online.delete_deployment(name, endpoint=endpoint_name, store=store)


add_show_list_delete(online_deployment_group, "deployment", "deployment", _show, _list, _delete,
                     columns("name", "endpoint", "state", "model_uri", "traffic",
                             "instance_count", "scoring_uri"), of_endpoint=True)


@online_deployment_group.command("get-logs")
@click.option("-n", "--name", required=True, help="The deployment's name.")
@click.option("-e", "--endpoint-name", required=True, help="The endpoint's name.")
@click.option("-l", "--lines", type=click.IntRange(min=1), default=None,
              help="Only the last N lines (of each instance).")
@click.option("-f", "--follow", is_flag=True,
              help="Then print each new line as it comes, until Ctrl-C.")
def get_logs(name: str, endpoint_name: str, lines: Optional[int], follow: bool):
    """Print the deployment's server log: a line per request (its request id, route, status,
    latency and, for an error, why) and whatever the server, the model or the scoring script
    printed. With several instances each line starts with its instance's number, "[k] ", and
    --lines takes the last N of each."""
    from mlflow_deploy import online

    several = len(online.deployment_log_paths(name, endpoint=endpoint_name)) > 1
    found = (online.follow_deployment_logs if follow else online.deployment_logs)(
        name, endpoint=endpoint_name, lines=lines)
    try:
        for index, line in found:
            click.echo("[{}] {}".format(index, line) if several else line)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how following ends
