"""Batch endpoints, as ``az ml batch-endpoint`` has them: a name, a description, tags and the
default deployment (``defaults.deployment_name``) that an invocation naming none runs.

An endpoint name is unique on this machine, online and batch alike, as Azure keeps endpoint
names unique per region. Deleting an endpoint deletes its deployments and their folders; its jobs
stay listed (Azure keeps them too).
"""

from typing import Any, Dict, List, Mapping, Optional

from mlflow_deploy.batch import deployments as _deployments
from mlflow_deploy.errors import (AlreadyExists, InvalidParameter, InvalidState, NotFound,
                                  name_taken)
from mlflow_deploy.names import check_name
from mlflow_deploy.store import BATCH_DEPLOYMENTS, BATCH_ENDPOINTS, BatchEndpoint, Store

__all__ = ["create_batch_endpoint", "update_batch_endpoint", "get_batch_endpoint",
           "list_batch_endpoints", "delete_batch_endpoint", "describe_batch_endpoint",
           "find_batch_endpoint", "config_values", "CONFIG_KEYS"]

#: what the plugin's create_endpoint/update_endpoint config takes for a batch endpoint
CONFIG_KEYS = ("description", "tags", "default_deployment")


def find_batch_endpoint(store: Store, name: str) -> Optional[BatchEndpoint]:
    return store.find(BATCH_ENDPOINTS, name) if isinstance(name, str) and name else None


def _get(store: Store, name: str) -> BatchEndpoint:
    endpoint = find_batch_endpoint(store, name)
    if endpoint is None:
        raise NotFound("No batch endpoint with this name.", argument="name")
    return endpoint


def _tags(tags: Any) -> Dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping) or not all(isinstance(k, str) for k in tags):
        raise InvalidParameter("Config 'tags' must map names to text.")
    return {key: str(value) for key, value in tags.items()}


def _description(description: Any) -> Optional[str]:
    if description is not None and not isinstance(description, str):
        raise InvalidParameter("Config 'description' must be text.")
    return description


def config_values(config: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The plugin's endpoint config (``-C`` strings or Python values) as the keyword arguments
    of create/update: ``description``, ``tags`` (a mapping or its JSON) and
    ``default_deployment`` (also spelled as Azure's ``defaults.deployment_name``)."""
    from mlflow_deploy.settings import json_object

    values: Dict[str, Any] = {}
    for key, value in (config or {}).items():
        if key == "defaults.deployment_name":
            key = "default_deployment"
        if key not in CONFIG_KEYS:
            raise InvalidParameter(f"Unknown batch endpoint config key '{key}'. Known keys: "
                                   + ", ".join(CONFIG_KEYS) + ".")
        if key == "tags":
            value = dict(json_object("tags", value, "names to text"))
        values[key] = value
    return values


def create_batch_endpoint(name: str, description: Optional[str] = None,
                          tags: Optional[Mapping[str, str]] = None,
                          default_deployment: Optional[str] = None,
                          store: Optional[Store] = None) -> Dict[str, Any]:
    """Record the endpoint. ``default_deployment`` may name a deployment still to be created
    (Azure's own example files do): invocations without a deployment wait for it."""
    store = store or Store()
    check_name(name, "endpoint name", "name")
    if default_deployment is not None:
        check_name(default_deployment, "default deployment (defaults.deployment_name)")
    endpoint = BatchEndpoint(name=name, description=_description(description), tags=_tags(tags),
                             default_deployment=default_deployment)
    with store.lock_row(BATCH_ENDPOINTS, name), store.lock():
        if store.find_endpoint(name) is not None:
            raise AlreadyExists("An online endpoint has this name: endpoint names are unique "
                                "on this machine, online and batch alike.", argument="name")
        store.add(BATCH_ENDPOINTS, endpoint, name_taken("A batch endpoint", "name"))
        return describe_batch_endpoint(endpoint, store)


def update_batch_endpoint(name: str, description: Optional[str] = None,
                          tags: Optional[Mapping[str, str]] = None,
                          default_deployment: Optional[str] = None,
                          store: Optional[Store] = None, added: bool = False) -> Dict[str, Any]:
    """Change what is given (None: unchanged). A new default must be a deployment of the
    endpoint. ``added``: the tags are added to the endpoint's own (as ``--set`` items add
    them), under the store's lock, so that no update at the same time loses one."""
    store = store or Store()
    with store.lock():
        endpoint = _get(store, name)
        if description is not None:
            endpoint.description = _description(description)
        if tags is not None:
            endpoint.tags = _tags({**endpoint.tags, **tags} if added else tags)
        if default_deployment is not None:
            check_name(default_deployment, "default deployment (defaults.deployment_name)")
            if store.find(BATCH_DEPLOYMENTS, _deployments.key_of(name, default_deployment)) \
                    is None:
                raise NotFound("The batch endpoint has no deployment with the name given in "
                               "defaults.deployment_name.")
            endpoint.default_deployment = default_deployment
        store.save(BATCH_ENDPOINTS, endpoint)
        return describe_batch_endpoint(endpoint, store)


def get_batch_endpoint(name: str, store: Optional[Store] = None) -> Dict[str, Any]:
    store = store or Store()
    return describe_batch_endpoint(_get(store, name), store)


def list_batch_endpoints(store: Optional[Store] = None) -> List[Dict[str, Any]]:
    store = store or Store()
    return [describe_batch_endpoint(e, store) for e in store.select(BATCH_ENDPOINTS)]


def delete_batch_endpoint(name: str, store: Optional[Store] = None) -> None:
    """Delete the endpoint and its deployments (their folders too); its jobs stay listed.
    Deleting one that does not exist is not an error (MLflow's BaseDeploymentClient contract;
    the CLI says NotFound itself)."""
    store = store or Store()
    if find_batch_endpoint(store, name) is None:
        return
    with store.lock_row(BATCH_ENDPOINTS, name):
        while True:
            members = store.select(BATCH_DEPLOYMENTS, endpoint=name)
            if not members:
                break
            _deployments.check_no_running_jobs(store, name, [d.name for d in members])
            for deployment in members:
                _deployments.delete_batch_deployment(deployment.name, name, store=store,
                                                     _with_endpoint=True)
        with store.lock():
            if store.select(BATCH_DEPLOYMENTS, endpoint=name):  # a create got in meanwhile
                raise InvalidState("A deployment was added to the batch endpoint while it was "
                                   "being deleted: delete it again.")
            store.remove(BATCH_ENDPOINTS, name)
    _deployments.remove_endpoint_folder(store, name)


def describe_batch_endpoint(endpoint: BatchEndpoint, store: Store) -> Dict[str, Any]:
    """What ``batch-endpoint show`` prints, shaped like ``az ml batch-endpoint show``."""
    deployments = store.select(BATCH_DEPLOYMENTS, endpoint=endpoint.name)
    return {
        "name": endpoint.name,
        "kind": "batch",
        "description": endpoint.description,
        "tags": dict(endpoint.tags),
        "defaults": {"deployment_name": endpoint.default_deployment},
        "deployments": [d.name for d in deployments],
        "auth_mode": "none",
        "provisioning_state": "Succeeded",
        "invoke": f"mlflow-deploy batch-endpoint invoke --name {endpoint.name} --input PATH",
    }
