"""``mlflow-deploy online-endpoint ...``: ``az ml online-endpoint`` on this machine, with the same
verbs, flags and YAML files (``-f endpoint.yml``, ``--set``, ``--traffic``), plus ``start`` (after
a reboot) and ``show-mirror`` (the agreement report of mirrored traffic, which Azure lacks).

Like ``az ml``, ``show``, ``list``, ``get-credentials`` and the changes print JSON on stdout;
warnings and progress go to stderr.
"""
from pathlib import Path
from typing import Any, Dict, Optional

import click

from mlflow_deploy.errors import InvalidParameter

from .common import add_show_list_delete, columns, print_json, say, say_warnings, with_options

__all__ = ["online_endpoint_group", "print_json", "FILE", "SET", "LOCAL", "CREATE_OPTIONS"]

FILE = click.option("-f", "--file", "file", default=None, metavar="YAML",
                    help="The Azure ML CLI v2 YAML file ($schema is ignored).")
SET = click.option("--set", "set_values", multiple=True, metavar="KEY=VALUE",
                   help="Override a key of the YAML, dotted for nested keys "
                        "(request_settings.request_timeout_ms=3000); repeatable.")
LOCAL = click.option("--local", is_flag=True, hidden=True,
                     help="Accepted and ignored: everything here is local.")
NAME = click.option("-n", "--name", default=None, help="The endpoint's name.")
#: what creating an endpoint, online or batch, takes
CREATE_OPTIONS = with_options(
    FILE, NAME, SET, LOCAL,
    click.option("--no-wait", is_flag=True, hidden=True, help="Accepted; creates are quick here."))


@click.group("online-endpoint")
def online_endpoint_group():
    """Online endpoints: one URL, keys, traffic between deployments, mirrored traffic."""


def _endpoint_config(spec) -> Dict[str, Any]:
    say_warnings(spec)
    return {"auth_mode": spec.auth_mode, "description": spec.description}


@online_endpoint_group.command("create")
@CREATE_OPTIONS
def create(file: Optional[str], name: Optional[str], set_values, local: bool, no_wait: bool):
    """Create an endpoint and start its gateway; print it."""
    from mlflow_deploy.online import endpoints
    from mlflow_deploy.specs import load_endpoint_spec

    spec = load_endpoint_spec(file, name=name, set_values=set_values)
    if any(share > 0 for share in [*spec.traffic.values(), *spec.mirror_traffic.values()]):
        # a new endpoint has no deployment yet to take the traffic (az ml refuses it too)
        raise InvalidParameter("key 'traffic' (or 'mirror_traffic') names deployments a new "
                               "endpoint does not have yet: create them, then `update "
                               "--traffic`.")
    print_json(endpoints.create_endpoint(spec.name, config=_endpoint_config(spec)))


def _traffic_config(spec) -> Dict[str, Any]:
    config: Dict[str, Any] = {}
    if spec.traffic:
        config["traffic"] = spec.traffic
    if spec.mirror_traffic:
        config["mirror_traffic"] = spec.mirror_traffic
    return config


@online_endpoint_group.command("update")
@FILE
@NAME
@SET
@click.option("--traffic", default=None, metavar='"BLUE=90 GREEN=10"',
              help="The share of live traffic each deployment takes (whole percents, 100 in all).")
@click.option("--mirror-traffic", default=None, metavar='"GREEN=10"',
              help="The share of requests copied to a deployment (50 in all at most).")
@LOCAL
@click.option("--no-wait", is_flag=True, hidden=True, help="Accepted; updates are quick here.")
def update(file, name, set_values, traffic, mirror_traffic, local, no_wait):
    """Change traffic, mirrored traffic, auth mode or description; the gateway applies it
    without a restart, and without dropping a request."""
    from mlflow_deploy.online import endpoints
    from mlflow_deploy.specs import load_endpoint_spec

    spec = load_endpoint_spec(file, name=name, set_values=set_values, traffic=traffic,
                              mirror_traffic=mirror_traffic)
    config = _traffic_config(spec)
    # the spec's auth mode defaults to Azure's (key): applied only when the file or a --set says
    if file or any(v.split("=", 1)[0].strip() in ("auth_mode", "description")
                   for v in set_values):
        config.update(_endpoint_config(spec))
    print_json(endpoints.update_endpoint(spec.name, config=config))


def _show(name: str):
    """Print the endpoint (never its keys)."""
    from mlflow_deploy.online import endpoints

    return endpoints.get_endpoint(name)


def _list():
    """Print every endpoint, with its state (Running or Stopped)."""
    from mlflow_deploy.online import endpoints

    return endpoints.list_endpoints()


def _delete(name: str):
    """Delete the endpoint, its gateway and its deployments."""
    from mlflow_deploy.online import endpoints

    endpoints.delete_endpoint(name)


add_show_list_delete(online_endpoint_group, "endpoint", "endpoint", _show, _list, _delete,
                     columns("name", "state", "auth_mode", "scoring_uri", "traffic",
                             "mirror_traffic"))


@online_endpoint_group.command("get-credentials")
@click.option("-n", "--name", required=True, help="The endpoint's name.")
def get_credentials(name: str):
    """Print the endpoint's keys: {"primaryKey": ..., "secondaryKey": ...}."""
    from mlflow_deploy.online import endpoints

    print_json(endpoints.get_credentials(name))


@online_endpoint_group.command("regenerate-keys")
@click.option("-n", "--name", required=True, help="The endpoint's name.")
@click.option("--key-type", type=click.Choice(["primary", "secondary"]), default="primary",
              show_default=True, help="Which key to replace; the other keeps working.")
def regenerate_keys(name: str, key_type: str):
    """Replace one key: the old one is refused as soon as this returns."""
    from mlflow_deploy.online import endpoints

    endpoints.regenerate_keys(name, key_type)
    say(f"regenerated the {key_type} key of endpoint {name}")


@online_endpoint_group.command("invoke")
@click.option("-n", "--name", required=True, help="The endpoint's name.")
@click.option("-r", "--request-file", required=True, metavar="JSON",
              help="The request body, sent as it is.")
@click.option("-d", "--deployment-name", default=None,
              help="Send it to this deployment (Azure's azureml-model-deployment header).")
def invoke(name: str, request_file: str, deployment_name: Optional[str]):
    """POST the request file to the endpoint with its key and print the answer."""
    from mlflow_deploy.online import endpoints

    try:
        body = Path(request_file).read_bytes()
    except OSError:
        raise InvalidParameter("--request-file cannot be read.") from None
    print_json(endpoints.invoke(name, body, deployment_name))


@online_endpoint_group.command("start")
@click.option("-n", "--name", required=True, help="The endpoint's name.")
def start(name: str):
    """Start a stopped endpoint (after a reboot): its deployments and its gateway, on the same
    URL, with the same keys and traffic."""
    from mlflow_deploy.online import endpoints

    print_json(endpoints.start_endpoint(name))


@online_endpoint_group.command("show-mirror")
@click.option("-n", "--name", required=True, help="The endpoint's name.")
@click.option("--rtol", type=click.FloatRange(min=0.0), default=None,
              help="Relative tolerance under which numeric predictions agree (default 1e-6).")
def show_mirror(name: str, rtol: Optional[float]):
    """How each mirrored deployment answers compared with the live one: copies, agreement,
    errors, p50/p99 latency of both (counts only; no payload is kept)."""
    from mlflow_deploy.online import endpoints

    print_json(endpoints.mirror_report(name, rtol))
