"""Batch jobs through a user's scoring script (tests/batch/job_script) when things go wrong: a
scorer that hangs, a worker killed mid-mini-batch, the whole job process killed and resumed, a
job canceled and resumed. Every output is compared with a clean run's, byte for byte: every input
row exactly once, in input order."""
import os
import signal
from pathlib import Path

import pytest

from mlflow_deploy import processes
from mlflow_deploy.batch import jobs
from mlflow_deploy.errors import InvalidState
from tests import prometheus
from tests.batch.job_fixtures import (ENDPOINT, jobs_home, wait_for, wait_job,  # noqa: F401
                                      write_inputs)

NAMES = ["f{}.csv".format(i) for i in range(6)]


def invoke(store, folder, *items, output_path=None, **flags):
    flags.setdefault("mini_batch_size", 1)
    return jobs.invoke(ENDPOINT, str(folder), deployment="script", store=store,
                       output_path=output_path, overrides=jobs.parse_overrides(
                           ["environment_variables.JOB_TEST_TAG=t1", *items], **flags))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("inputs") / "data", NAMES)


def parts_removed(folder_of_job):
    """Waits for a completed job's parts to be removed: the job says Completed, then removes
    them (its last step)."""
    wait_for(lambda: not (folder_of_job / "parts").exists(), 30, "the job's parts removed")


@pytest.fixture(scope="module")
def clean(jobs_home, folder):
    """The output of an undisturbed run over the folder, two mini-batches at once."""
    done = wait_job(jobs_home, invoke(jobs_home, folder, "max_concurrency_per_instance=2")["name"])
    assert done["status"] == "Completed", done
    data = Path(done["output_file"]).read_bytes()
    lines = data.decode().splitlines()
    assert len(lines) == 18 and all(line.endswith(" t1") for line in lines)  # the job's TAG
    assert [line.split()[0] for line in lines] == [n for n in NAMES for _ in range(3)]
    assert "executor local, 2 at once" in Path(done["log_path"]).read_text()
    folder_of_job = Path(jobs_home.job_dir(done["name"]))
    parts_removed(folder_of_job)  # in the output file now, not twice on disk
    assert len(list((folder_of_job / "done").glob("*.json"))) == len(NAMES)
    return data


@pytest.fixture(scope="module")
def clean_counts(jobs_home, clean):
    return [job for job in jobs.list_jobs(store=jobs_home)
            if job["output_file"] and Path(job["output_file"]).is_file()
            and Path(job["output_file"]).read_bytes() == clean][0]["counts"]


def test_summary_only_counts_as_a_clean_run_without_writing_predictions(jobs_home, folder,
                                                                        clean_counts):
    """With logging_level warning, the log has no line per mini-batch."""
    job = invoke(jobs_home, folder, "output_action=summary_only", "logging_level=warning")
    done = wait_job(jobs_home, job["name"])
    assert done["status"] == "Completed" and done["output_file"] is None
    assert done["counts"] == clean_counts and done["counts"]["rows"] == 18
    folder_of_job = Path(jobs_home.job_dir(job["name"]))
    assert list((folder_of_job / "outputs").iterdir()) == []
    parts_removed(folder_of_job)
    assert " INFO " not in Path(done["log_path"]).read_text()


def batch_workers(store, job_name):
    """The job's batch worker processes: the local executor's are the job process's children."""
    parent = store.find(jobs.JOBS, job_name).pid
    return [pid for pid in processes.pids()
            if processes.stat_field(pid, processes.PPID) == parent and processes.is_running(pid)
            and (processes.environ(pid) or {}).get(jobs.JOB_ENV) == job_name]


def test_a_hung_scorer_is_killed_at_its_timeout_retried_then_counted_failed(jobs_home, tmp_path):
    data = write_inputs(tmp_path / "data", ["a.csv", "hang-b.csv", "c.csv"])
    job = invoke(jobs_home, data, timeout=2, max_retries=1)
    done = wait_job(jobs_home, job["name"])
    assert done["status"] == "Completed", done  # error_threshold -1: any number may fail
    counts = done["counts"]
    assert (counts["files_failed"], counts["mini_batches_failed"], counts["retries"]) == (1, 1, 1)
    assert (counts["files_done"], counts["rows"]) == (2, 6)
    names = [line.split()[0] for line in Path(done["output_file"]).read_text().splitlines()]
    assert names == ["a.csv"] * 3 + ["c.csv"] * 3
    log = Path(done["log_path"]).read_text()
    assert log.count("timeout of 2 s") == 2
    assert "retry 1 of 1" in log and "failed after 2 tries" in log


