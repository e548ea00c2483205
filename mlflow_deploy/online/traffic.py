"""An endpoint's traffic, its rules, and the gateway that applies them.

Azure's rules hold: the first deployment of an endpoint created implicitly (by creating a
deployment) takes 100 % of its traffic, any other new deployment 0 % unless asked for all of
it; shares are whole percents adding up to 100 (or all 0: the endpoint then answers 404);
mirrored shares total at most 50 %, and a deployment cannot take live and mirrored traffic at
once. Every change of an endpoint or its deployments ends with ``sync_gateway``, which writes
the gateway's routing table and waits until the gateway applies it, starting the gateway first
if it is not running.
"""

import secrets
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from mlflow_deploy.errors import AlreadyExists, InvalidParameter, InvalidState
from mlflow_deploy.online import gateways, instances, supervisor
from mlflow_deploy.online.routes import GatewayConfig, Keys, Route
from mlflow_deploy.online.settings import DeploymentSettings
from mlflow_deploy.store import BATCH_ENDPOINTS, Deployment, Endpoint, Store

__all__ = [
    "scoring_uri_of",
    "endpoint_uri",
    "traffic_target",
    "endpoint_or_create",
    "check_not_batch",
    "add_to_endpoint",
    "remove_from_endpoint",
    "check_traffic",
    "check_mirror_traffic",
    "new_key",
    "write_new_keys",
    "keys_path",
    "busy_instances",
    "gateway_paths",
    "gateway_config",
    "sync_gateway",
    "stop_gateway",
    "gateway_alive",
]

SERVING = ("Succeeded",)  # the deployment states the gateway routes to


def scoring_uri_of(deployment: Deployment) -> str:
    """A deployment's own URI, without the endpoint's key: for the tests and tools that talk to
    one server directly. The endpoint's gateway listens on its port and passes everything
    through to the deployment's first instance."""
    return f"http://{supervisor.HOST}:{deployment.port}/score"


def endpoint_uri(endpoint: Endpoint, path: str = "/score") -> Optional[str]:
    if endpoint.port is None:
        return None
    return f"http://{endpoint.host}:{endpoint.port}{path}"


def traffic_target(endpoint: Endpoint) -> Optional[str]:
    """The deployment holding the largest share of the endpoint's traffic, if any."""
    held = [(share, name) for name, share in endpoint.traffic.items() if share > 0]
    return max(held)[1] if held else None


def check_not_batch(store: Store, name: str) -> None:
    """Endpoint names are unique on this machine, online and batch alike, as Azure keeps them
    unique per region."""
    if store.find(BATCH_ENDPOINTS, name) is not None:
        raise AlreadyExists("A batch endpoint has this name: endpoint names are unique on "
                            "this machine, online and batch alike.", argument="endpoint")


def endpoint_or_create(store: Store, name: str) -> bool:
    """Make sure the endpoint exists; True when it had to be created (it is then marked
    auto_created, and goes away with its last deployment)."""
    if store.find_endpoint(name) is not None:
        return False
    check_not_batch(store, name)
    store.add_endpoint(Endpoint(name=name, auto_created=True))
    write_new_keys(store, name)
    return True


def write_new_keys(store: Store, endpoint_name: str) -> None:
    """Two fresh keys, owner-only."""
    Keys(primary=new_key(), secondary=new_key()).write(keys_path(store, endpoint_name))


def new_key() -> str:
    return secrets.token_urlsafe(32)


def keys_path(store: Store, endpoint_name: str) -> Path:
    return store.endpoint_dir(endpoint_name) / "keys.json"


def add_to_endpoint(store: Store, endpoint_name: str, deployment_name: str,
                    all_traffic: bool = False) -> None:
    """An implicitly created endpoint's first deployment, or one given ``all_traffic``, takes
    all traffic; any other starts with none (Azure's rule)."""
    endpoint = store.get_endpoint(endpoint_name)
    first = endpoint.auto_created and traffic_target(endpoint) is None
    if all_traffic or first:
        endpoint.traffic = {name: 0 for name in endpoint.traffic}
        endpoint.traffic[deployment_name] = 100
    else:
        endpoint.traffic.setdefault(deployment_name, 0)
    store.save_endpoint(endpoint)


def remove_from_endpoint(store: Store, endpoint_name: str, deployment_name: str) -> None:
    """Forget a deleted deployment (callers refused it while it held traffic others could take);
    an implicitly created endpoint goes with its last deployment."""
    endpoint = store.find_endpoint(endpoint_name)
    if endpoint is None:
        return
    endpoint.traffic.pop(deployment_name, None)
    endpoint.mirror_traffic.pop(deployment_name, None)
    if not store.list_deployments(endpoint_name) and endpoint.auto_created:
        store.remove_endpoint(endpoint_name)
        return
    store.save_endpoint(endpoint)


def check_traffic(names, traffic: Mapping[str, int], mirror: Mapping[str, int]) -> Dict[str, int]:
    """The endpoint's full traffic map (every deployment, 0 where not named), or an error."""
    for name in traffic:
        if name not in names:
            raise InvalidParameter("'traffic' names a deployment the endpoint does not have.")
    total = sum(traffic.values())
    if total not in (0, 100):
        raise InvalidParameter("'traffic': the shares must add up to 100 (or all be 0).")
    if any(traffic.get(name, 0) > 0 for name in mirror):
        raise InvalidParameter("A deployment cannot take live and mirrored traffic at once "
                               "('traffic' and 'mirror_traffic').")
    full = {name: 0 for name in names}
    full.update(traffic)
    return full


