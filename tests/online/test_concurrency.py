"""Commands on one home side by side: an environment build holds up only its own deployment's
commands, two creates of one name leave one deployment, an update racing a delete does not bring
the deployment back, and an environment pruned before it was recorded is built again."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from mlflow_deploy import online, processes
from mlflow_deploy.envs import Environment
from mlflow_deploy.envs.cache import CACHE_ENV, EnvCache, file_lock
from mlflow_deploy.errors import AlreadyExists, InvalidState, NotFound
from mlflow_deploy.online import forkserver
from mlflow_deploy.revisions import staged_then_locked
from tests.envs.conftest import make_sdist, save_model
from tests.online.fixtures import server_pids_under, wait_no_servers

WAITING_PACKAGE = "mdeploy-waiting-build"

CREATE = "import sys\nfrom mlflow_deploy import online\nonline.create_deployment(*sys.argv[1:])\n"


class Call(threading.Thread):
    """``function()`` in a thread of its own; ``outcome()`` is what it returned or raised."""

    def __init__(self, function):
        super().__init__(daemon=True)
        self.function, self.returned, self.raised = function, None, None
        self.start()

    def run(self):
        try:
            self.returned = self.function()
        except BaseException as exc:  # handed to the test by outcome()
            self.raised = exc

    def outcome(self, timeout=300.0):
        self.join(timeout)
        assert not self.is_alive(), f"still running after {timeout:.0f} s"
        return self.raised if self.raised is not None else self.returned


def wait_until(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def waiting_sdist(folder, started, release):
    """A source distribution whose wheel build writes ``started``, then waits until ``release``
    exists (at most 10 minutes): an environment build that takes as long as the test wants."""
    make_sdist(folder, WAITING_PACKAGE, "0.1", setup_py=textwrap.dedent(f"""
        import os, time
        from setuptools import setup
        from setuptools.command.build_py import build_py


        class WaitForRelease(build_py):
            def run(self):
                open({str(started)!r}, "w").close()
                deadline = time.monotonic() + 600
                while not os.path.exists({str(release)!r}) and time.monotonic() < deadline:
                    time.sleep(0.05)
                super().run()


        setup(cmdclass={{"build_py": WaitForRelease}})
        """))


@pytest.mark.slow
def test_a_build_holds_up_no_other_deployment(deploy_home, example_model_dirs, tmp_path):
    """A create that builds a new environment (one whose build waits for the test) holds only its
    own deployment's lock: meanwhile another command on the same home lists, creates, updates
    and deletes other deployments."""
    started, release = tmp_path / "build-started", tmp_path / "build-may-finish"
    waiting_sdist(tmp_path / "links", started, release)
    model = save_model(tmp_path / "waiting-model", ["cloudpickle"])
    with open(model / "requirements.txt", "a") as f:
        f.write(f"--find-links {tmp_path / 'links'}\n{WAITING_PACKAGE}==0.1\n")
    # another process on the same home; its env cache is its own, as this env is new every run
    env = dict(os.environ, **{CACHE_ENV: str(tmp_path / "envs"), forkserver.IDLE_ENV: "0"})
    slow = subprocess.Popen([sys.executable, "-c", CREATE, "slow", str(model)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: started.exists() or slow.poll() is not None, timeout=600)
        assert slow.poll() is None, slow.communicate()[1].decode(errors="replace")[-3000:]

        assert online.list_deployments() == []  # the building one is not recorded yet
        fast = Call(lambda: online.create_deployment("fast", example_model_dirs["diabetes"]))
        created = fast.outcome()
        assert isinstance(created, dict), created
        assert created["state"] == "Running"
        updated = online.update_deployment("fast", config={
            "instance_count": 2, "environment_variables": {"REVISION": "2"}})
        assert updated["revision"] == 2 and updated["state"] == "Running"
        assert [d["name"] for d in online.list_deployments()] == ["fast"]
        online.delete_deployment("fast")
        # all of it while the build was waiting
        assert slow.poll() is None and not release.exists()
    finally:
        release.touch()
        _, err = slow.communicate(timeout=900)
    assert slow.returncode == 0, err.decode(errors="replace")[-3000:]
    built = online.get_deployment("slow")
    assert built["state"] == "Running" and built["environment"]["root"].startswith(str(tmp_path))
    assert [d["name"] for d in online.list_deployments()] == ["slow"]


@pytest.mark.slow
def test_two_creates_of_one_name_leave_one_deployment(deploy_home, example_model_dirs):
    together = threading.Barrier(2)

    def create():
        together.wait()
        return online.create_deployment("blue", example_model_dirs["diabetes"])

    outcomes = [call.outcome() for call in [Call(create), Call(create)]]
    won = [o for o in outcomes if isinstance(o, dict)]
    lost = [o for o in outcomes if isinstance(o, AlreadyExists)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert "already exists" in str(lost[0]) and lost[0].argument == "name"
    blue = online.get_deployment("blue")
    assert blue["state"] == "Running" and blue["pid"] == won[0]["pid"]
    # the loser left nothing: one folder, one row, and only the winner's processes (its server
    # and its endpoint's gateway)
    assert [p.name for p in (deploy_home.home / "deployments").iterdir()] == ["blue"]
    assert [d.name for d in deploy_home.list_deployments()] == ["blue"]
    assert {processes.stat_field(pid, processes.PGRP) for pid in
            server_pids_under(deploy_home.home)} == {blue["pid"],
                                                     deploy_home.get_endpoint("blue").pid}


@pytest.mark.slow
def test_an_update_racing_a_delete_does_not_bring_it_back(deploy_home, example_model_dirs):
    created = online.create_deployment("blue", example_model_dirs["diabetes"])
    staged = deploy_home.deployment_dir("blue") / "model" / "2"
    # hold the environment as a build of it in another process would: the update's staging
    # waits there, and the delete comes while it does
    with EnvCache().mutex(created["environment"]["key"]):
        update = Call(lambda: online.update_deployment(
            "blue", model_uri=str(example_model_dirs["diabetes"])))
        wait_until(staged.exists)
        delete = Call(lambda: online.delete_deployment("blue"))
    updated = update.outcome()
    assert isinstance(updated, dict) and updated["revision"] == 2, updated
    assert delete.outcome() is None
    with pytest.raises(NotFound):
        online.get_deployment("blue")
    assert online.list_deployments() == [] and online.list_endpoints() == []
    assert list((deploy_home.home / "deployments").iterdir()) == []
    assert not (deploy_home.home / "locks" / "deployments" / "blue").exists()
    assert wait_no_servers(deploy_home.home) == []
    # and the other order: an update of a deleted deployment finds nothing
    with pytest.raises(NotFound):
        online.update_deployment("blue")
    assert list((deploy_home.home / "deployments").iterdir()) == []


def test_an_environment_pruned_before_it_is_recorded_is_staged_again(deploy_home, tmp_path):
    """`env prune` removes unrecorded environments under the store's lock: one staged just
    before is checked once the lock is ours, and staged again if it is gone."""
    python = tmp_path / "env" / "bin" / "python"
    staged = []

    def stage():
        python.parent.mkdir(parents=True, exist_ok=True)
        python.touch()
        if len(staged) < 2:
            python.unlink()  # pruned before the lock was ours
        staged.append(len(staged))
        return {}, Environment(python=str(python), key="k", root=str(tmp_path / "env"),
                               manager="uv", python_version="3")

    unstaged = []
    with staged_then_locked(deploy_home, stage, lambda: unstaged.append(1)) as (
            _, env):
        assert env.python == str(python) and python.exists()
        with file_lock(deploy_home.home / "lock", blocking=False) as free:
            assert not free  # the store's lock is held while the caller starts and records
    assert staged == [0, 1, 2] and unstaged == [1, 1]
    with file_lock(deploy_home.home / "lock", blocking=False) as free:
        assert free

    python.unlink()
    with pytest.raises(InvalidState, match="env prune"):
        with staged_then_locked(deploy_home, lambda: ({}, Environment(
                python=str(python), key="k", root="", manager="uv", python_version="3")),
                lambda: None):
            pass
