"""Fixtures for the control plane's tests: a private MLFLOW_DEPLOY_HOME per test whose servers are
all stopped at the end (and any process left behind is reported as a failure)."""

import os
import signal
import time
from pathlib import Path
from typing import List

import pytest

from mlflow_deploy import processes
from mlflow_deploy.scoring.config import CONFIG_ENV
from mlflow_deploy.store import HOME_ENV, Store


def server_pids_under(home: Path) -> List[int]:
    """Live (non-zombie) processes started with a server config inside ``home``, or forked by a
    fork server into a folder inside it."""
    found = []
    prefix = str(home)
    for pid in processes.pids():
        env = processes.environ(pid) or {}
        cwd = processes.cwd(pid) or ""
        ours = env.get(CONFIG_ENV, "").startswith(prefix) or cwd.startswith(prefix + os.sep)
        if ours and processes.is_running(pid):
            found.append(pid)
    return found


def wait_no_servers(home: Path, timeout: float = 10.0) -> List[int]:
    deadline = time.monotonic() + timeout
    while True:
        pids = server_pids_under(home)
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


@pytest.fixture
def deploy_home(tmp_path, monkeypatch):
    """A Store in a fresh MLFLOW_DEPLOY_HOME; every endpoint (its gateway) and deployment is
    deleted afterwards."""
    yield from private_home(tmp_path, monkeypatch)


def private_home(tmp_path, monkeypatch):
    """The body of ``deploy_home``, for test modules outside tests/online to wrap."""
    from mlflow_deploy import online

    home = (tmp_path / "deploy-home").resolve()
    monkeypatch.setenv(HOME_ENV, str(home))
    store = Store(home)
    yield store
    for endpoint in store.list_endpoints():
        try:
            online.delete_endpoint(endpoint.name, store=store)
        except Exception:  # the test may have broken it on purpose; the sweep below ends it
            pass
    for deployment in store.list_deployments():
        try:
            online.delete_deployment(deployment.name, store=store)
        except Exception:  # the test may have broken it on purpose; the sweep below ends it
            pass
    leftovers = wait_no_servers(home)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not leftovers, "server processes outlived their deployments"