def test_a_worker_killed_mid_mini_batch_is_retried_and_nothing_is_lost(jobs_home, folder,
                                                                       clean, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in NAMES:  # f3 becomes f3-slow: it waits, the first time, to be killed
        (data / ("f3-slow.csv" if name == "f3.csv" else name)).write_bytes(
            (folder / name).read_bytes())
    marker = tmp_path / "marker"
    job = invoke(jobs_home, data, "environment_variables.JOB_TEST_MARKER=" + str(marker))
    wait_for(marker.exists, 60, "the slow file's first try")
    workers = wait_for(lambda: batch_workers(jobs_home, job["name"]), 10, "the job's worker")
    os.kill(workers[0], signal.SIGKILL)
    done = wait_job(jobs_home, job["name"])
    assert done["status"] == "Completed", done
    assert done["counts"]["retries"] == 1 and done["counts"]["files_failed"] == 0
    scraped = prometheus.parse(Path(done["metrics_file"]).read_text())  # the same count there
    assert prometheus.value(scraped, "mlflow_deploy_job_retries_total", job=job["name"]) == 1
    assert Path(done["output_file"]).read_bytes() == clean.replace(b"f3.csv", b"f3-slow.csv")
    assert "ended while scoring a mini-batch" in Path(done["log_path"]).read_text()


def test_a_killed_job_process_resumes_with_every_row_exactly_once(jobs_home, folder, clean):
    job = invoke(jobs_home, folder, "environment_variables.JOB_TEST_DELAY=0.4")
    name = job["name"]
    running = wait_for(lambda: (lambda j: j if j["counts"]["mini_batches_done"] >= 2 else None)(
        jobs.show_job(name, jobs_home)), 60, "two mini-batches done")
    pid = jobs_home.find(jobs.JOBS, name).pid
    os.kill(pid, signal.SIGKILL)
    died = wait_for(lambda: (lambda j: j if j["status"] == "Failed" else None)(
        jobs.show_job(name, jobs_home)), 30, "the job to be seen dead")
    assert "job resume" in died["error"]
    kept = died["counts"]["mini_batches_done"]
    assert kept >= running["counts"]["mini_batches_done"] and kept < len(NAMES)
    assert not Path(died["output_file"]).exists()

    resumed = jobs.resume_job(name, jobs_home)
    assert resumed["status"] in ("Queued", "Running")
    with pytest.raises(InvalidState, match="still running"):
        jobs.resume_job(name, jobs_home)
    done = wait_job(jobs_home, name)
    assert done["status"] == "Completed", done
    assert Path(done["output_file"]).read_bytes() == clean
    parts_removed(Path(jobs_home.job_dir(name)))
    assert done["counts"]["mini_batches_done"] == len(NAMES) and done["counts"]["rows"] == 18
    log = Path(done["log_path"]).read_text()
    assert "resumed: 6 files in 6 mini-batches of up to 1, {} to run".format(
        len(NAMES) - kept) in log


def test_cancel_stops_the_job_keeps_its_parts_and_resume_finishes_it(jobs_home, folder, clean):
    job = invoke(jobs_home, folder, "environment_variables.JOB_TEST_DELAY=0.4")
    name = job["name"]
    wait_for(lambda: jobs.show_job(name, jobs_home)["counts"]["mini_batches_done"] >= 1, 60,
             "a mini-batch done")
    canceled = jobs.cancel_job(name, jobs_home)
    assert canceled["status"] == "Canceled", canceled
    assert not batch_workers(jobs_home, name)
    assert not processes.is_running(jobs_home.find(jobs.JOBS, name).pid)
    kept = canceled["counts"]["mini_batches_done"]
    assert 1 <= kept < len(NAMES)
    folder_of_job = Path(jobs_home.job_dir(name))
    assert len(list((folder_of_job / "parts").glob("*.part"))) == kept
    assert len(list((folder_of_job / "done").glob("*.json"))) == kept
    assert not Path(canceled["output_file"]).exists()
    with pytest.raises(InvalidState, match="ended already"):
        jobs.cancel_job(name, jobs_home)

    jobs.resume_job(name, jobs_home)
    done = wait_job(jobs_home, name)
    assert done["status"] == "Completed", done
    assert Path(done["output_file"]).read_bytes() == clean
    parts_removed(folder_of_job)


def test_an_output_file_that_appears_while_the_job_runs_is_never_overwritten(jobs_home, folder,
                                                                               tmp_path):
    job = invoke(jobs_home, folder, "environment_variables.JOB_TEST_DELAY=0.1",
                 output_path=str(tmp_path))
    (tmp_path / "predictions.csv").write_text("another job's results\n")
    done = wait_job(jobs_home, job["name"])
    assert done["status"] == "Failed" and "output file already exists" in done["error"]
    assert (tmp_path / "predictions.csv").read_text() == "another job's results\n"


def test_counts_catch_up_while_a_mini_batch_runs_and_a_dead_job_shows_its_done_records(
        jobs_home, tmp_path):
    """A running job writes its counts at most every COUNTS_EVERY_S: mini-batches that end
    closer together than that are counted within that time even when no other ends for long,
    and a job whose process died shows what its done records hold."""
    quick = ["a{}.csv".format(i) for i in range(12)]
    data = write_inputs(tmp_path / "data", quick + ["b-slow.csv"])
    marker = tmp_path / "marker"
    job = invoke(jobs_home, data, "environment_variables.JOB_TEST_MARKER=" + str(marker))
    name = job["name"]
    wait_for(marker.exists, 60, "the slow file's first try")  # it now waits to be killed
    shown = wait_for(lambda: (lambda j: j if j["counts"]["mini_batches_done"] == len(quick)
                              else None)(jobs.show_job(name, jobs_home)),
                     5 * jobs.COUNTS_EVERY_S + 2, "the quick mini-batches counted")
    assert shown["status"] == "Running" and shown["counts"]["rows"] == 3 * len(quick)
    done_records = Path(jobs_home.job_dir(name)) / "done"
    assert len(list(done_records.glob("*.json"))) == len(quick)

    hung = batch_workers(jobs_home, name)  # the job's children until it dies: ours to stop
    os.kill(jobs_home.find(jobs.JOBS, name).pid, signal.SIGKILL)
    for pid in hung:
        os.kill(pid, signal.SIGKILL)
    died = wait_for(lambda: (lambda j: j if j["status"] == "Failed" else None)(
        jobs.show_job(name, jobs_home)), 30, "the job to be seen dead")
    assert died["counts"]["mini_batches_done"] == len(quick)
