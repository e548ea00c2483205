"""A user's batch scoring script for the job tests, run in the diabetes model's environment: one
row per input row, its "prediction" a stand-in computed with pandas alone (the row's sum), so
that a worker starts in well under a second (the no-code tests score the real model). What the
tests need to make happen is asked for by file names and environment variables (a job's
environment_variables):

- a file named hang-*: run() never returns (the try's timeout kills the worker);
- a file whose name has "slow" in it, with JOB_TEST_MARKER set: the first time, the marker file
  is created and run() waits for the test to kill the worker; the retry then scores it;
- JOB_TEST_DELAY: seconds to wait after each file (a job that lasts long enough to be killed or
  canceled in the middle);
- JOB_TEST_TAG: written into every row (the job's environment variables reached the worker);
- JOB_TEST_ECHO: names of environment variables, comma-separated; their values in the worker
  ("-" when unset), joined by "|", are written into every row's "echo" column (what else of
  the environment reached it).
"""
import os
import time

import pandas as pd


def init():
    assert os.path.isdir(os.environ["AZUREML_MODEL_DIR"])


def run(mini_batch):
    delay = float(os.environ.get("JOB_TEST_DELAY") or 0)
    marker = os.environ.get("JOB_TEST_MARKER")
    tag = os.environ.get("JOB_TEST_TAG", "-")
    names, predictions = [], []
    for path in mini_batch:
        name = os.path.basename(path)
        if name.startswith("hang"):
            time.sleep(3600)
        if "slow" in name and marker and not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(3600)
        frame = pd.read_csv(path)
        for value in frame.sum(axis=1):
            names.append(name)
            predictions.append(round(float(value), 6))
        time.sleep(delay)
    rows = pd.DataFrame({"file": names, "prediction": predictions, "tag": tag})
    if os.environ.get("JOB_TEST_ECHO"):
        rows["echo"] = "|".join(os.environ.get(name, "-")
                                for name in os.environ["JOB_TEST_ECHO"].split(","))
    return rows
