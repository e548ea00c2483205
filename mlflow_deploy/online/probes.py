"""Azure's liveness and readiness probes, run by an endpoint's gateway on each instance it routes
to: readiness decides whether the instance gets requests, liveness whether it is restarted.

Both ask ``GET /`` (the scoring server answers it once its model is loaded) every ``period``
seconds after ``initial_delay``, and give up on an answer after ``timeout``. Readiness takes the
instance out after ``failure_threshold`` failures in a row and back after ``success_threshold``
successes; liveness restarts it after ``failure_threshold`` failures, by running the control
plane's ``revive`` (``python -m mlflow_deploy.online.revive``), which restarts it on the same port
with the same revision and records the new process in the store.

One rule differs from Kubernetes: a probe that times out while the instance is answering a
request the gateway sent it does not count. A synchronous worker busy with a long prediction
cannot answer a probe, and restarting it would kill the request it is busy with; a dead instance
refuses the connection at once, and a hung one times out with nothing sent to it, or holds every
request past its timeout (408) until the requests stop and its probes fail.
"""

import asyncio
import logging
import sys
from typing import Dict, List, Optional, Protocol

from mlflow_deploy.online import upstream
from mlflow_deploy.specs import ProbeSettings as Probe

__all__ = ["Probed", "watch"]

log = logging.getLogger("mlflow_deploy.gateway")

# restarts of an instance that keeps failing wait this long, doubling from the first, at most
# REVIVE_BACKOFF_MAX_S (Kubernetes' CrashLoopBackOff): a model that crashes at every start must
# not keep the machine busy loading it
REVIVE_BACKOFF_S = 1.0
REVIVE_BACKOFF_MAX_S = 300.0


class Probed(Protocol):
    """What the probes need of the gateway's view of an instance."""
    address: str
    outstanding: int  # requests sent and not answered yet
    ready: bool


async def _answers(instance: Probed, timeout: float) -> Optional[bool]:
    """True when ``GET /`` answers 200; False when it does not; None when it timed out while
    the instance had requests to answer (busy, which says nothing about its health)."""
    try:
        status, _, _ = await upstream.exchange(instance.address, "GET", "/", {}, b"",
                                               timeout_s=timeout)
        return status == 200
    except upstream.TimedOut:
        return None if instance.outstanding else False
    except (ConnectionError, OSError, ValueError):
        return False


async def _readiness(instance: Probed, probe: Probe, name: str) -> None:
    await asyncio.sleep(probe.initial_delay)
    failures = successes = 0
    while True:
        answered = await _answers(instance, probe.timeout)
        if answered:
            failures, successes = 0, successes + 1
            if not instance.ready and successes >= probe.success_threshold:
                instance.ready = True
                log.info("%s: instance %s is ready", name, instance.address)
        elif answered is False:
            failures, successes = failures + 1, 0
            if instance.ready and failures >= probe.failure_threshold:
                instance.ready = False
                log.warning("%s: instance %s failed its readiness probe (%d in a row): it gets no "
                            "requests until it passes again", name, instance.address, failures)
        await asyncio.sleep(probe.period)


async def _liveness(instance: Probed, probe: Probe, name: str, index: int,
                    store_home: Optional[str]) -> None:
    await asyncio.sleep(probe.initial_delay)
    failures = restarts = 0
    while True:
        answered = await _answers(instance, probe.timeout)
        failures = 0 if answered in (True, None) else failures + 1
        if failures >= probe.failure_threshold and store_home is not None:
            instance.ready = False  # readiness lets it back in once it answers again
            log.warning("%s: instance %s failed its liveness probe (%d in a row): restarting it",
                        name, instance.address, failures)
            if restarts:
                await asyncio.sleep(min(REVIVE_BACKOFF_S * 2 ** (restarts - 1),
                                        REVIVE_BACKOFF_MAX_S))
            restarts = 0 if await _revive(store_home, name, index) else restarts + 1
            failures = 0
            await asyncio.sleep(probe.initial_delay)
        await asyncio.sleep(probe.period)


async def _revive(store_home: str, name: str, index: int) -> bool:
    """Run the control plane's restart of one instance; True when it serves again. Its output
    goes to the gateway's log. Cancelled (the instance left the routing table), the restart
    still finishes or gives way on its own, under the deployment's lock."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mlflow_deploy.online.revive", store_home, name, str(index),
        stdin=asyncio.subprocess.DEVNULL)
    code = await process.wait()
    if code not in (0, 2):  # 2: the instance is gone, and its probes with it at the next reload
        log.error("%s: instance %d could not be restarted (exit %d); trying again later",
                  name, index, code)
    return code == 0


def watch(instance: Probed, name: str, index: int, liveness: Dict[str, int],
          readiness: Dict[str, int], store_home: Optional[str]) -> List[asyncio.Task]:
    """Start both probes of one instance (``name``'s instance ``index``); cancel the tasks
    returned when the instance leaves the routing table."""
    return [
        asyncio.ensure_future(_readiness(instance, Probe(**readiness), name)),
        asyncio.ensure_future(_liveness(instance, Probe(**liveness), name, index, store_home)),
    ]
