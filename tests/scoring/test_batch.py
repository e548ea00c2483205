"""The batch worker on real scripts, real models and real files: the digits PNG example through its
batch_driver.py, small scripts for each way a script fails, and MLflow models scoring CSV,
Parquet and JSON files without a script."""
import json
import os
import pickle
import re
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from example_models.digits import build as digits
from mlflow_deploy.model import place_model
from mlflow_deploy.scoring.errors import StartupError
from mlflow_deploy.scoring.batch import (BatchDriver, MlflowBatchDriver,
                                         render_rows, write_predictions)

DIGITS_CODE = os.path.dirname(os.path.abspath(digits.__file__))
HEART = ["age", "sex", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak",
         "slope", "ca", "thal"]
HEART_ROWS = [[63, 1, 145, 233, 1, 2, 150, 0, 2.3, 3, 0, 2],
              [41, 0, 130, 204, 0, 2, 172, 0, 1.4, 1, 0, 1],
              [57, 1, 140, 192, 0, 0, 148, 0, 0.4, 2, 0, 3]]


def code_folder(tmp_path, source, name="batch_driver.py"):
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / name).write_text(textwrap.dedent(source))
    return str(code)


def pngs(folder):
    return sorted(str(p) for p in folder.glob("*.png"))


def mini_batches(files, size):
    return [files[i:i + size] for i in range(0, len(files), size)]


# a script whose run() returns what the test puts in RESULT (its file names by default)
ECHO = """
    import os

    NAMES = object()
    RESULT = NAMES

    def run(mini_batch):
        if RESULT is NAMES:
            return [os.path.basename(path) for path in mini_batch]
        return RESULT
"""


# ---- scoring scripts --------------------------------------------------------------------

def test_init_runs_once_in_azures_environment_and_close_undoes_it(tmp_path, digits_images,
                                                                 monkeypatch):
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    code = code_folder(tmp_path, """
        import os
        import helper

        CALLS = []
        SEEN = {}

        def init():
            CALLS.append("init")
            SEEN.update({k: os.environ.get(k) for k in (
                "AZUREML_MODEL_DIR", "AML_APP_ROOT", "AZUREML_BI_OUTPUT_PATH", "LABEL")})

        def run(mini_batch):
            CALLS.append(len(mini_batch))
            return [helper.name(path) for path in mini_batch]
    """)
    (tmp_path / "code" / "helper.py").write_text("import os\nname = os.path.basename\n")
    models = tmp_path / "models"
    models.mkdir()
    files = pngs(digits_images)
    driver = BatchDriver.load(code, "batch_driver.py", str(models), output_dir=str(tmp_path),
                              environment_variables={"LABEL": "digits"})
    with driver:
        results = [driver.run_mini_batch(batch) for batch in mini_batches(files, 10)]
        assert driver.module.CALLS == ["init", 10, 10, 10]
        assert driver.module.SEEN == {"AZUREML_MODEL_DIR": str(models), "AML_APP_ROOT": code,
                                      "AZUREML_BI_OUTPUT_PATH": str(tmp_path), "LABEL": "digits"}
    assert all(r.ok and r.failed == 0 and r.messages() == [] for r in results)
    assert sum((r.rows for r in results), []) == [os.path.basename(f) for f in files]
    assert "AZUREML_MODEL_DIR" not in os.environ and "LABEL" not in os.environ
    assert code not in sys.path and "batch_driver" not in sys.modules


def test_the_digits_driver_scores_a_folder_of_pngs_in_mini_batches(tmp_path, digits_model_dir,
                                                                   digits_images):
    """The seed's MNIST deployment, locally: mini_batch_size 10, append_row to predictions.csv."""
    model_dir = str(tmp_path / "azureml-models")
    place_model(digits_model_dir, model_dir)  # the control plane's layout: the folder by its name
    assert os.path.isfile(os.path.join(model_dir, "digits", "MLmodel"))
    output = str(tmp_path / "predictions.csv")
    with BatchDriver.load(DIGITS_CODE, "batch_driver.py", model_dir) as driver:
        results = [driver.run_mini_batch(batch)
                   for batch in mini_batches(pngs(digits_images), 10)]
    assert [r.messages() for r in results] == [[], [], []]
    for result in results:
        assert list(result.rows.columns) == ["file", "class", "probability"]
        write_predictions(result.rows, output)
    scored = pd.concat([r.rows for r in results], ignore_index=True)
    accuracy = (scored["class"] == scored["file"].map(digits.label_of)).mean()
    assert len(scored) == 30 and accuracy >= 0.9
    assert ((scored["probability"] > 0) & (scored["probability"] <= 1)).all()
    # what Azure's MNIST notebook does with the output: space-separated, no header, no index
    written = pd.read_csv(output, sep=" ", header=None, names=["file", "class", "probability"])
    pd.testing.assert_frame_equal(written, scored, check_dtype=False)


