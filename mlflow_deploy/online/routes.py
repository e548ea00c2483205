"""What an endpoint's gateway routes by: its config file, and the decisions taken from it.

The control plane writes ``gateway.json`` (``GatewayConfig``) next to the endpoint's keys and
tells the running gateway to re-read it over its admin socket; the gateway answers only once the
new table is in force, so a rollout knows when the old instances stop getting new requests.
Decisions that need no network (which deployment, which key, which status) live here, in plain
code the control plane can test and reason about; the asyncio server is ``gateway.py``.
"""

import hmac
import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from mlflow_deploy.specs import LIVENESS, READINESS

__all__ = [
    "ENDPOINT",
    "TRANSPARENT",
    "NO_BATCHING",
    "BATCH_TIME_MS",
    "DEPLOYMENT_HEADER",
    "MODEL_ERROR_STATUS",
    "NO_POSITIVE_WEIGHT",
    "MISSING_KEY",
    "Route",
    "GatewayConfig",
    "Keys",
    "pick_deployment",
    "key_matches",
    "authorized",
]

# modes: an endpoint's gateway applies Azure's router semantics; `serve`/`run-local` put one in
# front of a single server that passes every route and status through untouched
ENDPOINT = "endpoint"
TRANSPARENT = "transparent"

DEPLOYMENT_HEADER = "azureml-model-deployment"
# a deployment's non-200 answer comes back as a 424 carrying its status in this header
MODEL_ERROR_STATUS = "ms-azureml-model-error-statuscode"
# Azure's own words for an endpoint whose traffic is all 0, kept so scripts matching them work
NO_POSITIVE_WEIGHT = "The endpoint doesn't have any valid deployment with positive weight."
# the 401 of a request without a key of the endpoint (scoring, or the data behind its page)
MISSING_KEY = ("Missing or invalid key: send 'Authorization: Bearer <key>' with a key of this "
               "endpoint.")


# a deployment's batching (``batching.py``): at most this many rows joined into one call (1: each
# request goes alone), sent once the first request of a batch has waited this long
NO_BATCHING = 1
BATCH_TIME_MS = 10


@dataclass(frozen=True)
class Route:
    """One deployment behind the gateway: where its instances listen, how much it takes, and how
    the gateway probes them (``specs.ProbeSettings`` fields; the defaults are the local ones).
    ``ports`` are the instances' own TCP ports (the first is the deployment's own URI's): the
    gateway listens on each and passes what comes there through to that instance, transparently,
    as if the instance listened there itself (it listens only on its Unix socket, so a slow
    client holds the gateway's coroutine, never one of its synchronous workers)."""

    upstreams: Tuple[str, ...]  # "http://127.0.0.1:PORT" or "unix:/path/to.sock", one per instance
    ports: Tuple[int, ...] = ()  # one per instance, in the same order; none for `serve`
    request_timeout_ms: int = 5000
    max_concurrent_requests_per_instance: int = 1
    liveness: Dict[str, int] = field(default_factory=lambda: asdict(LIVENESS))
    readiness: Dict[str, int] = field(default_factory=lambda: asdict(READINESS))
    max_batch_size: int = NO_BATCHING
    max_batch_time_ms: int = BATCH_TIME_MS
    workers: int = 1  # each instance's (WORKER_COUNT): the requests it scores at once

    def max_in_flight(self, ready_instances: int) -> int:
        """Azure's router answers 429 past twice the concurrency the ready instances allow (one
        instance's worth while none is ready, so a restarting deployment is not refused). With
        batching, each call an instance takes holds up to ``max_batch_size`` requests, so the
        bound grows with it: otherwise a batch could never fill."""
        return (2 * self.max_concurrent_requests_per_instance * self.max_batch_size
                * max(1, ready_instances))


@dataclass(frozen=True)
class GatewayConfig:
    endpoint: str
    port: int
    admin_socket: str  # owner-only Unix socket the control plane reloads and reads reports on
    host: str = "127.0.0.1"
    mode: str = ENDPOINT
    auth_mode: str = "key"  # "key" or "none"
    keys_file: Optional[str] = None
    max_request_bytes: int = 5 * 1024 * 1024
    traffic: Dict[str, int] = field(default_factory=dict)
    mirror_traffic: Dict[str, int] = field(default_factory=dict)
    deployments: Dict[str, Route] = field(default_factory=dict)
    # the control plane's store: the gateway restarts an instance that fails its liveness probe
    # by running the control plane's `revive` on it (None: no restarts, as for `serve`)
    store_home: Optional[str] = None

    def write(self, path: os.PathLike) -> None:
        """Atomically: a gateway re-reading the file never sees half of it."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: os.PathLike) -> "GatewayConfig":
        data = json.loads(Path(path).read_text())
        data["deployments"] = {
            name: Route(upstreams=tuple(route.pop("upstreams")),
                        ports=tuple(route.pop("ports", ())), **route)
            for name, route in data.get("deployments", {}).items()
        }
        return cls(**data)


@dataclass(frozen=True)
class Keys:
    """An endpoint's two keys, kept in a file only its owner can read."""

    primary: str
    secondary: str

    @classmethod
    def read(cls, path: os.PathLike) -> "Keys":
        data = json.loads(Path(path).read_text())
        return cls(primary=data["primaryKey"], secondary=data["secondaryKey"])

    def write(self, path: os.PathLike) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"primaryKey": self.primary, "secondaryKey": self.secondary}, f)
        os.replace(tmp, path)


def key_matches(authorization: Optional[str], keys: Keys) -> bool:
    """``Authorization: Bearer <key>`` against both keys, each compared in constant time and both
    always compared, so the answer's timing says nothing about which key came close."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    given_bytes = given.strip().encode()
    primary = hmac.compare_digest(given_bytes, keys.primary.encode())
    secondary = hmac.compare_digest(given_bytes, keys.secondary.encode())
    return primary or secondary


def authorized(config: "GatewayConfig", keys: Optional[Keys], authorization: Optional[str]
               ) -> bool:
    """Whether a request may pass the endpoint's auth: the scoring routes and the page's data
    routes answer to the same rule, so the page shows nothing a scoring client could not see."""
    if config.mode == TRANSPARENT or config.auth_mode != "key":
        return True
    return keys is not None and key_matches(authorization, keys)


def pick_deployment(traffic: Mapping[str, int], draw: Optional[float] = None) -> Optional[str]:
    """A deployment chosen with probability proportional to its share; None when every share is
    0. ``draw`` in [0, 1) replaces the random draw (tests)."""
    live: List[Tuple[str, int]] = [(n, s) for n, s in sorted(traffic.items()) if s > 0]
    if not live:
        return None
    total = sum(share for _, share in live)
    point = (random.random() if draw is None else draw) * total
    for name, share in live:
        if point < share:
            return name
        point -= share
    return live[-1][0]
