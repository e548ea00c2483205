"""The batch worker: runs one mini-batch of input files through a batch driver and returns the
rows Azure's `append_row` output action writes to predictions.csv.

Two drivers, as Azure ML batch deployments have them:
- `BatchDriver`: the user's scoring script (code_configuration): `init()` once, then
  `run(mini_batch)` with a list of file paths, returning a pandas DataFrame or a list.
- `MlflowBatchDriver`: no script, an MLflow model scored file by file (CSV, Parquet, JSON) through
  the same parse -> enforce -> predict path as the online server (scorer.ModelScorer).

The Azure behaviour matched, and where it is written down:
- run()'s contract: "Author scoring scripts for batch deployments" (how-to-batch-scoring-script):
  a DataFrame or an array/list; each returned element is one successful input; a DataFrame's
  column names are not written. ParallelRunStep's ScoreWrapper.run: a tuple counts as a list,
  any other type is an error; init() runs once per process, before the first run().
- append_row's file: one line per returned element, a DataFrame's values separated by single
  spaces, no header, no index (Azure's MNIST sample reads it with `sep=" ", header=None`).
- the MLflow driver's rows: "Deploy MLflow models in batch deployments" (how-to-mlflow-batch):
  one row per input row, columns row, prediction ("as-is") and file name, read back with
  `pd.read_csv(path, names=["row", "prediction", "file"])`; supported files .csv, .parquet,
  .pqt; errors read "Error processing input file: '<path>'...".
- AZUREML_MODEL_DIR holds the registered file or folder under its own name (seed 004; the MNIST
  driver globs "$AZUREML_MODEL_DIR/*/*.pt"): the control plane lays it out
  (mlflow_deploy.model.place_model), as for online scripts; scoring/script.py sets the
  environment and imports the script for both.

Nothing here raises for a failing mini-batch: the result carries a one-line message per problem,
safe to show, and the script's traceback for the job log. mlflow is imported only by the MLflow
driver (pipeline reaches it through the loaded model): a scoring script's environment need not
have it.
"""
import csv
import io
import json
import math
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from . import payload
from .errors import BadRequest, ScoringError, StartupError, one_line
from .options import DEFAULTS, ScoringOptions
from .scorer import ModelScorer
from .script import azure_environment, import_script

Rows = Union[List[Any], pd.DataFrame]
# what the MLflow driver reads: Azure's .csv/.parquet/.pqt, and JSON (a request body or records)
TABULAR = {".csv": "CSV", ".parquet": "Parquet", ".pqt": "Parquet", ".json": "JSON",
           ".jsonl": "JSON Lines"}


@dataclass
class MiniBatchResult:
    """What one mini-batch produced, for the job to write (append_row) and count (error_threshold).

    `error` set: the mini-batch failed as a whole (run() raised or returned the wrong type); Azure
    retries such a mini-batch and then counts all its files as failed. `file_errors`: files the
    MLflow driver could not score, the others still scored. `missing`: run() returned fewer rows
    than it was given files; each returned row marks one input as done, so the rest count as
    failed.
    """

    files: List[str]
    rows: Rows = field(default_factory=list)
    error: Optional[str] = None
    file_errors: Dict[str, str] = field(default_factory=dict)
    missing: int = 0
    traceback: Optional[str] = None  # the script's or model's traceback: the job log only

    @property
    def failed(self) -> int:
        """Input files that count against error_threshold."""
        if self.error is not None:
            return len(self.files)
        return min(len(self.files), len(self.file_errors) + self.missing)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def messages(self) -> List[str]:
        """One line per problem, for the job's log and summary."""
        lines = [] if self.error is None else [self.error]
        lines += ["Error processing input file '{}': {}".format(path, message)
                  for path, message in self.file_errors.items()]
        if self.missing:
            lines.append("run() returned {} row(s) for {} input file(s): {} file(s) count as "
                         "failed".format(count_rows(self.rows), len(self.files), self.missing))
        return lines


# ---- a user scoring script -------------------------------------------------------------------

