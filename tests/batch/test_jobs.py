"""Batch jobs of an MLflow model without a script (the diabetes example), end to end: the
endpoint's deployment, the detached job process, its batch workers in the model's environment,
the output file. Tiny folders; every wait is on the job's status, with a deadline."""
import ast
import io
import json
import re
from pathlib import Path

import pytest

from mlflow_deploy.batch import jobs
from mlflow_deploy.errors import InvalidParameter, InvalidState, NotFound
from mlflow_deploy.store import JOBS
from tests import prometheus
from tests.batch.job_fixtures import (ENDPOINT, expected_predictions, jobs_home,  # noqa: F401
                                      wait_job, write_inputs)

NAMES = ["a.csv", "b.parquet", "c.pqt", "d.csv"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Four files of three rows, and a nested folder the job must not explore."""
    root = write_inputs(tmp_path_factory.mktemp("inputs") / "data", NAMES)
    write_inputs(root / "nested", ["x.csv", "y.csv"], start=10)
    return root


@pytest.fixture(scope="module")
def expected(example_model_dirs, folder):
    return expected_predictions(example_model_dirs["diabetes"], folder, NAMES)


def azure_rows(path):
    """Azure's MLflow batch lines: [file, prediction] each, read as Azure's docs read them."""
    rows = [ast.literal_eval(line) for line in Path(path).read_text().splitlines()]
    return [(name, float(value)) for name, value in rows]


def assert_same(rows, expected):
    assert [name for name, _ in rows] == [name for name, _ in expected]
    assert [value for _, value in rows] == pytest.approx([v for _, v in expected], rel=1e-9)


def test_a_folder_of_csv_and_parquet_files_in_mini_batches(jobs_home, folder, expected):
    job = jobs.invoke(ENDPOINT, str(folder), input_type="uri_folder", store=jobs_home,
                      overrides=jobs.parse_overrides([], mini_batch_size=2))
    assert job["name"].startswith("batchjob-") and job["status"] == "Queued"
    assert job["warnings"] == ["2 files in nested folders of the input were skipped: nested "
                               "folders are not explored"]
    listed = json.loads((Path(jobs_home.job_dir(job["name"])) / "inputs.json").read_text())
    assert listed == [str(folder / name) for name in sorted(NAMES)]

    done = wait_job(jobs_home, job["name"])
    assert done["status"] == "Completed", done
    assert done["counts"] == {"files": 4, "files_done": 4, "files_failed": 0, "mini_batches": 2,
                              "mini_batches_done": 2, "mini_batches_failed": 0, "retries": 0,
                              "rows": 12}
    assert done["output_file"] == str(Path(jobs_home.job_dir(job["name"])) / "outputs" /
                                      "predictions.csv")
    assert_same(azure_rows(done["output_file"]), expected)
    assert done["settings"]["mini_batch_size"] == 2 and done["settings"]["instance_count"] == 1
    assert done["started"] and done["finished"] and done["duration_s"] > 0
    log = Path(done["log_path"]).read_text()
    assert log.count("submitted (2 files, try 1)") == 2 and log.count("done: 6 rows") == 2
    assert "nested folders are not explored" in log


def test_a_corrupt_file_counts_as_failed_and_the_rest_is_written(jobs_home, folder, expected,
                                                                   tmp_path):
    """mini_batch_size 1, Parquet output in a folder of our own; error_threshold -1 (the
    default) lets the job complete with the failed file counted; debug logging lists each
    mini-batch's files."""
    data = write_inputs(tmp_path / "data", ["corrupt-0.parquet"])
    for name in NAMES:
        (data / name).write_bytes((folder / name).read_bytes())
    out = tmp_path / "out"
    job = jobs.invoke(ENDPOINT, str(data), output_path=str(out), store=jobs_home,
                      overrides=jobs.parse_overrides(
                          ["output_format=parquet", "output_file_name=scores.parquet",
                           "logging_level=debug"], mini_batch_size=1))
    done = wait_job(jobs_home, job["name"])
    assert done["status"] == "Completed", done
    counts = done["counts"]
    assert (counts["files"], counts["files_done"], counts["files_failed"]) == (5, 4, 1)
    assert (counts["mini_batches"], counts["mini_batches_done"], counts["rows"]) == (5, 5, 12)
    # the job's metrics file, Prometheus text written by its process, and job show's view of it
    scraped = prometheus.parse((Path(jobs_home.job_dir(job["name"])) / "metrics.prom").read_text())
    labels = {"job": job["name"]}
    assert prometheus.value(scraped, "mlflow_deploy_job_rows_total", **labels) == 12
    assert prometheus.value(scraped, "mlflow_deploy_job_files_done_total", **labels) == 4
    assert prometheus.value(scraped, "mlflow_deploy_job_files_failed_total", **labels) == 1
    assert prometheus.value(scraped, "mlflow_deploy_job_rows_per_second", **labels) > 0
    assert prometheus.value(scraped, "mlflow_deploy_job_retries_total", **labels) == 0
    assert prometheus.value(scraped, "mlflow_deploy_job_files", **labels) == 5
    assert jobs.show_job(job["name"], jobs_home)["metrics_file"] == str(
        Path(jobs_home.job_dir(job["name"])) / "metrics.prom")
    assert done["output_file"] == str(out / "scores.parquet")
    import pandas as pd

    table = pd.read_parquet(out / "scores.parquet")
    assert list(table.columns) == ["row", "prediction", "file"] or "prediction" in table.columns
    rows = [(Path(f).name, float(p)) for f, p in zip(table["file"], table["prediction"])]
    assert_same(rows, expected)
    log = Path(done["log_path"]).read_text()
    assert "corrupt-0.parquet" in log and " DEBUG mini-batch 1 files: " in log
    # the failed file's warning once: the job's own line, not the worker's too
    assert log.count("Error processing input file") == 1
    assert re.search(r" WARNING mini-batch \d+: Error processing input file", log)


def test_error_threshold_0_fails_the_job_at_the_first_failed_file(jobs_home, tmp_path):
    """A glob input; the corrupt file sorts first, so the job fails before the rest."""
    data = write_inputs(tmp_path / "data", ["a-corrupt.csv", "b.csv", "c.csv", "d.csv"])
    (data / "a-corrupt.csv").write_bytes(b"\x00\xff\x00 garbage\n\x01")
    (data / "notes.txt").write_text("not matched by the glob")
    job = jobs.invoke(ENDPOINT, str(data / "*.csv"), store=jobs_home,
                      overrides={"error_threshold": 0, "mini_batch_size": 1})
    done = wait_job(jobs_home, job["name"])
    assert done["status"] == "Failed"
    assert "error_threshold" in done["error"]
    assert done["counts"]["files"] == 4 and done["counts"]["files_failed"] == 1
    assert done["counts"]["mini_batches_done"] < 4
    assert not Path(done["output_file"]).exists()


def test_an_existing_output_fails_before_any_work(jobs_home, folder, tmp_path):
    (tmp_path / "predictions.csv").write_text("earlier results\n")
    before = jobs_home.select(JOBS)
    with pytest.raises(InvalidState, match="output file already exists"):
        jobs.invoke(ENDPOINT, str(folder), output_path=str(tmp_path), store=jobs_home)
    assert jobs_home.select(JOBS) == before
    assert (tmp_path / "predictions.csv").read_text() == "earlier results\n"


def test_inputs_and_deployments_are_checked_before_a_job_is_recorded(jobs_home, folder,
                                                                     tmp_path):
    before = jobs_home.select(JOBS)
    with pytest.raises(NotFound, match=r"The input does not exist"):
        jobs.invoke(ENDPOINT, str(tmp_path / "absent"), store=jobs_home)
    with pytest.raises(InvalidParameter, match="uri_file"):
        jobs.invoke(ENDPOINT, str(folder), input_type="uri_file", store=jobs_home)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidParameter, match="no files"):
        jobs.invoke(ENDPOINT, str(tmp_path / "empty"), store=jobs_home)
    with pytest.raises(NotFound, match="no deployment with this name"):
        jobs.invoke(ENDPOINT, str(folder), deployment="absent", store=jobs_home)
    with pytest.raises(NotFound, match=r"No batch endpoint with this name"):
        jobs.invoke("absent", str(folder), store=jobs_home)
    with pytest.raises(InvalidParameter, match="remote data"):
        jobs.invoke(ENDPOINT, "https://example.invalid/data/", store=jobs_home)
    assert jobs_home.select(JOBS) == before


