"""The batch drivers in this process on real scripts, real models and real files: the digits PNG
example through its batch_driver.py, small scripts for each way a script fails, MLflow models
scoring CSV, Parquet and image files without a script, and each output format's bytes. The
worker process around them is tests/batch/test_worker.py's."""
import ast
import io
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
from tests.batch.fixtures import image_model_dir  # noqa: F401
from mlflow_deploy.scoring.errors import StartupError
from mlflow_deploy.scoring import batch
from mlflow_deploy.scoring.batch import BatchDriver, MlflowBatchDriver, render, render_rows

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
        with open(output, "ab") as f:  # as the job concatenates the mini-batches' parts
            f.write(render(result, "azure"))
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
    output.write_bytes(render(result, "azure"))
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

def azure_read_back(data: bytes):
    """Azure's own way to read predictions.csv (how-to-mlflow-batch, "Analyzing the outputs")."""
    return pd.DataFrame(ast.literal_eval(data.decode("utf-8").replace("\n", ",")),
                        columns=["file", "prediction"])


def test_mlflow_files_are_scored_and_a_bad_file_is_reported_precisely(tmp_path,
                                                                      example_model_dirs):
    """Azure's heart-classifier MLflow batch deployment: CSV and Parquet files, no script."""
    import mlflow.pyfunc

    good = pd.DataFrame(HEART_ROWS, columns=HEART)
    good.to_csv(tmp_path / "heart-0.csv", index=False)
    good.iloc[:2].to_parquet(tmp_path / "heart-1.parquet", index=False)
    good.iloc[:1].to_parquet(tmp_path / "heart-2.pqt", index=False)
    good.drop(columns=["chol"]).to_csv(tmp_path / "no-chol.csv", index=False)
    good.assign(age=["sixty", "41", "57"]).to_csv(tmp_path / "text-age.csv", index=False)
    (tmp_path / "notes.txt").write_text("not data\n")
    (tmp_path / "body.json").write_text(json.dumps({"input_data": HEART_ROWS}))
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "torn.parquet").write_bytes(b"PAR1 secret-value")
    names = ("heart-0.csv", "no-chol.csv", "heart-1.parquet", "text-age.csv", "notes.txt",
             "empty.csv", "body.json", "heart-2.pqt", "torn.parquet")
    files = [str(tmp_path / name) for name in names]
    driver = MlflowBatchDriver.load(example_model_dirs["heart"])
    result = driver.run_mini_batch(files)

    assert result.error is None and result.failed == 6 and result.count == 6
    assert result.file_errors == {
        files[1]: "missing required column 'chol'",
        files[3]: "column 'age' expects long values, got text that is not a number",
        files[4]: "File type '.txt' is not supported",
        files[5]: "the file is empty",
        files[6]: "File type '.json' is not supported",  # Azure's no-code batch reads no JSON
        files[8]: "the file could not be read as Parquet: not a valid file of its type "
                  "(ArrowInvalid)",
    }
    assert "sixty" not in " ".join(result.messages()) and "secret" not in str(result.messages())
    assert result.messages()[0] == "Error processing input file '{}': missing required column " \
                                   "'chol'".format(files[1])
    # the good files' rows: the model's own predictions, as Azure's docs read them back
    expected = mlflow.pyfunc.load_model(example_model_dirs["heart"]).predict(good)
    data = render(result, "azure")
    assert data.decode().splitlines()[0] == "['heart-0.csv', '{}']".format(expected[0])
    written = azure_read_back(data)
    assert written["prediction"].tolist() == [str(p) for p in
                                              list(expected) + list(expected[:2]) + [expected[0]]]
    assert written["file"].tolist() == (["heart-0.csv"] * 3 + ["heart-1.parquet"] * 2
                                        + ["heart-2.pqt"])


def test_the_signature_types_are_applied_while_reading(tmp_path, example_model_dirs,
                                                       monkeypatch):
    """A string column keeps "007" (pandas alone reads 7); the same with pandas' reader when
    the env has no pyarrow. A DataFrame prediction is Azure's space-separated line with the file
    name last."""
    (tmp_path / "lines.csv").write_text("count,price,label\n2,1.5,007\n3,2,ink pot\n")
    driver = MlflowBatchDriver.load(example_model_dirs["mixed-params"])
    with_arrow = driver.run_mini_batch([str(tmp_path / "lines.csv")])
    monkeypatch.setattr(batch, "_pyarrow", lambda: None)
    with_pandas = driver.run_mini_batch([str(tmp_path / "lines.csv")])
    for result in (with_arrow, with_pandas):
        assert result.ok, result.messages()
        assert render(result, "azure") == b'3.0 007 lines.csv\n6.0 "ink pot" lines.csv\n'
    assert with_pandas.scored[0].predictions["label"].tolist() == ["007", "ink pot"]