def test_a_model_file_layout_and_a_list_return(tmp_path, digits_model_dir, digits_images):
    """A model registered as one file sits in AZUREML_MODEL_DIR under its own name (seed 004)."""
    import mlflow.sklearn

    with open(tmp_path / "digits.pkl", "wb") as f:
        pickle.dump(mlflow.sklearn.load_model(digits_model_dir), f)
    model_dir = str(tmp_path / "azureml-models")
    place_model(str(tmp_path / "digits.pkl"), model_dir)
    assert sorted(os.listdir(model_dir)) == ["digits.pkl"]
    code = code_folder(tmp_path, """
        import os
        import pickle

        import numpy as np
        from PIL import Image

        def init():
            global model
            with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "digits.pkl"), "rb") as f:
                model = pickle.load(f)

        def run(mini_batch):
            results = []
            for path in mini_batch:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("L"), dtype=np.float64)
                x = pixels.reshape(8, 4, 8, 4).mean(axis=(1, 3)).reshape(1, -1) * 16 / 255
                results.append("{} {}".format(os.path.basename(path), model.predict(x)[0]))
            return results
    """)
    files = pngs(digits_images)[:5]
    with BatchDriver.load(code, "batch_driver.py", model_dir) as driver:
        result = driver.run_mini_batch(files)
    assert result.ok and isinstance(result.rows, list) and len(result.rows) == 5
    output = tmp_path / "predictions.csv"
    assert write_predictions(result.rows, str(output)) == 5
    lines = output.read_text().splitlines()
    assert [line.split(" ") for line in lines] == [
        [os.path.basename(f), str(digits.label_of(f))] for f in files]


def test_run_raising_is_reported_with_its_message_and_traceback(tmp_path, digits_images):
    code = code_folder(tmp_path, """
        def init():
            pass

        def run(mini_batch):
            if any(path.endswith("-7.png") for path in mini_batch):
                raise ValueError("cannot classify a seven\\nsecond line")
            return mini_batch
    """)
    files = pngs(digits_images)
    with BatchDriver.load(code, "batch_driver.py", None) as driver:
        failed = driver.run_mini_batch(files[5:10])  # 007-7.png is in it
        after = driver.run_mini_batch(files[:5])
    assert failed.error == "run() failed: ValueError: cannot classify a seven"
    assert failed.messages() == [failed.error]
    assert failed.failed == 5 and not failed.ok and failed.rows == []
    assert "batch_driver.py" in failed.traceback and 'raise ValueError("cannot' in failed.traceback
    assert after.ok and after.rows == files[:5]  # the driver keeps serving


def test_an_import_error_is_reported_and_leaves_nothing_set(tmp_path, monkeypatch):
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    code = code_folder(tmp_path, """
        import torchvision_is_not_installed_here

        def run(mini_batch):
            return mini_batch
    """)
    with pytest.raises(StartupError) as caught:
        BatchDriver.load(code, "batch_driver.py", str(tmp_path))
    assert caught.value.message == ("the scoring script could not be imported: "
                                    "ModuleNotFoundError: No module named "
                                    "'torchvision_is_not_installed_here'")
    assert "import torchvision_is_not_installed_here" in caught.value.traceback
    assert "AZUREML_MODEL_DIR" not in os.environ
    assert code not in sys.path and "batch_driver" not in sys.modules