class BatchDriver:
    """A batch scoring script: imported once, init() called once, then run() per mini-batch."""

    def __init__(self, module: Any, script: str, undo: Callable[[], None]):
        self.module = module
        self.script = script
        self._undo = undo

    @classmethod
    def load(cls, code_dir: str, entry_script: str, azureml_model_dir: Optional[str], *,
             output_dir: Optional[str] = None,
             environment_variables: Optional[Mapping[str, str]] = None) -> "BatchDriver":
        """Import `code_dir/entry_script` in Azure's environment and call its init() once.

        Raises StartupError (one line, traceback kept) and leaves the environment as it found it.
        """
        code_dir = os.path.abspath(code_dir)
        path = os.path.join(code_dir, entry_script)
        if not os.path.isfile(path):
            raise StartupError("the scoring script is not in the code folder")
        extra = dict(environment_variables or {})
        if output_dir is not None:  # batch scripts that write their own files look here
            extra["AZUREML_BI_OUTPUT_PATH"] = os.path.abspath(output_dir)
        undo = azure_environment(code_dir, path, azureml_model_dir, extra)
        module = None
        try:
            # under its own name, as ParallelRunStep's ScoreModule imports it
            module = import_script(path, os.path.splitext(os.path.basename(path))[0])
            if not callable(getattr(module, "run", None)):
                raise StartupError("the scoring script has no run(mini_batch) function")
            init = getattr(module, "init", None)  # optional, as in ParallelRunStep
            if callable(init):
                try:
                    init()
                except (Exception, SystemExit) as exc:
                    raise StartupError("the scoring script's init() failed: " + one_line(exc),
                                      traceback.format_exc()) from None
        except BaseException:
            undo()
            _forget(module)
            raise
        return cls(module, entry_script, undo)

    def run_mini_batch(self, files: Sequence[str]) -> MiniBatchResult:
        """run(mini_batch) on these files; its failures are reported in the result, not raised."""
        files = [str(f) for f in files]
        if not files:
            return MiniBatchResult(files)
        try:
            output = self.module.run(list(files))  # a copy: the script may consume its list
        except (Exception, SystemExit) as exc:
            return MiniBatchResult(files, error="run() failed: " + one_line(exc),
                                   traceback=traceback.format_exc())
        rows = as_rows(output)
        if rows is None:
            return MiniBatchResult(files, error=(
                "run() returned {}; it must return a pandas DataFrame or a list, one element "
                "per input file or row".format(_type_words(output))))
        return MiniBatchResult(files, rows, missing=max(0, len(files) - count_rows(rows)))

    def close(self) -> None:
        """Call the script's optional shutdown() (ParallelRunStep does) and undo its environment."""
        try:
            shutdown = getattr(self.module, "shutdown", None)
            if callable(shutdown):
                shutdown()
        finally:
            self._undo()
            _forget(self.module)

    def __enter__(self) -> "BatchDriver":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _forget(module: Any) -> None:
    """Unregister the script's module, unless another import has taken its name since."""
    if module is not None and sys.modules.get(module.__name__) is module:
        del sys.modules[module.__name__]


def as_rows(output: Any) -> Optional[Rows]:
    """run()'s return value as rows, or None for a type Azure does not accept.

    A DataFrame or list as is, a tuple as a list (ScoreWrapper.run), a numpy array as the list of
    its first axis (the docs say "array/list").
    """
    if isinstance(output, (pd.DataFrame, list)):
        return output
    if isinstance(output, tuple):
        return list(output)
    if isinstance(output, np.ndarray) and output.ndim >= 1:
        return list(output)
    return None


def count_rows(rows: Rows) -> int:
    return len(rows.index) if isinstance(rows, pd.DataFrame) else len(rows)


def _type_words(value: Any) -> str:
    if value is None:
        return "None"
    return "a value of type '{}'".format(type(value).__name__)


# ---- predictions.csv ----------------------------------------------------------------------

def render_rows(rows: Rows) -> str:
    """The text append_row adds to the output file for one mini-batch.

    A DataFrame: one line per row, values separated by single spaces, no header and no index. A
    list: one line per element, the element's str() (a numpy array as its list of values, never
    numpy's wrapped and abridged print form).
    """
    if isinstance(rows, pd.DataFrame):
        if not len(rows.index):
            return ""
        return rows.to_csv(sep=" ", header=False, index=False, lineterminator="\n")
    return "".join(_element_text(element) + "\n" for element in rows)


def _element_text(element: Any) -> str:
    if isinstance(element, str):
        return element
    if isinstance(element, np.ndarray):
        return str(element.tolist())
    if isinstance(element, np.generic):
        return str(element.item())
    return str(element)


def write_predictions(rows: Rows, path: str) -> int:
    """Append one mini-batch's rows to the output file (predictions.csv); returns the rows added.

    Appends, as append_row merges every mini-batch into one file: that the output did not exist
    before the job started is the job's check (Azure fails such a job before any work).
    """
    text = render_rows(rows)
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(text)
    return count_rows(rows)


# ---- an MLflow model without a script ---------------------------------------------------------

