"""Which scoring-server processes are still running: masters and their forked workers both carry
their config file's path in their environment (MLFLOW_DEPLOY_SERVER_CONFIG)."""
import os
import time
from typing import List

from mlflow_deploy import processes
from mlflow_deploy.scoring.config import CONFIG_ENV


def server_processes(under: os.PathLike) -> List[int]:
    """Running processes of servers whose config file is in the folder ``under``."""
    root = os.path.join(os.path.realpath(under), "")
    return [pid for pid, env in processes.scan(processes.environ)
            if os.path.realpath(env.get(CONFIG_ENV, "/")).startswith(root)
            and processes.is_running(pid)]


def left_running(under: os.PathLike, timeout: float = 10.0) -> List[int]:
    """The server processes under ``under`` once none is left, or what is still left after
    ``timeout`` (a SIGKILL'ed group takes a moment to be gone)."""
    deadline = time.monotonic() + timeout
    while True:
        left = server_processes(under)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
