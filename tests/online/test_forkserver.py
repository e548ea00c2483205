"""Fork servers against real processes: a deployment of a built env is forked from its env's warm
fork server, which learns the model's libraries; it serves, updates and stops like one started by
exec; a dead or disabled fork server falls back to exec, and an idle one exits."""

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import requests

from mlflow_deploy import online, processes
from mlflow_deploy.online import forkserver, supervisor
from mlflow_deploy.processes import cmdline
from tests.online.fixtures import server_pids_under

pytestmark = pytest.mark.slow

SPLIT = {"input_data": {"columns": ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5",
                                    "s6"], "data": [[0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04,
                                                     0.0, 0.02, -0.01]]}}


def fork_server_pids(run_dir):
    pids = []
    for pidfile in Path(run_dir).glob("*.sock.pid"):
        pid = int(pidfile.read_text())
        if supervisor.is_alive(pid):
            pids.append(pid)
    return pids


def parent(pid):
    return processes.stat_field(pid, processes.PPID)


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A run folder of the test's own, so its fork servers are the test's alone; stopped after."""
    path = Path("/tmp") / f"mlflow-deploy-test-{os.getpid()}-{tmp_path.name[-20:]}"
    monkeypatch.setenv(forkserver.RUN_DIR_ENV, str(path))
    yield path
    pids = fork_server_pids(path)
    forkserver.stop_all(path)
    wait_for(lambda: not any(supervisor.is_alive(pid) for pid in pids), timeout=15)
    shutil.rmtree(path, ignore_errors=True)


def score(deployment):
    return requests.post(deployment["scoring_uri"], json=SPLIT, timeout=30)


def test_servers_fork_from_the_env_fork_server(deploy_home, example_models, run_dir):
    blue = online.create_deployment("blue", example_models["diabetes"])
    [warm] = fork_server_pids(run_dir)
    assert "mlflow_deploy.scoring.forkserver" in cmdline(warm)
    assert cmdline(warm)[0] == blue["environment"]["python"]
    # a grandchild of the fork server, in a session of its own, like a master started by exec
    assert "mlflow_deploy.scoring.forkserver" in cmdline(blue["pid"])
    assert parent(blue["pid"]) != warm
    assert processes.stat_field(blue["pid"], processes.PGRP) == blue["pid"]
    assert score(blue).status_code == 200

    # what blue imported while loading its model (scikit-learn) reaches the fork server
    maps = lambda: Path(f"/proc/{warm}/maps").read_text()  # noqa: E731
    wait_for(lambda: "sklearn" in maps())

    green = online.create_deployment("green", example_models["diabetes"], endpoint="blue")
    assert fork_server_pids(run_dir) == [warm] and "forkserver" in " ".join(cmdline(green["pid"]))
    assert score(green).status_code == 200
    assert online.get_deployment("green", endpoint="blue")["state"] == "Running"

    # an update re-execs the forked master (USR2) with the same interpreter, socket kept (a
    # new setting: an update of instance_count alone adds an instance and restarts none)
    updated = online.update_deployment("green", example_models["diabetes"], endpoint="blue",
                                       config={"instance_count": 2,
                                               "environment_variables": {"REVISION": "2"}})
    assert updated["pid"] != green["pid"] and "gunicorn" in " ".join(cmdline(updated["pid"]))
    assert score(updated).status_code == 200

    online.delete_deployment("green", endpoint="blue")
    online.delete_deployment("blue")
    assert server_pids_under(deploy_home.home) == []
    assert fork_server_pids(run_dir) == [warm]  # it outlives the servers it forked


def test_a_dead_fork_server_is_replaced(deploy_home, example_models, run_dir):
    blue = online.create_deployment("blue", example_models["diabetes"])
    [warm] = fork_server_pids(run_dir)
    os.kill(warm, signal.SIGKILL)
    wait_for(lambda: not supervisor.is_alive(warm))
    assert score(blue).status_code == 200  # servers do not depend on it
    green = online.create_deployment("green", example_models["diabetes"])
    [again] = fork_server_pids(run_dir)
    assert again != warm and score(green).status_code == 200


def test_disabled_fork_servers_start_by_exec(deploy_home, example_models, run_dir, monkeypatch):
    monkeypatch.setenv(forkserver.IDLE_ENV, "0")
    blue = online.create_deployment("blue", example_models["diabetes"])
    assert fork_server_pids(run_dir) == []
    assert cmdline(blue["pid"])[1].endswith("gunicorn") and score(blue).status_code == 200


def test_an_idle_fork_server_exits(deploy_home, example_models, run_dir, monkeypatch):
    monkeypatch.setenv(forkserver.IDLE_ENV, "2")
    blue = online.create_deployment("blue", example_models["diabetes"])
    assert "mlflow_deploy.scoring.forkserver" in cmdline(blue["pid"])  # it was forked
    wait_for(lambda: not list(run_dir.glob("*.sock")), timeout=30)
    assert fork_server_pids(run_dir) == [] and score(blue).status_code == 200


def test_a_run_folder_others_can_write_to_is_not_used(deploy_home, example_models, run_dir):
    run_dir.mkdir(mode=0o700)
    run_dir.chmod(0o777)  # a planted socket there could read every server's environment
    blue = online.create_deployment("blue", example_models["diabetes"])
    assert not list(run_dir.iterdir())
    assert cmdline(blue["pid"])[1].endswith("gunicorn") and score(blue).status_code == 200