def test_an_init_error_is_reported_with_its_traceback(tmp_path, monkeypatch):
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    code = code_folder(tmp_path, """
        import glob
        import os

        def init():
            found = glob.glob(os.path.join(os.environ["AZUREML_MODEL_DIR"], "*", "*.pt"))
            if not found:
                raise FileNotFoundError("no .pt file under AZUREML_MODEL_DIR")

        def run(mini_batch):
            return mini_batch
    """)
    with pytest.raises(StartupError) as caught:
        BatchDriver.load(code, "batch_driver.py", str(tmp_path))
    assert caught.value.message == ("the scoring script's init() failed: FileNotFoundError: "
                                    "no .pt file under AZUREML_MODEL_DIR")
    assert "in init" in caught.value.traceback
    assert "AZUREML_MODEL_DIR" not in os.environ and "batch_driver" not in sys.modules


@pytest.mark.parametrize("source, script, message", [
    ("def init():\n    pass\n", "batch_driver.py",
     "the scoring script has no run(mini_batch) function"),
    (ECHO, "score.py", "the scoring script is not in the code folder"),
])
def test_a_script_without_run_or_missing_is_reported(tmp_path, source, script, message):
    code = code_folder(tmp_path, source)
    with pytest.raises(StartupError, match="^{}$".format(re.escape(message))):
        BatchDriver.load(code, script, None)


@pytest.mark.parametrize("returned, words", [
    ({"secret-value": 1}, "a value of type 'dict'"),
    ("secret-value", "a value of type 'str'"),
    (pd.Series(["secret-value"] * 3), "a value of type 'Series'"),
    (None, "None"),
])
def test_a_wrong_return_type_is_reported_without_the_value(tmp_path, returned, words):
    with BatchDriver.load(code_folder(tmp_path, ECHO), "batch_driver.py", None) as driver:
        driver.module.RESULT = returned  # None: a run() that forgot to return
        result = driver.run_mini_batch(["a.png", "b.png", "c.png"])
    assert result.error == ("run() returned {}; it must return a pandas DataFrame or a list, one "
                            "element per input file or row".format(words))
    assert "secret" not in result.error
    assert result.failed == 3 and result.rows == []


@pytest.mark.parametrize("returned, rows, text", [
    (("a 0", "b 1"), ["a 0", "b 1"], "a 0\nb 1\n"),  # a tuple counts as a list
    (np.array([[0, 1], [2, 3]]), 2, "[0, 1]\n[2, 3]\n"),  # an array: one element per row
    (pd.DataFrame({"file": ["a b.png", "c.png"], "p": [0.5, 1.0]}), 2,
     '"a b.png" 0.5\nc.png 1.0\n'),  # space-separated, quoted where a value has a space
])
def test_accepted_return_types_and_how_they_are_written(tmp_path, returned, rows, text):
    with BatchDriver.load(code_folder(tmp_path, ECHO), "batch_driver.py", None) as driver:
        driver.module.RESULT = returned
        result = driver.run_mini_batch(["a.png", "c.png"])
    assert result.ok
    assert (result.rows == rows) if isinstance(rows, list) else len(result.rows) == rows
    assert render_rows(result.rows) == text


def test_fewer_rows_than_files_count_as_failed_files(tmp_path):
    """Each returned element marks one input as done (Azure); more rows than files is fine."""
    with BatchDriver.load(code_folder(tmp_path, ECHO), "batch_driver.py", None) as driver:
        driver.module.RESULT = ["only one"]
        short = driver.run_mini_batch(["a.csv", "b.csv", "c.csv"])
        driver.module.RESULT = ["row"] * 7  # tabular files: several rows each
        long = driver.run_mini_batch(["a.csv", "b.csv"])
    assert short.rows == ["only one"] and short.missing == 2 and short.failed == 2
    assert short.messages() == [
        "run() returned 1 row(s) for 3 input file(s): 2 file(s) count as failed"]
    assert long.ok and long.missing == 0


# ---- MLflow models without a script --------------------------------------------------------