class MlflowBatchDriver:
    """Azure's generated driver for MLflow models: each file read, enforced against the signature
    and predicted on its own, so one bad file fails alone. Rows are `row,prediction,file` lines."""

    def __init__(self, scorer: ModelScorer):
        self.scorer = scorer

    @classmethod
    def load(cls, model_dir: str, *,
             options: ScoringOptions = DEFAULTS) -> "MlflowBatchDriver":
        try:  # imports mlflow: only this driver needs it
            return cls(ModelScorer.load(model_dir, options, will_fork=False))
        except Exception as exc:  # noqa: BLE001 - mlflow and the flavor may raise anything
            raise StartupError("the MLflow model could not be loaded: " + one_line(exc),
                               traceback.format_exc()) from None

    def run_mini_batch(self, files: Sequence[str]) -> MiniBatchResult:
        files = [str(f) for f in files]
        result = MiniBatchResult(files)
        tracebacks = []
        for path in files:
            try:
                result.rows.extend(self.score_file(path))
            except ScoringError as exc:
                result.file_errors[path] = exc.message
                if exc.traceback:  # the model's own, when the model failed
                    tracebacks.append("{}:\n{}".format(path, exc.traceback))
            except Exception as exc:  # noqa: BLE001 - a reader or flavor we did not foresee
                result.file_errors[path] = ("an unexpected {} while scoring the file; the job "
                                            "log has the traceback".format(type(exc).__name__))
                tracebacks.append("{}:\n{}".format(path, traceback.format_exc()))
        result.traceback = "\n".join(tracebacks) or None
        return result

    def score_file(self, path: str) -> List[str]:
        """One file's rows: `row,prediction,file` per input row. Raises ScoringError."""
        name = os.path.basename(path)
        parsed = read_tabular(path)
        predictions, enforced = self.scorer.predict_parsed(parsed, request_id=name)
        values = per_row(predictions)
        if len(values) != enforced.rows:
            raise BatchFileError("the model returned {} prediction(s) for {} input row(s); "
                                 "batch scoring needs one per row".format(len(values),
                                                                          enforced.rows))
        return [csv_line([i, _cell(value), name]) for i, value in enumerate(values)]

    def close(self) -> None:
        """Nothing to undo: the model stays loaded until the process ends."""

    def __enter__(self) -> "MlflowBatchDriver":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class BatchFileError(BadRequest):
    """An input file the MLflow driver cannot read or score."""


def read_tabular(path: str) -> payload.ParsedInput:
    """An input file as the online server's ParsedInput: CSV and Parquet as a DataFrame (Azure's
    supported types); JSON as a request body or its input_data, JSON Lines as records."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in TABULAR:
        raise BatchFileError(
            "file type '{}' is not supported: MLflow batch scoring reads {}; use a scoring "
            "script for other files".format(extension.lstrip(".") or "(none)",
                                            ", ".join(TABULAR)))
    try:
        if extension == ".csv":
            return payload.ParsedInput(pd.read_csv(path), "frame")
        if extension in (".parquet", ".pqt"):
            return payload.ParsedInput(pd.read_parquet(path), "frame")
        with open(path, "rb") as f:
            raw = f.read()
    except ImportError:
        raise BatchFileError("reading Parquet needs pyarrow or fastparquet in the model's "
                             "environment") from None
    except pd.errors.EmptyDataError:
        raise BatchFileError("the file is empty") from None
    except pd.errors.ParserError as exc:  # the tokenizer's text gives positions, not values
        raise BatchFileError("the file could not be parsed as CSV: " + one_line(exc)) from None
    except (OSError, ValueError) as exc:
        raise BatchFileError("the file could not be read as {}: {}".format(
            TABULAR[extension], type(exc).__name__)) from None
    return _parse_json(raw, extension)


def _parse_json(raw: bytes, extension: str) -> payload.ParsedInput:
    try:
        if extension == ".jsonl":
            records = [payload.loads(line) for line in raw.splitlines() if line.strip()]
            if not all(isinstance(r, dict) for r in records):
                raise BatchFileError("each line of a JSON Lines file must be a JSON object")
            return payload.ParsedInput(records, "records")
        data = payload.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not valid UTF-8 JSON"
        raise BatchFileError("the file is not valid JSON: " + reason) from None
    if isinstance(data, dict) and "input_data" in data:  # an Azure request body, params included
        return payload.from_azure_body(data, raw)
    return payload.ParsedInput(data, payload.form_of(data))


def per_row(predictions: Any) -> List[Any]:
    """The model's output as one value per input row ("as-is": a DataFrame row as a dict, unless
    it has a single column)."""
    if isinstance(predictions, pd.DataFrame):
        if len(predictions.columns) == 1:
            return predictions.iloc[:, 0].tolist()
        return predictions.to_dict(orient="records")
    if isinstance(predictions, pd.Series):
        return predictions.tolist()
    if isinstance(predictions, np.ndarray):
        return [predictions.item()] if predictions.ndim == 0 else list(predictions)
    if isinstance(predictions, (list, tuple)):
        return list(predictions)
    if isinstance(predictions, dict):  # named outputs: one dict per row when the lengths agree
        columns = {str(k): list(v) if isinstance(v, (list, tuple, np.ndarray, pd.Series)) else [v]
                   for k, v in predictions.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise BatchFileError("the model returned named outputs of different lengths")
        return [{k: v[i] for k, v in columns.items()} for i in range(lengths.pop())]
    return [predictions]


def _cell(value: Any) -> str:
    """A prediction as a CSV cell: text as is, numbers plainly, anything nested as JSON."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value) if isinstance(value, bool) else repr(value)
    return payload.dumps(value).decode("utf-8")


def csv_line(cells: Sequence[Any]) -> str:
    """One comma-separated line, quoted where a cell needs it (a JSON prediction has commas)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(cells)
    return out.getvalue()
