"""``python -m mlflow_deploy.online.revive STORE_HOME DEPLOYMENT INDEX``: restart one instance of a
deployment that failed its liveness probe. An endpoint's gateway runs it (``probes.py``): the
gateway is a small asyncio process that routes requests, and starting a scoring server is the
control plane's work, done under the deployment's lock like every other change to it.

Exit status 0 when the instance serves (restarted, or it answered again), 1 when it could not be
restarted, 2 when there is nothing to restart any more (the deployment or instance is gone)."""

import logging
import sys

from mlflow_deploy.errors import DeployError
from mlflow_deploy.online.deployments import revive_instance
from mlflow_deploy.store import Store

log = logging.getLogger("mlflow_deploy.gateway")


def main(argv=None) -> int:
    home, name, index = (sys.argv[1:] if argv is None else argv)
    try:
        serving = revive_instance(name, int(index), Store(home))
    except DeployError as exc:
        log.error("%s: instance %s was not restarted: %s", name, index, exc.format_message())
        return 1
    log.info("%s: instance %s %s", name, index,
             "serves" if serving else "is no longer routed: nothing to restart")
    return 0 if serving else 2


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s [revive %(process)d] %(levelname)s %(message)s")
    sys.exit(main())
