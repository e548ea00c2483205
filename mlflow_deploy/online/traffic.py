"""Which deployment of an endpoint gets the traffic, before the gateway exists: exactly
one deployment holds 100 %, and the endpoint's scoring URI is that deployment's server."""

from typing import Optional

from mlflow_deploy.online.supervisor import HOST
from mlflow_deploy.store import Deployment, Endpoint, Store

__all__ = [
    "scoring_uri_of",
    "traffic_target",
    "endpoint_or_create",
    "add_to_endpoint",
    "remove_from_endpoint",
]


def scoring_uri_of(deployment: Deployment) -> str:
    return f"http://{HOST}:{deployment.port}/score"


def traffic_target(endpoint: Endpoint) -> Optional[str]:
    """The deployment holding the endpoint's traffic, if any."""
    held = [(share, name) for name, share in endpoint.traffic.items() if share > 0]
    return max(held)[1] if held else None


def endpoint_or_create(store: Store, name: str) -> bool:
    """Make sure the endpoint exists; True when it had to be created (it is then marked
    auto_created, and goes away with its last deployment)."""
    if store.find_endpoint(name) is not None:
        return False
    store.add_endpoint(Endpoint(name=name, auto_created=True))
    return True


def add_to_endpoint(store: Store, endpoint_name: str, deployment_name: str) -> None:
    """The endpoint's first deployment takes all traffic; later ones start with none."""
    endpoint = store.get_endpoint(endpoint_name)
    endpoint.traffic[deployment_name] = 0 if traffic_target(endpoint) else 100
    store.save_endpoint(endpoint)


def remove_from_endpoint(store: Store, endpoint_name: str, deployment_name: str) -> None:
    """Forget a deleted deployment; its traffic moves to the oldest deployment left."""
    endpoint = store.find_endpoint(endpoint_name)
    if endpoint is None:
        return
    share = endpoint.traffic.pop(deployment_name, 0)
    remaining = store.list_deployments(endpoint_name)
    if not remaining and endpoint.auto_created:
        store.remove_endpoint(endpoint_name)
        return
    if share > 0 and remaining and traffic_target(endpoint) is None:
        endpoint.traffic = {d.name: 0 for d in remaining}
        endpoint.traffic[remaining[0].name] = 100
    store.save_endpoint(endpoint)