def test_an_image_folder_through_a_tensor_model(tmp_path, digits_images, image_model_dir):
    """PNGs as uint8 arrays reshaped to the model's tensor (-1, 32, 32), one predict per file."""
    files = pngs(digits_images)[:10] + [str(tmp_path / "torn.png"), str(tmp_path / "small.png")]
    (tmp_path / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n secret-value")
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "small.png")
    result = MlflowBatchDriver.load(image_model_dir).run_mini_batch(files)
    assert result.file_errors == {
        files[10]: "the file could not be read as an image (UnidentifiedImageError)",
        files[11]: "the image's pixels have shape (8, 8), which does not fit the model's tensor "
                   "(-1, 32, 32) (-1: any size)"}
    written = azure_read_back(render(result, "azure"))
    assert written["file"].tolist() == [os.path.basename(f) for f in files[:10]]
    correct = [int(p) == digits.label_of(f) for f, p in zip(written["file"],
                                                           written["prediction"])]
    assert sum(correct) >= 9


def test_an_image_without_a_signature_is_uint8_with_a_batch_axis(digits_images):
    parsed = batch.read_file(pngs(digits_images)[0], signature=None)
    assert parsed.form == "tensor" and parsed.data.dtype == np.uint8
    assert parsed.data.shape == (1, 32, 32)


# a CSV always has a header: sklearn warns that the array-fitted model gets feature names
@pytest.mark.filterwarnings("ignore:X has feature names:UserWarning")
def test_a_model_failure_on_one_file_keeps_its_traceback(tmp_path, example_model_dirs):
    """No signature: the model itself rejects a file of the wrong width; the others score."""
    pd.DataFrame([[0.1] * 10]).to_csv(tmp_path / "ten.csv", index=False)
    pd.DataFrame([[0.1, 0.2]]).to_csv(tmp_path / "two.csv", index=False)
    driver = MlflowBatchDriver.load(example_model_dirs["no-signature"])
    result = driver.run_mini_batch([str(tmp_path / "ten.csv"), str(tmp_path / "two.csv")])
    assert [s.name for s in result.scored] == ["ten.csv"] and result.count == 1
    assert list(result.file_errors) == [str(tmp_path / "two.csv")]
    assert result.file_errors[str(tmp_path / "two.csv")].startswith(
        "The model rejected the input: ValueError: ")
    assert "two.csv:\nTraceback" in result.traceback and "ValueError" in result.traceback


