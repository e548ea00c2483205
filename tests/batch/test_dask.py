"""The Dask executor: the same mini-batches as Dask tasks on a LocalCluster the job starts
(processes on 127.0.0.1, no dashboard), each handing its mini-batch to a batch worker kept in
the Dask worker's process, give the local executor's output byte for byte."""
import csv
import json
import os
import shlex
import signal
import sys
from pathlib import Path

import pytest

from mlflow_deploy.batch import computes, jobs
from mlflow_deploy.errors import InvalidParameter
from tests.batch.job_fixtures import (ENDPOINT, jobs_home, wait_for, wait_job,  # noqa: F401
                                     write_inputs)

pytest.importorskip("distributed")


def test_dask_tasks_give_the_local_executors_output(jobs_home, tmp_path):
    data = write_inputs(tmp_path / "data", ["a.csv", "b.parquet", "c.csv", "d.csv"])
    local = jobs.invoke(ENDPOINT, str(data), store=jobs_home,
                        overrides=jobs.parse_overrides(["output_format=csv"], mini_batch_size=1))
    dask = jobs.invoke(ENDPOINT, str(data), store=jobs_home,
                       overrides=jobs.parse_overrides(
                           ["output_format=csv", "executor=dask", "instance_count=2"],
                           mini_batch_size=1))
    assert dask["settings"]["executor"] == "dask" and local["settings"]["executor"] == "local"
    local, dask = wait_job(jobs_home, local["name"]), wait_job(jobs_home, dask["name"])
    assert dask["status"] == "Completed", dask
    assert local["status"] == "Completed", local
    assert dask["counts"] == local["counts"] and dask["counts"]["rows"] == 12
    produced = Path(dask["output_file"]).read_bytes()
    assert produced == Path(local["output_file"]).read_bytes()
    assert produced.count(b"\n") == 13  # one header, then the rows
    log = Path(dask["log_path"]).read_text()
    assert "executor dask, 2 at once" in log
    assert "distributed.scheduler - INFO" not in log  # Dask's own chatter stays out


def test_a_batch_worker_under_dask_starts_from_the_local_executors_environment(jobs_home,
                                                                               tmp_path):
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_ (and thread limits) for its own worker process;
    the batch worker it starts does not inherit them (glibc would hand every freed frame back
    to the kernel), while the job's environment_variables still reach it."""
    data = write_inputs(tmp_path / "data", ["a.csv", "b.csv"])
    echoed = {}
    for executor in ("local", "dask"):
        job = jobs.invoke(ENDPOINT, str(data), deployment="script", store=jobs_home,
                          overrides=jobs.parse_overrides(
                              ["output_format=csv", "executor=" + executor,
                               "environment_variables.JOB_TEST_ECHO=MALLOC_TRIM_THRESHOLD_",
                               "environment_variables.JOB_TEST_TAG=" + executor]))
        done = wait_job(jobs_home, job["name"])
        assert done["status"] == "Completed", done
        rows = list(csv.reader(Path(done["output_file"]).read_text().splitlines()))
        assert rows[0] == ["file", "prediction", "tag", "echo"] and len(rows) == 7
        echoed[executor] = {tuple(row[2:]) for row in rows[1:]}
    assert echoed == {"local": {("local", "-")}, "dask": {("dask", "-")}}


def test_a_dask_compute_makes_its_jobs_dask_tasks(jobs_home):
    computes.create_compute("cluster", "dask", "tcp://127.0.0.1:8786", store=jobs_home)
    settings = jobs.effective_settings({"compute": "cluster"}, {}, jobs_home)
    assert (settings["executor"], settings["scheduler_address"]) == (
        "dask", "tcp://127.0.0.1:8786")
    settings = jobs.effective_settings({"compute": "cluster"}, {"executor": "local"}, jobs_home)
    assert (settings["executor"], settings["scheduler_address"]) == ("local", None)
    computes.create_compute("here", "local", store=jobs_home)
    assert jobs.effective_settings({"compute": "here"}, {}, jobs_home)["executor"] == "local"


def test_without_distributed_the_dask_executor_is_a_one_line_error(jobs_home, tmp_path,
                                                                   monkeypatch):
    data = write_inputs(tmp_path / "data", ["a.csv"])
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    before = jobs.list_jobs(store=jobs_home)
    with pytest.raises(InvalidParameter, match=r"mlflow-deploy\[dask\]") as caught:
        jobs.invoke(ENDPOINT, str(data), store=jobs_home,
                    overrides=jobs.parse_overrides(["executor=dask"]))
    assert "\n" not in str(caught.value)
    assert jobs.list_jobs(store=jobs_home) == before


def test_a_worker_on_another_machine_gets_the_model_and_builds_the_env_from_the_lock(
        jobs_home, tmp_path):
    """A Dask worker that cannot see the job's home nor the env cache (its own mount namespace,
    with both hidden under empty tmpfs mounts: another machine's view, only the inputs shared)
    scores the job with the model the job shipped and an env built from the lock, under the
    same key, and gives the local executor's output byte for byte."""
    import subprocess

    from mlflow_deploy.envs.cache import CACHE_ENV

    hidden = [str(jobs_home.home), os.environ[CACHE_ENV]]
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs none " + shlex.quote(hidden[0])],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("needs unshare and mount (root) to give a Dask worker its own filesystem")
    data = write_inputs(tmp_path / "data", ["a.csv", "b.parquet", "c.csv"])
    local = wait_job(jobs_home, jobs.invoke(
        ENDPOINT, str(data), store=jobs_home,
        overrides=jobs.parse_overrides(["output_format=csv"], mini_batch_size=1))["name"])

    scheduler_file, worker_home = tmp_path / "scheduler.json", tmp_path / "worker-home"
    env = {k: v for k, v in os.environ.items() if k not in (CACHE_ENV, "MLFLOW_DEPLOY_HOME")}
    env["MLFLOW_DEPLOY_HOME"] = str(worker_home)
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    mounts = " && ".join("mount -t tmpfs none " + shlex.quote(path) for path in hidden)
    worker_log = open(tmp_path / "worker.log", "wb")  # read it when the job fails
    worker = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", mounts + " && exec " +
         " ".join(shlex.quote(a) for a in [
             sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
             str(scheduler_file), "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--local-directory", str(tmp_path / "worker-scratch")])],
        env=env, stdout=subprocess.DEVNULL, stderr=worker_log, start_new_session=True)
    try:
        wait_for(scheduler_file.exists, 60, "the scheduler's address")
        address = json.loads(scheduler_file.read_text())["address"]
        job = jobs.invoke(ENDPOINT, str(data), store=jobs_home, overrides=jobs.parse_overrides(
            ["output_format=csv", "executor=dask", "scheduler_address=" + address],
            mini_batch_size=1))
        job = wait_job(jobs_home, job["name"], timeout=120)
        assert job["status"] == "Completed", (job, Path(job["log_path"]).read_text()[-2000:],
                                              (tmp_path / "worker.log").read_text()[-2000:])
        assert Path(job["output_file"]).read_bytes() == Path(local["output_file"]).read_bytes()
        spec = json.loads((Path(job["log_path"]).parent / "worker.json").read_text())
        key = Path(spec["python"]).parent.parent.name
        assert (worker_home / "envs" / key / "bin" / "python").exists()  # the same key
        assert len(list((worker_home / "shipped").iterdir())) == 1  # the model, once
    finally:
        for proc in (worker, scheduler):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        worker_log.close()
