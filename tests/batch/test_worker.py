"""The batch worker as the job runs it: real worker processes in the example models' real
environment, scoring real files through the same drivers as tests/scoring/test_batch.py, with
the client's timeout, a killed process and a script's prints on the way."""
import ast
import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pandas as pd
import pytest

from example_models.digits import build as digits
from mlflow_deploy.batch.worker import (BatchWorker, MiniBatchOutcome, WorkerDied,
                                        WorkerSpec, WorkerStartFailed, WorkerTimedOut)
from mlflow_deploy import processes

HEART = ["age", "sex", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak",
         "slope", "ca", "thal"]
HEART_ROWS = [[63, 1, 145, 233, 1, 2, 150, 0, 2.3, 3, 0, 2],
              [41, 0, 130, 204, 0, 2, 172, 0, 1.4, 1, 0, 1],
              [57, 1, 140, 192, 0, 0, 148, 0, 0.4, 2, 0, 3]]


def azure_read_back(data: bytes):
    """Azure's own way to read predictions.csv (how-to-mlflow-batch, "Analyzing the outputs")."""
    return pd.DataFrame(ast.literal_eval(data.decode("utf-8").replace("\n", ",")),
                        columns=["file", "prediction"])


def script(tmp_path, source, name="driver.py"):
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / name).write_text(textwrap.dedent(source))
    return str(code)


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@pytest.fixture
def workers():
    """workers(spec, log_path=None) -> a BatchWorker closed at the end of the test."""
    started = []

    def make(spec, log_path=None, **kwargs):
        worker = BatchWorker(spec, log_path, **kwargs)
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.close()


def test_the_spec_travels_as_plain_data():
    spec = WorkerSpec(python="/env/bin/python", model_dir="/m", output_format="csv",
                      environment_variables={"A": "1"}, logging_level="debug")
    assert WorkerSpec.from_dict(spec.to_dict()) == spec
    assert WorkerSpec.from_dict(dict(spec.to_dict(), unknown=1)) == spec
    outcome = MiniBatchOutcome(["a", "b"], file_errors={"b": "File type '.x' is not supported"})
    assert outcome.failed == 1
    assert outcome.messages() == ["Error processing input file 'b': File type '.x' is not "
                                  "supported"]
    assert MiniBatchOutcome(["a", "b"], error="run() failed: ValueError: no").failed == 2