def test_mlflow_files_are_scored_and_a_bad_file_is_reported_precisely(tmp_path,
                                                                      example_model_dirs):
    """Azure's heart-classifier MLflow batch deployment: CSV and Parquet files, no script."""
    import mlflow.pyfunc

    good = pd.DataFrame(HEART_ROWS, columns=HEART)
    good.to_csv(tmp_path / "heart-0.csv", index=False)
    good.iloc[:2].to_parquet(tmp_path / "heart-1.parquet", index=False)
    good.drop(columns=["chol"]).to_csv(tmp_path / "no-chol.csv", index=False)
    good.assign(age=["sixty", "41", "57"]).to_csv(tmp_path / "text-age.csv", index=False)
    (tmp_path / "notes.txt").write_text("not data\n")
    (tmp_path / "empty.csv").write_text("")
    files = [str(tmp_path / name) for name in ("heart-0.csv", "no-chol.csv", "heart-1.parquet",
                                               "text-age.csv", "notes.txt", "empty.csv")]
    driver = MlflowBatchDriver.load(example_model_dirs["heart"])
    result = driver.run_mini_batch(files)

    assert result.error is None and result.failed == 4
    assert result.file_errors == {
        files[1]: "missing required column 'chol'",
        files[3]: result.file_errors[files[3]],
        files[4]: "file type 'txt' is not supported: MLflow batch scoring reads .csv, .parquet, "
                  ".pqt, .json, .jsonl; use a scoring script for other files",
        files[5]: "the file is empty",
    }
    assert result.file_errors[files[3]].startswith("column 'age'")
    assert "sixty" not in " ".join(result.messages())
    assert result.messages()[0] == "Error processing input file '{}': missing required column " \
                                   "'chol'".format(files[1])
    # the good files' rows: the model's own predictions, as Azure's notebook reads them back
    expected = mlflow.pyfunc.load_model(example_model_dirs["heart"]).predict(good)
    output = tmp_path / "predictions.csv"
    assert write_predictions(result.rows, str(output)) == 5
    written = pd.read_csv(output, names=["row", "prediction", "file"])
    assert written["row"].tolist() == [0, 1, 2, 0, 1]
    assert written["prediction"].tolist() == list(expected) + list(expected[:2])
    assert written["file"].tolist() == ["heart-0.csv"] * 3 + ["heart-1.parquet"] * 2


def test_mlflow_json_files_take_params_and_multi_column_outputs(tmp_path, example_model_dirs):
    """A JSON file may be an Azure request body (params included) or JSON Lines records."""
    body = {"input_data": {"columns": ["count", "price", "label"],
                           "data": [[2, 9.99, "pen"], [5, 1.5, "ink, blue"]]},
            "params": {"scale": 2, "suffix": "!"}}
    (tmp_path / "body.json").write_text(json.dumps(body))
    (tmp_path / "rows.jsonl").write_text('{"count": 1, "price": 2.5, "label": "cap"}\n')
    driver = MlflowBatchDriver.load(example_model_dirs["mixed-params"])
    result = driver.run_mini_batch([str(tmp_path / "body.json"), str(tmp_path / "rows.jsonl")])
    assert result.ok, result.messages()
    write_predictions(result.rows, str(tmp_path / "predictions.csv"))
    written = pd.read_csv(tmp_path / "predictions.csv", names=["row", "prediction", "file"])
    assert [json.loads(p) for p in written["prediction"]] == [
        {"total": pytest.approx(39.96), "label": "pen!"},
        {"total": pytest.approx(15.0), "label": "ink, blue!"},
        {"total": pytest.approx(2.5), "label": "cap"}]
    assert written["file"].tolist() == ["body.json", "body.json", "rows.jsonl"]


# a CSV always has a header: sklearn warns that the array-fitted model gets feature names
@pytest.mark.filterwarnings("ignore:X has feature names:UserWarning")
def test_a_model_failure_on_one_file_keeps_its_traceback(tmp_path, example_model_dirs):
    """No signature: the model itself rejects a file of the wrong width; the others score."""
    pd.DataFrame([[0.1] * 10]).to_csv(tmp_path / "ten.csv", index=False)
    pd.DataFrame([[0.1, 0.2]]).to_csv(tmp_path / "two.csv", index=False)
    driver = MlflowBatchDriver.load(example_model_dirs["no-signature"])
    result = driver.run_mini_batch([str(tmp_path / "ten.csv"), str(tmp_path / "two.csv")])
    assert len(result.rows) == 1 and result.rows[0].endswith(",ten.csv")
    assert list(result.file_errors) == [str(tmp_path / "two.csv")]
    assert result.file_errors[str(tmp_path / "two.csv")].startswith(
        "The model rejected the input: ValueError: ")
    assert "two.csv:\nTraceback" in result.traceback and "ValueError" in result.traceback


def test_a_model_that_does_not_load_is_a_driver_error(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(StartupError, match="^the MLflow model could not be loaded: "):
        MlflowBatchDriver.load(str(tmp_path))
