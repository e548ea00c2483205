"""Online endpoints: one URL (the endpoint's gateway) in front of one or more deployments.

An endpoint is its row (traffic, mirrored traffic, auth mode, the gateway's port), its keys
(owner-only, beside the gateway's routing table) and its gateway process (``gateway.py``), which
every change brings in line with the row (``traffic.sync_gateway``). Deleting an endpoint deletes
its deployments, as ``az ml online-endpoint delete`` does.
"""

import json
from typing import Any, Dict, List, Mapping, Optional

from mlflow_deploy.errors import InvalidParameter, InvalidState
from mlflow_deploy.online import deployments as _deployments
from mlflow_deploy.online import gateways
from mlflow_deploy.online.invoke import post
from mlflow_deploy.names import check_name
from mlflow_deploy.specs import parse_share_map
from mlflow_deploy.online.routes import Keys
from mlflow_deploy.online.settings import parse_settings
from mlflow_deploy.online.traffic import (
    check_mirror_traffic,
    check_not_batch,
    check_traffic,
    endpoint_uri,
    gateway_alive,
    gateway_config,
    keys_path,
    new_key,
    stop_gateway,
    sync_gateway,
    write_new_keys,
)
from mlflow_deploy.store import ENDPOINTS, Endpoint, Store

__all__ = [
    "create_endpoint",
    "update_endpoint",
    "delete_endpoint",
    "list_endpoints",
    "get_endpoint",
    "start_endpoint",
    "get_credentials",
    "regenerate_keys",
    "mirror_report",
    "invoke",
    "parse_traffic",
]

AUTH_MODES = ("key", "none")
CREATE_KEYS = ("auth_mode", "description", "host", "port")
UPDATE_KEYS = ("auth_mode", "description", "traffic", "mirror_traffic")


def _check_keys(config: Mapping[str, Any], allowed) -> None:
    for key in config:
        if key not in allowed:
            raise InvalidParameter(
                f"Unknown endpoint config key '{key}'. Known keys: " + ", ".join(allowed) + "."
            )


def _auth_mode(value: Any) -> str:
    text = str(value).strip().lower()
    if text in AUTH_MODES:
        return text
    if text in ("aml_token", "aad_token"):
        raise InvalidParameter("Config 'auth_mode': tokens need Azure; use 'key' or 'none' here.")
    raise InvalidParameter("Config 'auth_mode' must be 'key' or 'none'.")


def _host(value: Any, auth_mode: str) -> str:
    """127.0.0.1 unless asked: an endpoint reachable from other machines must check a key."""
    text = str(value).strip()
    if text not in ("127.0.0.1", "localhost") and auth_mode != "key":
        raise InvalidParameter("Config 'host': an endpoint bound beyond 127.0.0.1 needs "
                               "auth_mode 'key'.")
    return "127.0.0.1" if text == "localhost" else text


def _port(value: Any) -> Optional[int]:
    """The gateway's port, checked as a deployment's config 'port' is (None or "auto": free)."""
    return parse_settings({"port": value}).port


def parse_traffic(value: Any, key: str = "traffic") -> Dict[str, int]:
    """``{"blue": 100}``, a JSON object, or Azure CLI's ``"blue=90 green=10"`` (or with commas)."""
    text = json.dumps(dict(value)) if isinstance(value, Mapping) else str(value)
    return parse_share_map(text, f"Config '{key}'")


def create_endpoint(
    name: str, config: Optional[Mapping[str, Any]] = None, store: Optional[Store] = None
) -> Dict[str, Any]:
    """Record the endpoint, write its keys and start its gateway; on failure nothing stays."""
    store = store or Store()
    check_name(name, "endpoint name", "endpoint")
    config = dict(config or {})
    _check_keys(config, CREATE_KEYS)
    auth_mode = _auth_mode(config.get("auth_mode", "key"))
    host = _host(config.get("host", "127.0.0.1"), auth_mode)
    port = _port(config.get("port"))
    with store.lock_row(ENDPOINTS, name), store.lock():
        check_not_batch(store, name)
        store.add_endpoint(Endpoint(name=name, auth_mode=auth_mode, host=host, port=port,
                                    description=config.get("description")))
        try:
            if auth_mode == "key":
                write_new_keys(store, name)
            sync_gateway(store, name)
        except BaseException:
            store.remove_endpoint(name)
            _remove_files(store, name)
            raise
        return describe_endpoint(store.get_endpoint(name), store)


def update_endpoint(
    endpoint: str, config: Optional[Mapping[str, Any]] = None, store: Optional[Store] = None
) -> Dict[str, Any]:
    """Change auth, description, traffic or mirrored traffic; the gateway routes by the new
    table when this returns. On failure the row and the gateway stay as they were."""
    store = store or Store()
    config = dict(config or {})
    _check_keys(config, UPDATE_KEYS)
    with store.lock():
        before = store.get_endpoint(endpoint)
        current = store.get_endpoint(endpoint)
        names = [d.name for d in store.list_deployments(endpoint)]
        if "auth_mode" in config:
            current.auth_mode = _auth_mode(config["auth_mode"])
            _host(current.host, current.auth_mode)
            if current.auth_mode == "key" and not keys_path(store, endpoint).exists():
                write_new_keys(store, endpoint)
        if "description" in config:
            current.description = config["description"]
        if "mirror_traffic" in config:
            current.mirror_traffic = check_mirror_traffic(
                names, parse_traffic(config["mirror_traffic"], "mirror_traffic"))
        if "traffic" in config:
            current.traffic = parse_traffic(config["traffic"])
        current.traffic = check_traffic(names, current.traffic, current.mirror_traffic)
        current.auto_created = False  # the user manages it now: keep it after its deployments
        store.save_endpoint(current)
        try:
            sync_gateway(store, endpoint)
        except BaseException:
            store.save_endpoint(before)
            raise
    return describe_endpoint(current, store)


