"""``mlflow-deploy batch-deployment ...``: ``az ml batch-deployment`` on this machine, from the
same ``modelBatchDeployment`` YAML (``model``, ``code_configuration``, ``environment``,
``compute``, ``resources``, ``settings``), with the same verbs and flags.

The first deployment of an endpoint without a default becomes its default, as on Azure;
``--set-default`` makes a new or updated one the default. Local settings (``env_manager``,
``python_version_policy``, ``exclude_newer``, ``package``) go in ``tags`` as
``mlflow-deploy/<setting>`` or through ``--set``, so the same file still passes ``az ml``.
"""
from dataclasses import fields
from typing import Any, Dict, Optional, Sequence, Set

import click

from .common import add_show_list_delete, columns, print_json, say_warnings, with_options
from .online_endpoint import FILE, LOCAL, SET
from .progress import steps

__all__ = ["batch_deployment_group"]

NAME = click.option("-n", "--name", default=None, help="The deployment's name.")
ENDPOINT = click.option("-e", "--endpoint-name", default=None, help="The endpoint's name.")
SET_DEFAULT = click.option("--set-default", is_flag=True,
                           help="Make it the endpoint's default deployment.")
# create and update take the same file and flags
SPEC_OPTIONS = with_options(FILE, NAME, ENDPOINT, SET, SET_DEFAULT, LOCAL,
                            click.option("--no-wait", is_flag=True, hidden=True, help="Accepted."))
# the YAML's keys that are no config key of their own: what a --set under them changes
_SCRIPT_KEYS = {"code_configuration": ("code", "scoring_script"),
                "environment": ("conda_file",)}


@click.group("batch-deployment")
def batch_deployment_group():
    """Deployments of a model (or a scoring script) behind a batch endpoint."""


def _spec(file, name, endpoint_name, set_values):
    from mlflow_deploy.specs import load_batch_deployment_spec

    return say_warnings(load_batch_deployment_spec(file, name=name, endpoint_name=endpoint_name,
                                                   set_values=set_values))


def _touched(set_values: Sequence[str]) -> Set[str]:
    """The config keys (and ``model``, ``description``, ``tags``) that ``--set`` items give."""
    from mlflow_deploy.specs import BatchSettings, set_path

    # a whole block given gives each key in it, from the spec: a key the block leaves out has
    # its default, as the block replaces the deployment's (environment variables are added to
    # the others, as below)
    blocks = {"settings": [f.name for f in fields(BatchSettings)] + ["instance_count"],
              "resources": ["instance_count"]}
    keys: Set[str] = set()
    for path in map(set_path, set_values):
        if path[0] == "settings" and len(path) > 1:
            path = path[1:]
        head = path[0]
        if head == "retry_settings" and len(path) > 1:
            keys.add(path[1])  # one field: max_retries or timeout, the other one kept
        elif head == "resources" and len(path) > 1:
            keys.add(path[1])
        elif head in blocks:
            keys.update(blocks[head])
        elif head in _SCRIPT_KEYS:
            keys.update(_SCRIPT_KEYS[head])
        elif head == "tags":
            keys.add("tags")
        else:
            keys.add(head)
    return keys


def _update_arguments(spec, file: Optional[str], set_values: Sequence[str]) -> Dict[str, Any]:
    """With a file, everything it says (as ``az ml`` replaces a deployment by its file); with
    ``--set`` items alone, only what they change, as ``az ml`` sets them on the deployment it
    fetched (a tag or an environment variable is added to the others, by the update, under the
    deployment's lock): the spec would fill the rest with defaults."""
    from mlflow_deploy.batch.deployments import config_from_spec

    config = config_from_spec(spec)
    if file:
        return {"model_uri": spec.model, "config": config, "description": spec.description,
                "tags": dict(spec.tags)}
    touched = _touched(set_values)
    kept = {key: value for key, value in config.items()
            if key in touched or key in spec.settings}
    for field in ("max_retries", "timeout"):
        if field in touched and "retry_settings" not in touched:
            kept[field] = config["retry_settings"][field]
    return {"model_uri": spec.model, "config": kept, "description": spec.description,
            "tags": dict(spec.tags) if "tags" in touched else None, "added": True}


@batch_deployment_group.command("create")
@SPEC_OPTIONS
def create(file, name, endpoint_name, set_values, set_default, local, no_wait):
    """Fetch the model, copy the code, build the environment; print the deployment."""
    from mlflow_deploy.batch import deployments

    spec = _spec(file, name, endpoint_name, set_values)
    with steps():
        created = deployments.create_batch_deployment(spec, set_default=set_default)
    print_json(created)


@batch_deployment_group.command("update")
@SPEC_OPTIONS
def update(file, name, endpoint_name, set_values, set_default, local, no_wait):
    """Build the next revision aside and switch to it once it is complete; on failure the
    deployment is as it was."""
    from mlflow_deploy.batch import deployments

    spec = _spec(file, name, endpoint_name, set_values)
    arguments = _update_arguments(spec, file, set_values)
    with steps():
        updated = deployments.update_batch_deployment(spec.name, spec.endpoint_name,
                                                      set_default=set_default, **arguments)
    print_json(updated)


def _show(name: str, endpoint_name: str):
    """Print the deployment."""
    from mlflow_deploy.batch import deployments

    return deployments.get_batch_deployment(name, endpoint_name)


def _list(endpoint_name: str):
    """Print the endpoint's deployments."""
    from mlflow_deploy.batch import deployments

    return deployments.list_batch_deployments(endpoint_name)


def _delete(name: str, endpoint_name: str):
    """Delete a deployment (not the endpoint's default while it has others)."""
    from mlflow_deploy.batch import deployments
    from mlflow_deploy.store import Store

    store = Store()
    deployments.get_batch_deployment(name, endpoint_name, store)  # NotFound names the flag
    deployments.delete_batch_deployment(name, endpoint_name, store=store)


add_show_list_delete(batch_deployment_group, "deployment", "batch deployment", _show, _list,
                     _delete, columns("name", "endpoint_name", "is_default", "model", "compute",
                                      "provisioning_state"), of_endpoint=True)
