"""The deployments an endpoint's gateway routes to, as it sees them: each deployment's route and
requests in flight, and its instances with their outstanding requests and probes' verdicts.
A module apart from the gateway's handling so that the batcher (``batching.py``), which the
gateway drives, can name them without importing the gateway."""
import asyncio
import random
import time
from typing import Dict, List, Optional, Set, Tuple

from mlflow_deploy.online import probes, upstream
from mlflow_deploy.online.routes import Route

__all__ = ["Instance", "Backend", "DOWN_S"]

# how long an instance that refused a connection is passed over while others can serve
DOWN_S = 1.0


class Instance:
    """One server instance of a deployment, the requests it has not answered yet, and what its
    probes say (``probes.py``). The control plane routes an instance only once it served and
    passed its self-test, so it starts ready."""

    def __init__(self, address: str):
        self.address = address
        self.pool = upstream.Pool(address)  # the connections its workers keep open
        self.outstanding = 0
        self.down_until = 0.0  # refused a connection: others are preferred until then
        self.ready = True
        self.probed_as: Optional[Tuple[str, int, Dict, Dict]] = None  # what probes run now
        self.probes: List[asyncio.Task] = []

    def watch(self, name: str, index: int, route: Route, store_home: Optional[str]) -> None:
        """(Re)start its probes when it is new or its deployment's probe settings changed."""
        probed_as = (name, index, route.liveness, route.readiness)
        if probed_as != self.probed_as:
            self.unwatch()
            self.probed_as = probed_as
            self.probes = probes.watch(self, name, index, route.liveness, route.readiness,
                                       store_home)

    def retire(self) -> None:
        """No longer routed to: its probes stop, its kept connections close."""
        self.unwatch()
        self.pool.close()

    def unwatch(self) -> None:
        for task in self.probes:
            task.cancel()
        self.probes = []


class Backend:
    """A deployment as the gateway serves it: its route and its requests in flight."""

    def __init__(self, name: str, route: Route, instances: List[Instance]):
        self.name, self.route, self.instances = name, route, instances
        self.in_flight = 0
        self.last_batch_joined = False  # its last batch had more than one request (batching.py)

    @property
    def ready_instances(self) -> int:
        return sum(1 for i in self.instances if i.ready)

    @property
    def max_in_flight(self) -> int:
        return self.route.max_in_flight(self.ready_instances)

    def least_busy(self, tried: Set[Instance]) -> Instance:
        """The instance with the fewest outstanding requests, among those not tried for this
        request, preferring ready ones that did not just refuse a connection (any one when none
        is: its refusal is the answer)."""
        now = time.monotonic()
        left = [i for i in self.instances if i not in tried]
        ready = [i for i in left if i.ready]
        pool = [i for i in ready if i.down_until <= now] or ready or left
        fewest = min(i.outstanding for i in pool)
        return random.choice([i for i in pool if i.outstanding == fewest])