def test_overrides_are_checked_and_lie_over_the_deployment_settings(jobs_home, tmp_path):
    overrides = jobs.parse_overrides(
        ["output_file_name=out.csv", "environment_variables.TAG=007", "settings.error_threshold=5",
         "compute.instance_count=3", "retry_settings.timeout=7", "output_action=SummaryOnly",
         "executor=local"], max_retries=0, mini_batch_size=None)
    assert overrides == {"output_file_name": "out.csv", "environment_variables": {"TAG": "007"},
                         "error_threshold": 5, "instance_count": 3,
                         "retry_settings": {"timeout": 7, "max_retries": 0},
                         "output_action": "summary_only", "executor": "local"}
    config = {"mini_batch_size": 4, "retry_settings": {"max_retries": 2, "timeout": 30},
              "environment_variables": {"A": "1"}, "output_file_name": "p.csv"}
    settings = jobs.effective_settings(config, overrides, jobs_home)
    assert settings["mini_batch_size"] == 4 and settings["output_file_name"] == "out.csv"
    assert settings["retry_settings"] == {"max_retries": 0, "timeout": 7}
    assert settings["environment_variables"] == {"A": "1", "TAG": "007"}
    assert settings["executor"] == "local" and settings["scheduler_address"] is None
    dask = jobs.effective_settings({}, jobs.parse_overrides(
        ["scheduler_address=tcp://127.0.0.1:8786"]), jobs_home)
    assert (dask["executor"], dask["scheduler_address"]) == ("dask", "tcp://127.0.0.1:8786")

    for item, key in [("mini_batch_size=0", "mini_batch_size"), ("timeout=x", "timeout"),
                      ("output_format=xml", "output_format"), ("executor=ray", "executor"),
                      ("output_file_name=a/b.csv", "output_file_name"),
                      ("scheduler_address=127.0.0.1", "scheduler_address"),
                      ("logging_level=loud", "logging_level")]:
        with pytest.raises(InvalidParameter, match=key) as caught:
            jobs.parse_overrides([item])
        assert item.split("=", 1)[1] not in str(caught.value).replace(key, "")
    # the mapping the Python API and the plugin's config give: values as text or JSON too
    data = write_inputs(tmp_path / "data", ["a.csv"])
    job = jobs.invoke(ENDPOINT, str(data / "a.csv"), deployment="script", store=jobs_home,
                      overrides={"mini_batch_size": "3", "retry_settings": '{"timeout": 9}',
                                 "environment_variables": {"N": 1},
                                 "output_action": "summary_only"})
    assert job["settings"]["mini_batch_size"] == 3
    assert job["settings"]["retry_settings"] == {"max_retries": 3, "timeout": 9}
    assert job["settings"]["environment_variables"] == {"N": "1"}
    assert wait_job(jobs_home, job["name"])["counts"]["rows"] == 3
    with pytest.raises(InvalidParameter, match="unknown key 'colour'"):
        jobs.parse_overrides(["colour=blue"])
    with pytest.raises(InvalidParameter, match="goes with executor dask"):
        jobs.effective_settings({}, jobs.parse_overrides(
            ["executor=local", "scheduler_address=tcp://h:1"]), jobs_home)


def test_show_list_and_unknown_jobs(jobs_home):
    listed = jobs.list_jobs(store=jobs_home)
    assert listed and all(job["name"].startswith("batchjob-") for job in listed)
    assert jobs.list_jobs(endpoint=ENDPOINT, store=jobs_home) == listed
    with pytest.raises(NotFound, match="No batch endpoint with this name"):
        jobs.list_jobs(endpoint="absent", store=jobs_home)
    for name in ("batchjob-absent", "../etc", ""):
        with pytest.raises(NotFound, match="No job with this name"):
            jobs.show_job(name, jobs_home)
    ended = listed[0]
    with pytest.raises(InvalidState, match="ended already"):
        jobs.cancel_job(ended["name"], jobs_home)
    if ended["status"] == "Completed":
        with pytest.raises(InvalidState, match="nothing to resume"):
            jobs.resume_job(ended["name"], jobs_home)
    buffer = io.StringIO()
    assert jobs.stream_job(ended["name"], jobs_home, out=buffer)["status"] == ended["status"]
    assert "job {}: {}".format(ended["name"], ended["status"]) in buffer.getvalue()