def delete_endpoint(endpoint: str, store: Optional[Store] = None) -> None:
    """Delete the endpoint, its gateway and every deployment behind it. Deleting one that does
    not exist is not an error (MLflow's BaseDeploymentClient contract)."""
    store = store or Store()
    current = store.find_endpoint(endpoint)
    if current is None:
        return
    with store.lock():  # no traffic first, so deleting the deployments is never refused
        current = store.get_endpoint(endpoint)
        current.traffic = {name: 0 for name in current.traffic}
        current.mirror_traffic = {}
        store.save_endpoint(current)
    for deployment in store.list_deployments(endpoint):
        _deployments.delete_deployment(deployment.name, endpoint=endpoint, store=store)
    with store.lock():
        current = store.find_endpoint(endpoint)
        if current is not None:
            stop_gateway(store, current)
            store.remove_endpoint(endpoint)
        _remove_files(store, endpoint)


def _remove_files(store: Store, endpoint: str) -> None:
    import shutil

    shutil.rmtree(store.endpoint_dir(endpoint), ignore_errors=True)


def start_endpoint(endpoint: str, store: Optional[Store] = None) -> Dict[str, Any]:
    """After a reboot (every process gone): start the endpoint's deployments and its gateway
    again, on the same URL, with the same keys and traffic."""
    store = store or Store()
    store.get_endpoint(endpoint)
    for deployment in store.list_deployments(endpoint):
        if _deployments.runtime_state(deployment, store) != "Running":
            _deployments.update_deployment(deployment.name, endpoint=endpoint, store=store)
    with store.lock():
        sync_gateway(store, endpoint)
        return describe_endpoint(store.get_endpoint(endpoint), store)


def get_credentials(endpoint: str, store: Optional[Store] = None) -> Dict[str, str]:
    store = store or Store()
    current = store.get_endpoint(endpoint)
    if current.auth_mode != "key":
        raise InvalidState("The endpoint does not use keys (auth_mode none).")
    keys = Keys.read(keys_path(store, endpoint))
    return {"primaryKey": keys.primary, "secondaryKey": keys.secondary}


def regenerate_keys(endpoint: str, key_type: str = "primary",
                    store: Optional[Store] = None) -> None:
    """A new primary or secondary key: the old one is refused as soon as this returns, while
    the other key keeps working (rotate one key at a time without downtime)."""
    store = store or Store()
    if key_type not in ("primary", "secondary"):
        raise InvalidParameter("key_type must be 'primary' or 'secondary'.",
                               argument="key_type")
    with store.lock():
        current = store.get_endpoint(endpoint)
        if current.auth_mode != "key":
            raise InvalidState("The endpoint does not use keys (auth_mode none).")
        path = keys_path(store, endpoint)
        keys = Keys.read(path)
        if key_type == "primary":
            keys = Keys(primary=new_key(), secondary=keys.secondary)
        else:
            keys = Keys(primary=keys.primary, secondary=new_key())
        keys.write(path)
        sync_gateway(store, endpoint)


def mirror_report(endpoint: str, rtol: Optional[float] = None,
                  store: Optional[Store] = None) -> Dict[str, Any]:
    """The gateway's running comparison of each mirrored deployment with the live answers."""
    store = store or Store()
    current = store.get_endpoint(endpoint)
    if not gateway_alive(store, current):
        raise InvalidState("The endpoint's gateway is not running (online-endpoint start).")
    return gateways.mirror_report(gateway_config(store, current), rtol)


def invoke(endpoint: str, body: bytes, deployment_name: Optional[str] = None,
           store: Optional[Store] = None) -> Any:
    """POST a request file's bytes, as they are, to the endpoint (with its key): what Azure
    would answer, a deployment's error shown with its inner status (PredictionFailed)."""
    store = store or Store()
    uri, headers, timeout_s = _deployments.endpoint_request(store, endpoint, deployment_name)
    return post(uri, body, timeout_s, headers)


def get_endpoint(endpoint: str, store: Optional[Store] = None) -> Dict[str, Any]:
    store = store or Store()
    return describe_endpoint(store.get_endpoint(endpoint), store)


def list_endpoints(store: Optional[Store] = None) -> List[Dict[str, Any]]:
    store = store or Store()
    return [describe_endpoint(e, store) for e in store.list_endpoints()]


def describe_endpoint(endpoint: Endpoint, store: Store) -> Dict[str, Any]:
    """What `show` prints: never the keys."""
    deployments = store.list_deployments(endpoint.name)
    return {
        "name": endpoint.name,
        "auth_mode": endpoint.auth_mode,
        "description": endpoint.description,
        "scoring_uri": endpoint_uri(endpoint, "/score"),
        "openapi_uri": endpoint_uri(endpoint, "/swagger.json"),
        "traffic": dict(endpoint.traffic),
        "mirror_traffic": dict(endpoint.mirror_traffic),
        "deployments": [d.name for d in deployments],
        "provisioning_state": "Succeeded",
        "state": "Running" if gateway_alive(store, endpoint) else "Stopped",
    }
