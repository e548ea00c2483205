"""The Dask executor: the same mini-batches as Dask tasks on a LocalCluster the job starts
(processes on 127.0.0.1, no dashboard), each handing its mini-batch to a batch worker kept in
the Dask worker's process, give the local executor's output byte for byte."""
import sys
from pathlib import Path

import pytest

from mlflow_deploy.batch import computes, jobs
from mlflow_deploy.errors import InvalidParameter
from tests.batch.job_fixtures import ENDPOINT, jobs_home, wait_job, write_inputs  # noqa: F401

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