def check_mirror_traffic(names, mirror: Mapping[str, int]) -> Dict[str, int]:
    for name in mirror:
        if name not in names:
            raise InvalidParameter(
                "'mirror_traffic' names a deployment the endpoint does not have.")
    if sum(mirror.values()) > 50:
        raise InvalidParameter("'mirror_traffic': the shares must add up to 50 at most.")
    return {name: share for name, share in mirror.items() if share > 0}


# --- the gateway -----------------------------------------------------------------------------

def gateway_paths(store: Store, endpoint_name: str):
    """(config, log) of the endpoint's gateway."""
    folder = store.endpoint_dir(endpoint_name)
    return folder / "gateway.json", store.home / "logs" / f"gateway-{endpoint_name}.log"


def _route(deployment: Deployment) -> Route:
    settings = DeploymentSettings(**deployment.config)
    members = instances.instances_of(deployment)
    return Route(upstreams=tuple(i.address for i in members), ports=tuple(i.port for i in members),
                 request_timeout_ms=settings.request_timeout_ms,
                 max_concurrent_requests_per_instance=(
                     settings.max_concurrent_requests_per_instance),
                 liveness=settings.liveness_probe, readiness=settings.readiness_probe,
                 max_batch_size=settings.max_batch_size,
                 max_batch_time_ms=settings.max_batch_time_ms, workers=settings.workers)


def gateway_config(store: Store, endpoint: Endpoint) -> GatewayConfig:
    config_path, _ = gateway_paths(store, endpoint.name)
    deployments = store.list_deployments(endpoint.name)
    largest = max((DeploymentSettings(**d.config).max_request_mb for d in deployments),
                  default=DeploymentSettings().max_request_mb)
    return GatewayConfig(
        endpoint=endpoint.name,
        host=endpoint.host,
        port=endpoint.port,
        admin_socket=admin_socket(config_path),
        auth_mode=endpoint.auth_mode,
        keys_file=str(keys_path(store, endpoint.name)) if endpoint.auth_mode == "key" else None,
        max_request_bytes=int(largest * 1024 * 1024),
        traffic={k: v for k, v in endpoint.traffic.items() if v > 0},
        mirror_traffic=dict(endpoint.mirror_traffic),
        deployments={d.name: _route(d) for d in deployments if d.state in SERVING},
        store_home=str(store.home),
    )


def admin_socket(config_path: Path) -> str:
    """Beside the config, in the endpoint's owner-only folder (``gateways`` reaches it through a
    short path, as a Unix socket's may not exceed 107 bytes)."""
    return str(config_path.parent / "admin.sock")


def busy_instances(store: Store, endpoint_name: str) -> List[str]:
    """The addresses of the endpoint's instances answering requests its gateway sent them
    (``gateways.busy_instances``)."""
    config_path, _ = gateway_paths(store, endpoint_name)
    return gateways.busy_instances(admin_socket(config_path))


def gateway_alive(store: Store, endpoint: Endpoint) -> bool:
    config_path, _ = gateway_paths(store, endpoint.name)
    return gateways.is_alive(endpoint.pid, config_path)


def sync_gateway(store: Store, endpoint_name: str, start: bool = True) -> None:
    """Bring the endpoint's gateway in line with the store: a running one reloads its routing
    table (in force when this returns), a missing one starts on the endpoint's port (the same
    URL as before, or a free port the first time) unless ``start`` is False: a deletion only
    takes routes away, and must not fail because the port of a gateway that is gone (a crash,
    a reboot) has been taken meanwhile; ``online-endpoint start`` brings it back. Callers hold
    the store's lock."""
    endpoint = store.find_endpoint(endpoint_name)
    if endpoint is None:
        return
    config_path, log_path = gateway_paths(store, endpoint.name)
    alive = gateway_alive(store, endpoint)
    if not alive and not start:
        return
    if alive:
        try:
            config = gateway_config(store, endpoint)
            _check_bound(config, gateways.reload(config, config_path))
            return
        except OSError:  # its admin socket is gone: a fresh gateway, on the same port
            stop_gateway(store, endpoint)
            supervisor.wait_port_free(endpoint.port)
    if endpoint.port is None:
        taken = [i.port for d in store.list_deployments() for i in instances.instances_of(d)]
        taken += [e.port for e in store.list_endpoints() if e.port]
        endpoint.port = supervisor.free_port(exclude=taken)
    elif not supervisor.port_is_free(endpoint.port):
        raise InvalidState(f"The endpoint's port {endpoint.port} is taken by another program; "
                           "stop it, or delete and recreate the endpoint.")
    config = gateway_config(store, endpoint)
    endpoint.pid = gateways.start(config, config_path, log_path)
    store.save_endpoint(endpoint)
    _check_bound(config, gateways.unbound_ports(config))


def _check_bound(config: GatewayConfig, unbound: List[int]) -> None:
    """The gateway listens on every instance's port (the deployment's own URI among them), or
    the first it could not is an error naming its deployment. The routing table is in force
    all the same: the endpoint's URI serves."""
    for name, route in sorted(config.deployments.items()):
        for port in route.ports:
            if port in unbound:
                raise InvalidState(
                    f"The port {port} of deployment {name} is taken by another program; stop "
                    "it, or delete and recreate the deployment.")


def stop_gateway(store: Store, endpoint: Endpoint) -> None:
    config_path, _ = gateway_paths(store, endpoint.name)
    gateways.stop(endpoint.pid, config_path)
    Path(admin_socket(config_path)).unlink(missing_ok=True)