def test_the_client_imports_nothing_heavy():
    """It runs inside Dask workers too: no mlflow, pandas, numpy or pyarrow at import."""
    done = subprocess.run([sys.executable, "-c", "import sys, mlflow_deploy.batch.worker, "
                           "mlflow_deploy.batch.output; print(sorted(m for m in sys.modules if "
                           "m.split('.')[0] in ('mlflow', 'pandas', 'numpy', 'pyarrow')))"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_model_envs_get_the_batch_readers():
    """pyarrow (CSV and Parquet) and Pillow (images) go into every model env, as Azure's MLflow
    batch environment has them: a model that does not list them still reads every file type."""
    from mlflow_deploy.envs.wheel import project_wheel

    names = {r.split(";")[0].split(">")[0].split("=")[0].strip().lower()
             for r in project_wheel().requires}
    assert {"pyarrow", "pillow", "orjson"} <= names


def test_csv_and_parquet_files_score_and_bad_files_fail_alone(tmp_path, model_python,
                                                             example_model_dirs, workers):
    """One worker, two mini-batches (the model loads once): typed CSV and Parquet scored, a
    corrupt file and an unsupported one failed with one line each, Azure's lines written."""
    good = pd.DataFrame(HEART_ROWS, columns=HEART)
    good.to_csv(tmp_path / "heart-0.csv", index=False)
    good.iloc[:2].to_parquet(tmp_path / "heart-1.parquet", index=False)
    (tmp_path / "torn.parquet").write_bytes(b"PAR1 secret-value")
    (tmp_path / "notes.xml").write_text("<secret-value/>")
    log = tmp_path / "worker.log"
    worker = workers(WorkerSpec(python=model_python, model_dir=example_model_dirs["heart"]),
                     str(log))
    files = [str(tmp_path / n) for n in ("heart-0.csv", "torn.parquet", "heart-1.parquet",
                                         "notes.xml")]
    first = worker.run(files, timeout=60)
    pid = worker.pid
    second = worker.run(files[:1], timeout=60)
    assert worker.pid == pid  # the same process, the model loaded once

    assert first.error is None and first.rows == 5 and first.failed == 2
    assert first.file_errors == {
        files[1]: "the file could not be read as Parquet: not a valid file of its type "
                  "(ArrowInvalid)",
        files[3]: "File type '.xml' is not supported"}
    assert "secret" not in " ".join(first.messages())
    written = azure_read_back(first.data)
    assert written["file"].tolist() == ["heart-0.csv"] * 3 + ["heart-1.parquet"] * 2
    assert written["prediction"].tolist()[3:] == written["prediction"].tolist()[:2]
    assert second.rows == 3 and second.data.splitlines() == first.data.splitlines()[:3]
    # the outcome carries the problems: the job logs them, the worker's stderr does not too
    assert "File type '.xml' is not supported" not in log.read_text()


def test_the_worker_writes_its_rows_to_the_part_where_it_sees_the_folder(
        tmp_path, model_python, example_model_dirs, workers):
    """The rows go to the job's part file from the worker itself, not through the pipe; where the
    part's folder is not there (a Dask worker on another machine) they come back as data, and a
    mini-batch without rows writes no part."""
    pd.DataFrame(HEART_ROWS, columns=HEART).to_csv(tmp_path / "heart.csv", index=False)
    (tmp_path / "notes.xml").write_text("<x/>")
    worker = workers(WorkerSpec(python=model_python, model_dir=example_model_dirs["heart"]))
    files = [str(tmp_path / "heart.csv")]
    returned = worker.run(files, timeout=60)
    parts = tmp_path / "parts"
    parts.mkdir()
    written = worker.run(files, timeout=60, part=str(parts / "00000.part"))
    assert written.written and written.data == b"" and written.rows == 3
    assert (parts / "00000.part").read_bytes() == returned.data
    assert sorted(p.name for p in parts.iterdir()) == ["00000.part"]  # no temporary file left

    elsewhere = worker.run(files, timeout=60, part=str(tmp_path / "absent" / "00001.part"))
    assert not elsewhere.written and elsewhere.data == returned.data
    assert not (tmp_path / "absent").exists()
    empty = worker.run([str(tmp_path / "notes.xml")], timeout=60,
                       part=str(parts / "00002.part"))
    assert not empty.written and empty.failed == 1 and not (parts / "00002.part").exists()


def test_parquet_output_of_a_dataframe_model(tmp_path, model_python, example_model_dirs,
                                             workers):
    import pyarrow.parquet as pq

    pd.DataFrame({"count": [2, 3], "price": [1.5, 2.0], "label": ["007", "ink"]}).to_csv(
        tmp_path / "lines.csv", index=False)
    worker = workers(WorkerSpec(python=model_python, model_dir=example_model_dirs["mixed-params"],
                                output_format="parquet"))
    outcome = worker.run([str(tmp_path / "lines.csv")], timeout=60)
    assert outcome.rows == 2 and outcome.failed == 0
    assert pq.read_table(io.BytesIO(outcome.data)).to_pydict() == {
        "file": ["lines.csv"] * 2, "row": [0, 1], "total": [3.0, 6.0], "label": ["007", "ink"]}


def test_an_image_folder_through_a_tensor_model(model_python, image_model_dir, digits_images,
                                                workers):
    files = sorted(str(p) for p in digits_images.glob("*.png"))
    worker = workers(WorkerSpec(python=model_python, model_dir=image_model_dir,
                                output_format="csv"))
    outcome = worker.run(files, timeout=60)
    assert outcome.rows == len(files) and outcome.failed == 0
    scored = pd.read_csv(io.BytesIO(outcome.data))
    assert scored["file"].tolist() == [os.path.basename(f) for f in files]
    assert (scored["prediction"] == scored["file"].map(digits.label_of)).mean() >= 0.9


ECHO_SCRIPT = """
    import os
    import sys

    def init():
        print("init: hello on stdout")  # must not reach the protocol
        sys.stdout.write("\\x00" * 64)
        os.write(1, b"written straight to fd 1")

    def run(mini_batch):
        print("run:", len(mini_batch), "files")
        return [os.path.basename(p) + " " + os.environ["LABEL"] for p in mini_batch]

    def shutdown():
        open(os.environ["DONE_FILE"], "w").write("shut down")
"""


def test_a_user_script_prints_into_the_log_not_the_protocol(tmp_path, model_python, workers):
    code = script(tmp_path, ECHO_SCRIPT)
    done = tmp_path / "done"
    log = tmp_path / "worker.log"
    worker = workers(WorkerSpec(python=model_python, code_dir=code, scoring_script="driver.py",
                                environment_variables={"LABEL": "seen",
                                                       "DONE_FILE": str(done)}), str(log))
    outcome = worker.run(["/in/a.png", "/in/b.png"], timeout=30)
    assert outcome.data == b"a.png seen\nb.png seen\n" and outcome.rows == 2
    worker.close()
    assert done.read_text() == "shut down"  # close() ends the input: shutdown() ran
    text = log.read_text()
    assert "init: hello on stdout" in text and "written straight to fd 1" in text
    assert "run: 2 files" in text


HANGING_SCRIPT = """
    import os
    import subprocess
    import sys
    import time

    def run(mini_batch):
        if any("hang" in p for p in mini_batch):
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            open(os.environ["MARK"], "w").write(str(child.pid))
            time.sleep(600)
        return mini_batch
"""


def test_a_hung_run_is_killed_at_its_timeout_and_the_next_run_starts_afresh(tmp_path,
                                                                            model_python,
                                                                            workers):
    mark = tmp_path / "child.pid"
    code = script(tmp_path, HANGING_SCRIPT)
    worker = workers(WorkerSpec(python=model_python, code_dir=code, scoring_script="driver.py",
                                environment_variables={"MARK": str(mark)}))
    assert worker.run(["warm"], timeout=30).rows == 1  # started: the timeout counts run() only
    pid = worker.pid
    started = time.monotonic()
    with pytest.raises(WorkerTimedOut) as caught:
        worker.run(["hang"], timeout=2)
    assert 2 <= time.monotonic() - started < 10
    assert caught.value.message == ("the mini-batch did not finish within its timeout of 2 s; "
                                    "the worker process was killed")
    child = int(mark.read_text())
    wait_for(lambda: not processes.is_running(child))  # its whole process group went
    assert not processes.is_running(pid) and worker.pid is None
    assert worker.run(["again"], timeout=30).data == b"again\n"
    assert worker.pid != pid


KILLABLE_SCRIPT = """
    import os
    import time

    def run(mini_batch):
        open(os.environ["MARK"], "w").write("running")
        time.sleep(600)
"""


def test_a_worker_killed_mid_batch_is_reported_as_died(tmp_path, model_python, workers):
    mark = tmp_path / "running"
    worker = workers(WorkerSpec(python=model_python, code_dir=script(tmp_path, KILLABLE_SCRIPT),
                                scoring_script="driver.py",
                                environment_variables={"MARK": str(mark)}))
    raised = []

    def run():
        try:
            worker.run(["a.png"], timeout=120)
        except Exception as exc:  # noqa: BLE001 - the test looks at what it was
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(mark.exists)
    os.kill(worker.pid, signal.SIGKILL)
    thread.join(60)
    assert len(raised) == 1 and isinstance(raised[0], WorkerDied)
    assert raised[0].message == ("the batch worker process ended while scoring a mini-batch "
                                 "(killed by SIGKILL)")
    killed = raised[0]
    mark.unlink()
    with pytest.raises(WorkerTimedOut):  # a fresh process takes the next try
        worker.run(["b.png"], timeout=1)
    assert mark.exists() and killed.__class__ is WorkerDied


def test_a_failing_init_or_model_is_a_start_failure(tmp_path, model_python, workers):
    code = script(tmp_path, """
        def init():
            raise RuntimeError("no weights under AZUREML_MODEL_DIR")

        def run(mini_batch):
            return mini_batch
    """)
    worker = workers(WorkerSpec(python=model_python, code_dir=code, scoring_script="driver.py"))
    with pytest.raises(WorkerStartFailed) as caught:
        worker.run(["a"], timeout=30)
    assert caught.value.message == ("the scoring script's init() failed: RuntimeError: no "
                                    "weights under AZUREML_MODEL_DIR")
    assert "in init" in caught.value.traceback and worker.pid is None
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(WorkerStartFailed, match="^the MLflow model could not be loaded: "):
        workers(WorkerSpec(python=model_python, model_dir=str(broken))).run(["a.csv"], 30)
    with pytest.raises(WorkerStartFailed, match="^the batch worker could not be started"):
        workers(WorkerSpec(python=str(tmp_path / "no-python"), model_dir=str(broken))).run(
            ["a.csv"], 30)