def test_a_model_that_does_not_load_is_a_driver_error(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(StartupError, match="^the MLflow model could not be loaded: "):
        MlflowBatchDriver.load(str(tmp_path))


# ---- output formats ------------------------------------------------------------------------

def scored(*files):
    result = batch.MiniBatchResult([name for name, _ in files])
    result.scored = [batch.FileRows(name, p, batch.prediction_rows(p)) for name, p in files]
    return result


ODD_FLOATS = [0.1, 1.0, -0.0, 1e-05, 2.5e-07, 0.0001, 123456789012345.0, 1e16, 1.5e+300,
              5e-324, float("nan"), float("inf"), float("-inf"), 1 / 3]


@pytest.mark.parametrize("values", [
    np.array(ODD_FLOATS),
    np.random.default_rng(0).standard_normal(2000) * 10.0 ** np.random.default_rng(1).integers(
        -8, 20, 2000),
    np.array([v for v in ODD_FLOATS if abs(v) < 1e38 or v != v], dtype=np.float32),
    np.array([0, -3, 2 ** 62], dtype=np.int64),
    np.array([True, False]),
    pd.Series(np.array([0.1, 1e-05, 2.5], dtype=np.float32)),  # Python floats when iterated
    pd.Series([1, 2], dtype=np.int32),
    pd.Series(["it's", "a\\b"]),
    [0.5, "x", None],
    np.array([[0.25, 0.75], [1.0, 0.0]]),  # rows print as numpy prints them
], ids=["odd-floats", "random-floats", "float32", "int64", "bool", "float32-series",
        "int-series", "text-series", "list", "2d"])
def test_azure_lines_are_str_of_each_prediction_as_azures_driver_writes(values):
    """`str([file, str(p)])` for each p of the model's output, made without a Python call per
    row for numbers and byte-identical to the per-row loop of Azure's driver."""
    azure = "".join(str(["it's.csv", str(p)]) + "\n" for p in values).encode()
    assert batch.azure_lines("it's.csv", values) == azure
    assert azure_read_back(azure)["file"].tolist() == ["it's.csv"] * len(values)


def test_azure_lines_of_dataframe_and_dict_predictions_end_with_the_file():
    frame = pd.DataFrame({"total": [1.5, 2.0], "label": ["a b", "c"]})
    assert render(scored(("x.csv", frame), ("y.csv", {"p": np.array([1, 2]), "q": ["u", "v"]})),
                  "azure") == b'1.5 "a b" x.csv\n2.0 c x.csv\n1 u y.csv\n2 v y.csv\n'


def test_csv_output_has_a_header_and_each_rows_file_and_position():
    result = scored(("a.csv", np.array([0.5, 1.25])), ("b.csv", np.array([2.0])))
    data = render(result, "csv")
    assert data == b'"file","row","prediction"\n"a.csv",0,0.5\n"a.csv",1,1.25\n"b.csv",0,2\n'
    frame = pd.read_csv(io.BytesIO(data))
    assert frame.to_dict("list") == {"file": ["a.csv", "a.csv", "b.csv"], "row": [0, 1, 0],
                                     "prediction": [0.5, 1.25, 2.0]}
    two_d = render(scored(("a.csv", np.array([[0.25, 0.75]]))), "csv")
    assert two_d == b'"file","row","prediction"\n"a.csv",0,"[0.25, 0.75]"\n'
    frames = render(scored(("a.csv", pd.DataFrame({"total": [1.5], "label": ["x"]}))), "csv")
    assert frames == b'"file","row","total","label"\n"a.csv",0,1.5,"x"\n'


def test_parquet_output_keeps_types_and_lists():
    import pyarrow.parquet as pq

    result = scored(("a.csv", np.array([0.5, 1.25])))
    table = pq.read_table(io.BytesIO(render(result, "parquet")))
    assert table.column_names == ["file", "row", "prediction"]
    assert table.to_pydict() == {"file": ["a.csv", "a.csv"], "row": [0, 1],
                                 "prediction": [0.5, 1.25]}
    lists = pq.read_table(io.BytesIO(render(scored(("b.png", np.array([[1, 2]]))), "parquet")))
    assert lists.to_pydict()["prediction"] == [[1, 2]]


def test_a_scripts_rows_in_each_format():
    rows = pd.DataFrame({"file": ["a.png"], "class": [3]})
    result = batch.MiniBatchResult(["a.png"], rows)
    assert render(result, "azure") == b"a.png 3\n"
    assert render(result, "csv") == b'"file","class"\n"a.png",3\n'
    listed = batch.MiniBatchResult(["a.png"], ["a.png 3"])
    assert render(listed, "csv") == b'"prediction"\n"a.png 3"\n'
    assert render(listed, "none") == b"" and render(batch.MiniBatchResult([]), "csv") == b""


@pytest.mark.parametrize("case", ["range-index", "offset-index", "named-index", "float32",
                                  "nulls", "no-metadata", "row-groups", "no-rows",
                                  "stored-index", "int-column", "named-columns"])
def test_parquet_files_read_as_pyarrows_own_to_pandas_gives_them(tmp_path, case):
    """Float tables are read a column at a time into one block; the frame is the one
    read_table().to_pandas() makes, values, dtypes, index and names alike, and every other
    file is read that way."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.DataFrame(np.random.default_rng(3).normal(size=(5000, 4)), columns=list("abcd"))
    path = tmp_path / "f.parquet"
    writes = {
        "range-index": lambda: frame.to_parquet(path),
        "offset-index": lambda: frame.set_axis(pd.RangeIndex(5, 5005), axis=0).to_parquet(path),
        "named-index": lambda: frame.rename_axis("rid").to_parquet(path),
        "float32": lambda: frame.astype("float32").to_parquet(path),
        "nulls": lambda: frame.mask(frame > 1.0).to_parquet(path),
        "no-metadata": lambda: pq.write_table(
            pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None), path),
        "row-groups": lambda: pq.write_table(pa.Table.from_pandas(frame), path,
                                             row_group_size=1500),
        "no-rows": lambda: frame.iloc[:0].to_parquet(path),
        "stored-index": lambda: frame.set_axis(pd.Index(np.arange(5000) * 2), axis=0)
        .to_parquet(path),
        "int-column": lambda: frame.assign(e=1).to_parquet(path),
        "named-columns": lambda: frame.rename_axis("features", axis=1).to_parquet(path),
    }
    writes[case]()
    streamed = case not in ("stored-index", "int-column", "named-columns")
    assert (batch._float_layout(pq.ParquetFile(path)) is not None) == streamed
    got = batch.read_table(str(path), None)
    pd.testing.assert_frame_equal(got, pq.read_table(path).to_pandas(), check_exact=True)


def _csv_cases(frame: pd.DataFrame) -> dict:
    """Each case's CSV text, from a frame of 4 double columns."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    plain = frame.to_csv(index=False)
    head, _, body = plain.partition("\n")
    lines = body.splitlines()
    quoted = io.BytesIO()
    pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), quoted)
    return {
        "plain": plain,
        "float32": plain,
        "nulls": frame.mask(frame > 1.0).to_csv(index=False, na_rep="")
        .replace("\n,", "\nNA,", 7),
        "crlf": plain.replace("\n", "\r\n"),
        "no-final-newline": plain.rstrip("\n"),
        "bom": "\ufeff" + plain,
        "arrow-quoted-header": quoted.getvalue().decode(),
        "rows-shorter-later": "\n".join([head] + lines[:100] + ["1.0,2.0,3.0,4.0"] * 4000) + "\n",
        "a-line-longer-than-a-piece": "\n".join([head, "1." + "0" * 600 + ",2,3,4"] + lines) + "\n",
        "blank-lines": "\n".join([head] + lines[:50] + ["", ""] + lines[50:]) + "\n",
        "quoted-values": "\n".join([head] + ['"1.5",2,3,4'] + lines) + "\n",
        "a-text-value": "\n".join([head] + ["1.5,2,abc,4"] + lines) + "\n",
        "a-column-not-in-the-signature": frame.assign(e=1.5).to_csv(index=False),
        "header-only": head + "\n",
    }


