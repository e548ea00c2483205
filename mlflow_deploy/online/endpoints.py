"""Online endpoints: a name in front of one or more deployments.

Before the gateway exists an endpoint has no server of its own: its scoring URI is the
server of the deployment holding its traffic, ``auth_mode`` is ``none``, and traffic goes 100 % to
one deployment (``-C traffic=blue=100`` moves it). Deleting an endpoint deletes its deployments,
as ``az ml online-endpoint delete`` does.
"""

import json
from typing import Any, Dict, List, Mapping, Optional

from mlflow_deploy.errors import InvalidParameter
from mlflow_deploy.online import deployments as _deployments
from mlflow_deploy.online.names import check_name
from mlflow_deploy.online.traffic import scoring_uri_of, traffic_target
from mlflow_deploy.store import Endpoint, Store

__all__ = [
    "create_endpoint",
    "update_endpoint",
    "delete_endpoint",
    "list_endpoints",
    "get_endpoint",
    "parse_traffic",
]

ENDPOINT_KEYS = ("auth_mode", "description", "traffic")


def _check_keys(config: Mapping[str, Any], allowed) -> None:
    for key in config:
        if key not in allowed:
            raise InvalidParameter(
                f"Unknown endpoint config key '{key}'. Known keys: " + ", ".join(allowed) + "."
            )


def _auth_mode(value: Any) -> str:
    text = str(value).strip().lower()
    if text == "none":
        return text
    if text in ("key", "aml_token", "aad_token"):
        raise InvalidParameter(
            "Config 'auth_mode': only 'none' is available yet; key auth comes with the gateway."
        )
    raise InvalidParameter("Config 'auth_mode' must be 'none' or 'key'.")


def parse_traffic(value: Any) -> Dict[str, int]:
    """``{"blue": 100}``, a JSON object, or Azure CLI's ``"blue=90 green=10"`` (or with commas)."""
    if isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        text = str(value).strip()
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except ValueError:
                raise InvalidParameter("Config 'traffic' is not valid JSON.") from None
            if not isinstance(parsed, dict):
                raise InvalidParameter("Config 'traffic' must map deployment names to percents.")
            pairs = list(parsed.items())
        else:
            pairs = []
            for item in text.replace(",", " ").split():
                name, sep, share = item.partition("=")
                if not sep:
                    raise InvalidParameter("Config 'traffic' must look like 'blue=90 green=10'.")
                pairs.append((name, share))
    traffic: Dict[str, int] = {}
    for name, share in pairs:
        try:
            number = int(str(share).strip()) if not isinstance(share, int) else share
        except ValueError:
            raise InvalidParameter(
                "Config 'traffic': each share must be a whole percent."
            ) from None
        if isinstance(share, bool) or not 0 <= number <= 100:
            raise InvalidParameter("Config 'traffic': each share must be between 0 and 100.")
        traffic[str(name)] = number
    return traffic


def create_endpoint(
    name: str, config: Optional[Mapping[str, Any]] = None, store: Optional[Store] = None
) -> Dict[str, Any]:
    store = store or Store()
    check_name(name, "endpoint name (--endpoint)")
    config = dict(config or {})
    _check_keys(config, ("auth_mode", "description"))
    endpoint = Endpoint(
        name=name,
        auth_mode=_auth_mode(config.get("auth_mode", "none")),
        description=config.get("description"),
    )
    with store.lock():
        store.add_endpoint(endpoint)
    return describe_endpoint(endpoint, store)


def update_endpoint(
    endpoint: str, config: Optional[Mapping[str, Any]] = None, store: Optional[Store] = None
) -> Dict[str, Any]:
    store = store or Store()
    config = dict(config or {})
    _check_keys(config, ENDPOINT_KEYS)
    with store.lock():
        current = store.get_endpoint(endpoint)
        if "auth_mode" in config:
            current.auth_mode = _auth_mode(config["auth_mode"])
        if "description" in config:
            current.description = config["description"]
        if "traffic" in config:
            current.traffic = _checked_traffic(store, current, parse_traffic(config["traffic"]))
        current.auto_created = False  # the user manages it now: keep it after its deployments
        store.save_endpoint(current)
    return describe_endpoint(current, store)


def _checked_traffic(store: Store, endpoint: Endpoint, traffic: Dict[str, int]) -> Dict[str, int]:
    names = {d.name for d in store.list_deployments(endpoint.name)}
    for name in traffic:
        if name not in names:
            raise InvalidParameter(
                "Config 'traffic' names a deployment the endpoint does not have."
            )
    total = sum(traffic.values())
    if total != (100 if names else 0):
        raise InvalidParameter("Config 'traffic': the shares must add up to 100.")
    if sum(1 for share in traffic.values() if share > 0) > 1:
        raise InvalidParameter(
            "Config 'traffic': splitting traffic between deployments comes with the gateway; "
            "give one deployment 100."
        )
    full = {name: 0 for name in names}
    full.update(traffic)
    return full


def delete_endpoint(endpoint: str, store: Optional[Store] = None) -> None:
    """Delete the endpoint and every deployment behind it (stopping their servers)."""
    store = store or Store()
    store.get_endpoint(endpoint)
    for deployment in store.list_deployments(endpoint):
        _deployments.delete_deployment(deployment.name, endpoint=endpoint, store=store)
    with store.lock():
        store.remove_endpoint(endpoint)


def get_endpoint(endpoint: str, store: Optional[Store] = None) -> Dict[str, Any]:
    store = store or Store()
    return describe_endpoint(store.get_endpoint(endpoint), store)


def list_endpoints(store: Optional[Store] = None) -> List[Dict[str, Any]]:
    store = store or Store()
    return [describe_endpoint(e, store) for e in store.list_endpoints()]


def describe_endpoint(endpoint: Endpoint, store: Store) -> Dict[str, Any]:
    deployments = store.list_deployments(endpoint.name)
    target = traffic_target(endpoint)
    by_name = {d.name: d for d in deployments}
    return {
        "name": endpoint.name,
        "auth_mode": endpoint.auth_mode,
        "description": endpoint.description,
        "scoring_uri": scoring_uri_of(by_name[target]) if target in by_name else None,
        "traffic": dict(endpoint.traffic),
        "deployments": [d.name for d in deployments],
        "provisioning_state": "Succeeded",
    }
