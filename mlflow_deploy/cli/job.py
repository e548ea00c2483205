"""``mlflow-deploy job ...``: the batch jobs ``batch-endpoint invoke`` starts, as ``az ml job``
shows them (``show``, ``list``, ``stream``, ``cancel``), plus ``resume`` for a job whose process
ended before it did.

``show``, ``list``, ``cancel`` and ``resume`` print JSON on stdout (``show`` and ``list``: a
table with ``-o table``); ``stream`` prints the job's
log and its progress on stderr (a progress bar on a terminal: cli/progress.py), and exits
non-zero unless the job completed.
"""
from typing import Optional

import click

from mlflow_deploy.errors import DeployError

from .common import OUTPUT, columns, print_json
from .progress import follow_job

__all__ = ["job_group", "JOB_NAME", "JOB_TABLE", "raise_unless_completed"]

#: the columns of ``-o table`` (``job show``, ``job list``, ``batch-endpoint list-jobs``)
JOB_TABLE = columns("name", "endpoint_name", "deployment_name", "status", "created", "duration_s",
                    "output_file")
JOB_NAME = click.option("-n", "--name", required=True, help="The job's name (batchjob-...).")


def raise_unless_completed(job) -> None:
    """A job that did not complete ends the command that waited for it with an error."""
    if job["status"] != "Completed":
        raise DeployError("The job {} ended {}{}".format(
            job["name"], job["status"], ": " + job["error"] if job.get("error") else "."))


@click.group("job")
def job_group():
    """Batch jobs: their status, counts and output, their log, cancel and resume."""


@job_group.command("show")
@JOB_NAME
@OUTPUT
def show(name: str):
    """Print the job: status, counts of files, mini-batches and rows, output, timings."""
    from mlflow_deploy.batch import jobs

    print_json(jobs.show_job(name), JOB_TABLE)


@job_group.command("list")
@click.option("--endpoint-name", default=None, help="Only the jobs of this batch endpoint.")
@OUTPUT
def list_(endpoint_name: Optional[str]):
    """Print every job, oldest first."""
    from mlflow_deploy.batch import jobs

    print_json(jobs.list_jobs(endpoint=endpoint_name), JOB_TABLE)


@job_group.command("stream")
@JOB_NAME
def stream(name: str):
    """Follow the job's log and progress (rows/s, ETA) until it ends."""
    raise_unless_completed(follow_job(name))


@job_group.command("cancel")
@JOB_NAME
def cancel(name: str):
    """Stop the job: its workers end, the mini-batches already done stay done."""
    from mlflow_deploy.batch import jobs

    print_json(jobs.cancel_job(name))


@job_group.command("resume")
@JOB_NAME
@click.option("--wait", is_flag=True, help="Follow it until it ends (as `job stream`).")
def resume(name: str, wait: bool):
    """Run a job whose process ended before it did (killed, canceled, a reboot) again: the
    mini-batches done are kept, the others run; every input row reaches the output once."""
    from mlflow_deploy.batch import jobs

    job = jobs.resume_job(name)
    if wait:
        raise_unless_completed(follow_job(job["name"]))
    else:
        print_json(job)
