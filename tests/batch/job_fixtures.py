"""What the job tests share: a home with a batch endpoint whose deployments score the diabetes
example model, no-code ("mlflow") and through a user's script ("script", tests/batch/job_script),
in the example models' environment (built once into the suite's shared cache); tiny input
folders; waiting on a job's status with a deadline.

Each test module makes its own home (module scope: staging a deployment on a cached environment
takes well under a second) and, at its end, checks that no process of its jobs outlived them."""
import os
import signal
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import pytest

from mlflow_deploy import processes
from mlflow_deploy.batch import deployments, endpoints, jobs
from mlflow_deploy.store import JOBS, Store

SCRIPT_DIR = Path(__file__).resolve().parent / "job_script"
ENDPOINT = "scores"
#: rows per input file: tiny folders keep the jobs fast
ROWS = 3


@pytest.fixture(scope="module")
def jobs_home(tmp_path_factory, example_model_dirs):
    home = (tmp_path_factory.mktemp("jobs") / "home").resolve()
    store = Store(home)
    endpoints.create_batch_endpoint(ENDPOINT, store=store)
    model = example_model_dirs["diabetes"]
    deployments.create_batch_deployment("mlflow", ENDPOINT, model, store=store)
    deployments.create_batch_deployment(
        "script", ENDPOINT, model, {"code": str(SCRIPT_DIR), "scoring_script": "score.py"},
        store=store)
    yield store
    for job in store.select(JOBS):
        if job.status not in jobs.TERMINAL:
            try:
                jobs.cancel_job(job.name, store)
            except Exception:  # ended meanwhile
                pass
    names = {job.name for job in store.select(JOBS)}
    leftovers = wait_no_job_processes(names)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not leftovers, "processes of the jobs outlived them"


def job_processes(names) -> List[int]:
    """Live processes started for these jobs: the job's own, its workers, Dask's."""
    found = []
    for pid in processes.pids():
        env = processes.environ(pid) or {}
        if env.get(jobs.JOB_ENV) in names and processes.is_running(pid):
            found.append(pid)
    return found


def wait_no_job_processes(names, timeout: float = 20.0) -> List[int]:
    deadline = time.monotonic() + timeout
    while True:
        pids = job_processes(names)
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


def wait_for(condition: Callable[[], object], timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def wait_job(store: Store, name: str, timeout: float = 120.0) -> Dict:
    """The job once it has ended."""
    return wait_for(lambda: (lambda job: job if job["status"] in jobs.TERMINAL else None)(
        jobs.show_job(name, store)), timeout, "job " + name + " to end")


def diabetes_rows():
    from sklearn.datasets import load_diabetes

    return load_diabetes(return_X_y=True, as_frame=True)[0]


def write_inputs(folder: Path, names: Sequence[str], start: int = 0) -> Path:
    """One file per name, each with the next ROWS rows of the diabetes data, as its extension
    says (.csv, .parquet, .pqt); a name starting with corrupt- gets bytes no reader takes."""
    frame = diabetes_rows()
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        path = folder / name
        if name.startswith("corrupt-"):
            path.write_bytes(b"PAR1\x00\xff not a table \x00" * 4)
            continue
        rows = frame.iloc[(start + i) * ROWS:(start + i + 1) * ROWS]
        if path.suffix == ".csv":
            rows.to_csv(path, index=False)
        else:
            rows.to_parquet(path, index=False)
    return folder


def expected_predictions(model_dir: str, folder: Path, names: Sequence[str]) -> List[tuple]:
    """(file name, prediction) for every row of the named files, in the order a job writes them
    (files sorted by path, then rows)."""
    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(model_dir)
    out = []
    for name in sorted(names):
        path = folder / name
        frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
        out += [(name, float(value)) for value in model.predict(frame)]
    return out