@pytest.mark.parametrize("case", ["plain", "float32", "nulls", "crlf", "no-final-newline", "bom",
                                  "arrow-quoted-header", "rows-shorter-later",
                                  "a-line-longer-than-a-piece", "blank-lines", "quoted-values",
                                  "a-text-value", "a-column-not-in-the-signature",
                                  "header-only"])
def test_csv_files_read_as_arrows_read_csv_gives_them(tmp_path, case):
    """CSV files of one float type are read a few lines at a time into one block; the frame is
    the one Arrow's read_csv and to_pandas make with the signature's types (without them when
    a value is not of its column's type), values, dtypes, index and names alike, and every
    other file is read that way."""
    import pyarrow.csv as pacsv

    from mlflow_deploy.scoring.schema import Column, Signature

    pa = batch._pyarrow()  # as the reader takes it (on Python 3.10: without its heap scans)
    frame = pd.DataFrame(np.random.default_rng(5).normal(size=(3000, 4)), columns=list("abcd"))
    path = tmp_path / "f.csv"
    path.write_bytes(_csv_cases(frame)[case].encode("utf-8"))
    kind = "float" if case == "float32" else "double"
    signature = Signature(columns=tuple(Column(name, kind) for name in "abcd"))
    types = {name: pa.float32() if kind == "float" else pa.float64() for name in "abcd"}
    streamed = case not in ("quoted-values", "a-text-value", "a-column-not-in-the-signature",
                            "header-only")
    piecewise = batch._float_csv(pa, str(path), types, piece=512)  # many pieces, and growth
    assert (piecewise is not None) == streamed
    expected = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types=types) if case != "a-text-value" else None).to_pandas()
    if streamed:
        pd.testing.assert_frame_equal(piecewise, expected, check_exact=True)
    got = batch.read_table(str(path), signature)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_reading_csv_files_never_scans_the_heap(tmp_path, monkeypatch):
    """On Python 3.10 (the old stack runs this file again) Arrow scans the whole heap with
    gc.get_referrers at every read_csv call, unless the reader turned that off: a batch of
    small files would then cost a heap scan each, more than their parse."""
    import gc

    from mlflow_deploy.scoring.schema import Column, Signature

    scans = []
    real = gc.get_referrers
    monkeypatch.setattr(gc, "get_referrers", lambda *objs: scans.append(1) or real(*objs))
    frame = pd.DataFrame(np.random.default_rng(3).normal(size=(50, 2)), columns=["a", "b"])
    path = tmp_path / "f.csv"
    frame.to_csv(path, index=False)
    signature = Signature(columns=(Column("a", "double"), Column("b", "double")))
    for typed in (signature, None):  # the piecewise reader, then the whole-file one
        got = batch.read_table(str(path), typed)
        np.testing.assert_allclose(got.to_numpy(), frame.to_numpy())
    assert scans == []
