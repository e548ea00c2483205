"""Batch scoring inside the model's environment: one mini-batch of input files through a batch
driver, and its rows rendered in the job's output format.

Two drivers, as Azure ML batch deployments have them:
- `BatchDriver`: the user's scoring script (code_configuration): `init()` once, then
  `run(mini_batch)` with a list of file paths, returning a pandas DataFrame or a list.
- `MlflowBatchDriver`: no script, an MLflow model scored file by file through the same
  parse -> enforce -> predict path as the online server (scorer.ModelScorer.predict_parsed).

The Azure behaviour matched, and where it is written down:
- run()'s contract: "Author scoring scripts for batch deployments" (how-to-batch-scoring-script):
  a DataFrame or an array/list; each returned element is one successful input; a DataFrame's
  column names are not written. ParallelRunStep's ScoreWrapper.run: a tuple counts as a list,
  any other type is an error; init() runs once per process, before the first run().
- append_row's file: one line per returned element, a DataFrame's values separated by single
  spaces, no header, no index (Azure's MNIST sample reads it with `sep=" ", header=None`).
- the driver Azure generates for an MLflow model ("Use MLflow models in batch deployments",
  https://learn.microsoft.com/azure/machine-learning/how-to-mlflow-batch, its sections "Analyzing
  the outputs" and "Considerations when deploying to batch inference"; the driver itself is
  `mlflow_score_script`'s batch twin in Azure's public azureml-assets): it reads `.csv`,
  `.parquet`, `.pqt` as DataFrames with the signature's column types, and `.png .jpg .jpeg .tiff
  .bmp .gif` as numpy arrays reshaped to the signature's tensor (uint8 without a signature);
  calls predict once per file; any other file fails with "File type '.x' is not supported". A
  DataFrame or dict prediction is written as a DataFrame with the file's base name as its last
  column; any other prediction as one `[file, str(prediction)]` list per element, which
  append_row writes as its str(): `['heart-0.csv', '1']`. The docs read the file back with
  `pd.DataFrame(literal_eval(f.read().replace('\\n', ',')), columns=['file', 'prediction'])` and
  warn that it is not a regular CSV.
- AZUREML_MODEL_DIR holds the registered file or folder under its own name (seed 004; the MNIST
  driver globs "$AZUREML_MODEL_DIR/*/*.pt"): the control plane lays it out
  (mlflow_deploy.model.place_model), as for online scripts; scoring/script.py sets the
  environment and imports the script for both.

Where we differ on purpose: a file that cannot be read or scored fails alone (Azure fails the
whole mini-batch), so the others' rows are kept and error_threshold counts files.

Besides Azure's lines (`azure`), a job may ask for a real CSV with a header (`csv`) or Parquet
(`parquet`): columns `file` (the input's base name), `row` (the row's position in its file, from 0;
for a script's rows, their position in the mini-batch) and the prediction: `prediction` for one
value per row, the model's own columns for a DataFrame or dict of columns, a list per row for a
2-D array (JSON text in CSV). A script's DataFrame keeps its own columns (the script decides
what a row holds); a script's list is one `prediction` column of each element's text.

Nothing here raises for a failing mini-batch: the result carries a one-line message per problem,
safe to show, and the script's or model's traceback for the job log. mlflow is imported only by
the MLflow driver (pipeline reaches it through the loaded model); pyarrow and Pillow only when a
file needs them, so a scoring script's environment needs neither.
"""
import base64
import io
import json
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from . import parts, payload
from .errors import BadRequest, ScoringError, StartupError, one_line
from .options import DEFAULTS, ScoringOptions
from .scorer import ModelScorer
from .script import azure_environment, import_script

Rows = Union[List[Any], pd.DataFrame]
#: what the MLflow driver reads, as Azure's generated driver does
TABULAR = (".csv", ".parquet", ".pqt")
IMAGES = (".png", ".jpg", ".jpeg", ".tiff", ".bmp", ".gif")
#: the output formats a job asks for, and none (summary_only)
FORMATS = parts.FORMATS + ("none",)
FILENAME_COLUMN = "_azureml_filename"  # the column Azure's driver adds to a DataFrame prediction


@dataclass
class FileRows:
    """One input file's predictions (the MLflow driver), as the model returned them."""

    name: str  # the file's base name, as Azure writes it
    predictions: Any
    rows: int


@dataclass
class MiniBatchResult:
    """What one mini-batch produced, for the job to write (append_row) and count (error_threshold).

    `error` set: the mini-batch failed as a whole (run() raised or returned the wrong type); Azure
    retries such a mini-batch and then counts all its files as failed. `file_errors`: files the
    MLflow driver could not score, the others still scored. `missing`: run() returned fewer rows
    than it was given files; each returned row marks one input as done, so the rest count as
    failed. The rows are a script's (`rows`) or the MLflow driver's per file (`scored`).
    """

    files: List[str]
    rows: Rows = field(default_factory=list)
    error: Optional[str] = None
    file_errors: Dict[str, str] = field(default_factory=dict)
    missing: int = 0
    traceback: Optional[str] = None  # the script's or model's traceback: the job log only
    scored: List[FileRows] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Input files that count against error_threshold."""
        if self.error is not None:
            return len(self.files)
        return min(len(self.files), len(self.file_errors) + self.missing)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def count(self) -> int:
        """Rows this mini-batch writes."""
        if self.error is not None:
            return 0
        return sum(s.rows for s in self.scored) + count_rows(self.rows)

    def messages(self) -> List[str]:
        """One line per problem, for the job's log and summary."""
        lines = [] if self.error is None else [self.error]
        lines += ["Error processing input file '{}': {}".format(path, message)
                  for path, message in self.file_errors.items()]
        if self.missing:
            lines.append(self.missing_message())
        return lines

    def missing_message(self) -> str:
        return ("run() returned {} row(s) for {} input file(s): {} file(s) count as "
                "failed".format(count_rows(self.rows), len(self.files), self.missing))


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


# ---- an MLflow model without a script ---------------------------------------------------------

class BatchFileError(BadRequest):
    """An input file the MLflow driver cannot read or score."""


class MlflowBatchDriver:
    """Azure's generated driver for MLflow models: each file read with the signature's types,
    enforced and predicted on its own, so one bad file fails alone."""

    def __init__(self, scorer: ModelScorer):
        self.scorer = scorer

    @classmethod
    def load(cls, model_dir: str, *,
             options: ScoringOptions = DEFAULTS) -> "MlflowBatchDriver":
        try:  # imports mlflow: only this driver needs it
            driver = cls(ModelScorer.load(model_dir, options, will_fork=False))
        except Exception as exc:  # noqa: BLE001 - mlflow and the flavor may raise anything
            raise StartupError("the MLflow model could not be loaded: " + one_line(exc),
                               traceback.format_exc()) from None
        warm_readers(driver.scorer.signature)
        return driver

    def run_mini_batch(self, files: Sequence[str]) -> MiniBatchResult:
        files = [str(f) for f in files]
        result = MiniBatchResult(files)
        tracebacks = []
        for path in files:
            try:
                result.scored.append(self.score_file(path))
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

    def score_file(self, path: str) -> FileRows:
        """One file read, enforced and predicted (predict once per file). Raises ScoringError."""
        name = os.path.basename(path)
        parsed = read_file(path, self.scorer.signature)
        predictions = self.scorer.predict_parsed(parsed, request_id=name).predictions
        return FileRows(name, predictions, prediction_rows(predictions))

    def close(self) -> None:
        """Nothing to undo: the model stays loaded until the process ends."""

    def __enter__(self) -> "MlflowBatchDriver":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def extension_of(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def read_file(path: str, signature: Any) -> payload.ParsedInput:
    """An input file as the online server's ParsedInput, as Azure's driver reads it. Raises
    BatchFileError with one line that names the file's problem, never its data."""
    extension = extension_of(path)
    if extension in TABULAR:
        return payload.ParsedInput(read_table(path, signature), "frame", may_have_bools=False)
    if extension in IMAGES:
        return read_image(path, signature)
    # Azure's words (its driver adds the list of accepted types)
    raise BatchFileError("File type '{}' is not supported".format(os.path.splitext(path)[1]))


# ---- .csv, .parquet, .pqt ------------------------------------------------------------------

#: the signature's column types as arrow and pandas read them; others are left to the reader
#: (datetime and binary stay text: the signature's enforcement parses them as a JSON body's)
_ARROW_TYPES = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32",
                "boolean": "bool_", "string": "string"}
_PANDAS_TYPES = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32",
                 "boolean": "bool", "string": "object"}


def warm_readers(signature: Any = None) -> None:
    """Read a two-row CSV and Parquet file once, as the worker starts, with the signature's
    column types: a reader's first use faults in its library's code (each column type's
    conversion its own) and sets up Arrow's allocator (about 5 MB of a first 100,000 x 10
    Parquet file's peak here, 5 MB of a typed CSV's), which the first mini-batch would
    otherwise pay for, in time and in that file's peak. Best effort: a failure here is the
    first file's to meet and report."""
    arrow = _pyarrow()
    if arrow is None:
        return
    import tempfile

    columns = {c.name: _WARM_VALUES[c.type] for c in getattr(signature, "columns", ())
               if c.type in _WARM_VALUES}
    table = arrow.table(columns or {"x": [0.5, 1.5]})
    try:
        with tempfile.TemporaryDirectory(prefix="mlflow-deploy-warm-") as folder:
            for name, write in (("warm.csv", arrow.csv.write_csv),
                                ("warm.parquet", arrow.parquet.write_table)):
                path = os.path.join(folder, name)
                write(table, path)
                read_table(path, signature)
    except Exception:  # noqa: BLE001 - see the docstring
        pass


#: two values of each type the readers apply, for warm_readers
_WARM_VALUES = {"double": [0.5, 1.5], "float": [0.5, 1.5], "long": [1, 2], "integer": [1, 2],
                "boolean": [True, False], "string": ["a", "b"]}


def _pyarrow() -> Any:
    try:
        import pyarrow  # noqa: F401  installed into model envs with mlflow-deploy; optional
        import pyarrow.csv  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return None
    arrow = sys.modules["pyarrow"]
    if getattr(arrow.lib, "have_signal_refcycle", False):
        _without_heap_scans(arrow)
    return arrow


def _without_heap_scans(arrow: Any) -> None:
    """On Python 3.10 Arrow works around a CPython bug (a reference cycle made while it looks up
    the process's signal handlers) by scanning the whole heap at every read_csv call: 14-37 ms a
    call in a worker with mlflow, scikit-learn and pandas loaded, 0.1 ms without, more than
    parsing a small file costs. A batch worker needs no Arrow handler for Ctrl-C (the job stops
    it by signal, or kills it), so the lookup is turned off, through Arrow's public switch, and
    with it the cycle the scan is for; then the scan's own flag (a module global Arrow reads at
    each call) is cleared."""
    arrow.enable_signal_handlers(False)
    arrow.lib.have_signal_refcycle = False


def read_table(path: str, signature: Any) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame, the signature's column types applied while reading
    (a string column keeps "007" as text). pyarrow reads it, single-threaded (a batch worker is
    one core's work); without pyarrow, pandas reads CSV. A value that does not parse as its
    column's type is read untyped instead, so that enforcement names the column at fault."""
    columns = {c.name: c.type for c in getattr(signature, "columns", ())}
    csv = extension_of(path) == ".csv"
    arrow = _pyarrow()
    if arrow is None and not csv:
        raise BatchFileError("reading Parquet needs pyarrow in the model's environment")
    try:
        if arrow is None:
            return _pandas_csv(path, columns)
        if csv:
            return _arrow_csv(arrow, path, columns)
        return _arrow_parquet(arrow, path)
    except BatchFileError:
        raise
    except pd.errors.EmptyDataError:
        raise BatchFileError("the file is empty") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - the readers' errors quote the file's text
        raise BatchFileError("the file could not be read as {}: {}".format(
            "CSV" if csv else "Parquet", _reader_words(exc))) from None


def _arrow_csv(arrow: Any, path: str, columns: Mapping[str, str]) -> pd.DataFrame:
    if os.path.getsize(path) == 0:
        raise BatchFileError("the file is empty")
    types = {name: getattr(arrow, _ARROW_TYPES[t])() for name, t in columns.items()
             if t in _ARROW_TYPES}
    frame = _float_csv(arrow, path, types)
    if frame is not None:
        return frame
    read = arrow.csv.ReadOptions(use_threads=False)
    # the table lives only until it is a pandas frame (numpy's memory, from malloc): with Arrow
    # on malloc too, the next file reuses what this one freed, where Arrow's own heap would keep
    # its high-water mark beside malloc's (a 100,000 x 10 file's peak above the loaded model:
    # 36 -> 29 MB, as fast). Parquet keeps Arrow's heap: its reader was 2.4x slower on malloc.
    pool = arrow.system_memory_pool()
    try:
        table = arrow.csv.read_csv(path, read_options=read, memory_pool=pool,
                                   convert_options=arrow.csv.ConvertOptions(column_types=types))
    except arrow.ArrowInvalid:
        if not types:
            raise
        table = arrow.csv.read_csv(path, read_options=read, memory_pool=pool)
    return table.to_pandas(use_threads=False, memory_pool=pool)


#: bytes of a CSV file parsed at a time by _float_csv: each parse costs Arrow a reader and a
#: thread (0.5 ms or more), so smaller pieces are slower; each raises the peak by about 3.5x
#: its size (the bytes, Arrow's parsed fields, the columns)
CSV_PIECE = 2 << 20


def _float_csv(arrow: Any, path: str, types: Mapping[str, Any],
               piece: int = CSV_PIECE) -> Optional[pd.DataFrame]:
    """A CSV file whose columns the signature types all as one float type (a table of features,
    as most batch inputs are), read a piece of whole lines at a time into a preallocated block
    that becomes the frame without a copy; None for any other file, or any this reader cannot
    take as it is, which read_csv then reads as before.

    Why by hand: Arrow's whole-file read holds the table beside its pandas copy and the file's
    blocks, and its streaming reader reads up to 32 blocks ahead (a worker's peak on a 100,000
    x 10 file: 2.9-3.2x its frame with either, 2.2x this way, 4-7 % slower). Pieces are cut at
    newlines, which is exact only without quoting: a quote in the data, like any value that is
    not a number, makes Arrow fail here, and the file goes the general way. The frame equals
    read_csv's and to_pandas'. The pieces' tables live on Arrow's own heap, which keeps what
    one piece freed for the next (on malloc the same read was 8 % slower).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as source:
        header = source.readline()
        layout = _float_columns(arrow, header, types)
        if layout is None:
            return None
        names, dtype = layout
        read = arrow.csv.ReadOptions(use_threads=False, column_names=names, block_size=piece)
        convert = arrow.csv.ConvertOptions(column_types={name: types[name] for name in names})
        unquoted = arrow.csv.ParseOptions(quote_char=False)
        block: Optional[np.ndarray] = None
        rows, consumed = 0, len(header)
        buffer, kept = bytearray(piece), 0
        while True:
            got = source.readinto(memoryview(buffer)[kept:])
            end = kept + got
            if got == 0 and end == 0:
                break
            cut = end if got == 0 else buffer.rfind(b"\n", 0, end) + 1
            if cut == 0:  # a line longer than the buffer: read on into a larger one
                buffer.extend(bytes(len(buffer)))
                kept = end
                continue
            try:
                table = arrow.csv.read_csv(
                    arrow.BufferReader(arrow.py_buffer(memoryview(buffer)[:cut])),
                    read_options=read, parse_options=unquoted, convert_options=convert)
            except (arrow.ArrowInvalid, arrow.ArrowNotImplementedError):
                return None
            consumed += cut
            if block is None or rows + table.num_rows > block.shape[1]:
                # rows in the rest of the file estimated from the bytes per row so far; pages
                # of the block never written are never touched, so a margin costs nothing
                grown = np.empty((len(names), int((rows + table.num_rows) * size / consumed
                                                  * 1.05) + 1024), dtype=dtype)
                if block is not None:
                    grown[:, :rows] = block[:, :rows]
                block = grown
            for position, column in enumerate(table.columns):
                start = rows
                for chunk in column.chunks:  # nulls come out as NaN, as to_pandas has them
                    block[position, start:start + len(chunk)] = chunk.to_numpy(
                        zero_copy_only=False)
                    start += len(chunk)
            rows += table.num_rows
            del table
            if got == 0:
                break
            buffer[:end - cut] = buffer[cut:end]
            kept = end - cut
    if not rows:
        return None
    return pd.DataFrame(block[:, :rows].T, columns=names, copy=False)


def _float_columns(arrow: Any, header: bytes, types: Mapping[str, Any]
                   ) -> Optional[Tuple[List[str], Any]]:
    """(column names, numpy dtype) when the header line names distinct columns that the
    signature types all as one and the same float type; None otherwise."""
    if not header.endswith(b"\n"):
        return None
    try:  # the names as read_csv reads them (a BOM dropped, quotes removed)
        names = arrow.csv.read_csv(arrow.BufferReader(header), read_options=arrow.csv.ReadOptions(
            use_threads=False)).column_names
    except (arrow.ArrowInvalid, arrow.ArrowNotImplementedError):
        return None
    dtype = _float_dtype(names, [str(types[name]) if name in types else None for name in names])
    return None if dtype is None else (names, dtype)


def _arrow_parquet(arrow: Any, path: str) -> pd.DataFrame:
    """A Parquet file as a DataFrame. A file whose columns are all of one float type (a table of
    features, as most batch inputs are) is read one column of one row group at a time into a
    preallocated block that becomes the frame without a copy: Arrow holds one column chunk at a
    time instead of the whole table beside its pandas copy (a worker's peak on a 100,000 x 10
    file: 9.4x its frame before, 3.3x now; a column chunk is decoded whole, so batches of rows
    would not help). Any other file, and any whose pandas metadata says more than a range index
    and the column names: read_table and to_pandas, which restore what that metadata says."""
    source = arrow.parquet.ParquetFile(path)
    layout = _float_layout(source)
    if layout is None:
        return arrow.parquet.read_table(path, use_threads=False).to_pandas(use_threads=False)
    dtype, index = layout
    names = source.schema_arrow.names
    block = np.empty((len(names), len(index)), dtype=dtype)
    start = 0
    for group in range(source.metadata.num_row_groups):
        stop = start + source.metadata.row_group(group).num_rows
        for position, name in enumerate(names):  # nulls come out as NaN, as to_pandas has them
            chunk = source.read_row_group(group, columns=[name], use_threads=False)
            block[position, start:stop] = chunk.column(0).to_numpy()
        start = stop
    return pd.DataFrame(block.T, columns=names, index=index, copy=False)


#: the numpy type of a file whose columns are all of one float type (Arrow's names for them)
_FLOAT_FILES = {"double": np.float64, "float": np.float32}


def _float_dtype(names: Sequence[str], kinds: Sequence[Optional[str]]) -> Optional[Any]:
    """The numpy type of a file's columns (``names``, of Arrow types ``kinds``) when they are
    under distinct names and all of one float type, which the readers can put in one block;
    None otherwise."""
    if len(set(kinds)) != 1 or len(set(names)) != len(names):
        return None
    return _FLOAT_FILES.get(kinds[0])


def _float_layout(source: Any) -> Optional[Tuple[Any, pd.RangeIndex]]:
    """(numpy dtype, index) of a Parquet file whose every column is of one float type, under
    distinct names, and whose pandas metadata, if any, holds only a range index and the same
    names; None for any other file."""
    schema = source.schema_arrow
    names = list(schema.names)
    dtype = _float_dtype(names, [str(t) for t in schema.types])
    rows = source.metadata.num_rows
    meta = schema.pandas_metadata or {}
    indexes = meta.get("index_columns") or []
    labels = meta.get("column_indexes") or []
    if dtype is None or len(indexes) > 1 or len(labels) > 1 \
            or any(label.get("name") is not None for label in labels) \
            or (meta and [c.get("name") for c in meta.get("columns") or []] != names):
        return None
    if not indexes:
        return dtype, pd.RangeIndex(rows)
    index = indexes[0]
    if not isinstance(index, dict) or index.get("kind") != "range":
        return None
    ranged = pd.RangeIndex(index.get("start", 0), index.get("stop", rows), index.get("step", 1),
                           name=index.get("name"))
    return (dtype, ranged) if len(ranged) == rows else None


def _pandas_csv(path: str, columns: Mapping[str, str]) -> pd.DataFrame:
    types = {name: _PANDAS_TYPES[t] for name, t in columns.items() if t in _PANDAS_TYPES}
    try:
        return pd.read_csv(path, dtype=types or None)
    except (ValueError, TypeError) as exc:
        if not types or isinstance(exc, pd.errors.ParserError):
            raise
        return pd.read_csv(path)


def _reader_words(exc: BaseException) -> str:
    """A reader's failure without its message: pyarrow's and pandas' quote the offending text."""
    if isinstance(exc, pd.errors.ParserError):
        return "malformed CSV (rows of different lengths or bad quoting)"
    if isinstance(exc, UnicodeDecodeError):
        return "the text is not valid UTF-8"
    return "not a valid file of its type ({})".format(type(exc).__name__)


# ---- images ---------------------------------------------------------------------------------

def read_image(path: str, signature: Any) -> payload.ParsedInput:
    """An image as Azure's driver passes it: the pixels as a numpy array (Pillow's mode kept: 2-D
    for grayscale, 3-D with channels), cast and reshaped to the signature's (first) tensor; without
    a signature, uint8 with a batch axis of 1; for a one-column binary signature, the file's bytes
    in that column."""
    kind = getattr(signature, "kind", "none")
    if kind == "columns":
        columns = signature.columns
        if len(columns) != 1 or columns[0].type != "binary":
            raise BatchFileError("an image file needs a model that takes a tensor, or one "
                                 "binary column")
        with open(path, "rb") as f:
            encoded = base64.b64encode(f.read()).decode("ascii")
        return payload.ParsedInput({"columns": [columns[0].name], "data": [[encoded]]}, "split",
                                   may_have_bools=False)
    pixels = _pixels(path)
    if kind == "none":
        return payload.ParsedInput(pixels.astype(np.uint8, copy=False)[np.newaxis], "tensor",
                                   may_have_bools=False)
    tensor = signature.tensors[0]
    array = _shaped(pixels, tensor)
    data = array if array.dtype == object else array.tolist()
    if kind == "named":
        if len(signature.tensors) != 1:
            raise BatchFileError("an image file needs a model that takes one tensor")
        return payload.ParsedInput({tensor.name: data}, "named", may_have_bools=False)
    return payload.ParsedInput(data, "tensor", may_have_bools=False)


def _pixels(path: str) -> np.ndarray:
    try:
        from PIL import Image  # installed into model envs with mlflow-deploy; optional
    except ImportError:
        raise BatchFileError("reading images needs Pillow in the model's environment") from None
    try:
        with Image.open(path) as image:
            return np.array(image)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow's errors may quote the file's bytes
        raise BatchFileError("the file could not be read as an image ({})".format(
            type(exc).__name__)) from None


def _shaped(pixels: np.ndarray, tensor: Any) -> np.ndarray:
    """Azure's `astype(dtype).reshape(shape)`; a shape of several -1 axes takes the image's own
    sizes behind a batch axis of 1, and (-1,) a batch of one image of any size (an object array,
    as Azure builds for images of different sizes)."""
    shape = tuple(tensor.shape or ())
    if shape == (-1,):
        batch = np.empty(1, dtype=object)
        batch[0] = pixels
        return batch
    array = pixels.astype(tensor.dtype)
    if not shape:
        return array
    if shape.count(-1) > 1:
        fits = len(shape) == pixels.ndim + 1 and all(
            want in (-1, got) for want, got in zip(shape[1:], pixels.shape))
        if fits:
            return array[np.newaxis]
    else:
        try:
            return array.reshape(shape)
        except ValueError:
            pass
    raise BatchFileError("the image's pixels have shape {}, which does not fit the model's "
                         "tensor {} (-1: any size)".format(_dims(pixels.shape), _dims(shape)))


def _dims(shape: Sequence[int]) -> str:
    return str(tuple(int(d) for d in shape))


def prediction_rows(predictions: Any) -> int:
    """How many rows a file's predictions write (Azure: a DataFrame's rows, else its elements)."""
    if isinstance(predictions, pd.DataFrame):
        return len(predictions.index)
    if isinstance(predictions, dict):
        frame = _dict_frame(predictions)
        return 1 if frame is None else len(frame.index)
    if isinstance(predictions, np.ndarray):
        return 1 if predictions.ndim == 0 else len(predictions)
    if isinstance(predictions, (list, tuple, pd.Series)):
        return len(predictions)
    return 1


# ---- rendering ------------------------------------------------------------------------------

def render(result: MiniBatchResult, output_format: str) -> bytes:
    """The mini-batch's rows in ``output_format`` (FORMATS); b"" when it has none. Vectorised: a
    million rows of one number each render in a fraction of a second."""
    if output_format == "none" or result.error is not None:
        return b""
    if output_format == "azure":
        parts = [azure_lines(s.name, s.predictions) for s in result.scored]
        if count_rows(result.rows):
            parts.append(render_rows(result.rows).encode("utf-8"))
        return b"".join(parts)
    frame = output_frame(result)
    if frame is None:
        return b""
    if output_format == "csv":
        return csv_bytes(frame)
    if output_format == "parquet":
        return parquet_bytes(frame)
    raise ValueError("output_format must be one of {}".format(", ".join(FORMATS)))


def render_rows(rows: Rows) -> str:
    """The text append_row adds to the output file for a script's rows.

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


def azure_lines(name: str, predictions: Any) -> bytes:
    """One file's predictions as Azure's driver returns them and append_row writes them.

    A DataFrame or dict: a DataFrame with the file name as its last column, written as append_row
    writes a DataFrame (space-separated values). Anything else: `str([name, str(element)])` per
    element, e.g. `['heart-0.csv', '1']`; numbers are formatted in one pass (orjson where the env
    has it, the same shortest round-trip digits as Python's str()), never one call per row.
    """
    if isinstance(predictions, (pd.DataFrame, dict)):
        frame = _dict_frame(predictions) if isinstance(predictions, dict) else \
            predictions.copy(deep=False)
        if frame is None:  # Azure: the prediction that is no table, as one element
            return (str([name, str(predictions)]) + "\n").encode("utf-8")
        frame[FILENAME_COLUMN] = name
        return render_rows(frame).encode("utf-8")
    texts = element_texts(predictions)
    if isinstance(texts, bytes):  # numbers: text that never needs quoting or escaping
        if not texts:
            return b""
        head = ("[" + repr(name) + ", '").encode("utf-8")
        return b"".join((head, texts.replace(b",", b"']\n" + head), b"']\n"))  # one copy
    return "".join(str([name, t]) + "\n" for t in texts).encode("utf-8")


def _dict_frame(predictions: Dict[str, Any]) -> Optional[pd.DataFrame]:
    """Azure's format_output: a dict's arrays as lists, then a DataFrame (None if it is none)."""
    values = {k: _nested_list(v) if isinstance(v, np.ndarray) else v
              for k, v in predictions.items()}
    try:
        return pd.DataFrame(values)
    except (ValueError, TypeError):
        return None


def _nested_list(array: np.ndarray) -> Any:
    if array.dtype == object:
        return [v.tolist() if isinstance(v, np.ndarray) else v for v in array]
    return array.tolist()


def element_texts(predictions: Any) -> Union[bytes, List[str]]:
    """str() of each element of the predictions, as Azure's `for p in output: str(p)` gives.

    Numbers come back as one bytes text, comma-separated (vectorised); anything else as a list
    of str.
    pandas yields Python scalars when iterated (a float32 Series gives the float64 digits of each
    value), numpy its own scalars (float32 digits).
    """
    if isinstance(predictions, pd.Series):
        values = predictions.values
        if isinstance(values, np.ndarray) and values.dtype.kind == "f":
            return number_texts(values.astype(np.float64, copy=False))
        if isinstance(values, np.ndarray) and values.dtype.kind in "iub":
            return number_texts(values)
        return [str(v) for v in predictions]
    if isinstance(predictions, np.ndarray):
        if predictions.ndim == 0:
            return [str(predictions)]
        if predictions.ndim == 1 and predictions.dtype.kind in "iufb":
            return number_texts(predictions)
        return [str(v) for v in predictions]
    if isinstance(predictions, (list, tuple)):
        return [str(v) for v in predictions]
    return [str(predictions)]


def number_texts(values: np.ndarray) -> bytes:
    """A 1-D numeric array as each value's str(), comma-separated (no number has a comma)."""
    if values.dtype.kind == "b":
        return b",".join(np.where(values, b"True", b"False").tolist())
    if values.dtype.kind in "iu":
        return _orjson_texts(values) or ",".join(map(str, values.tolist())).encode("ascii")
    lines = _orjson_texts(values)
    if lines is None:
        scalar = values.dtype.type  # str() of numpy's own scalars: float32 prints its own digits
        texts = map(str, values.tolist()) if values.dtype == np.float64 else \
            (str(scalar(v)) for v in values)
        return ",".join(texts).encode("ascii")
    # orjson writes what Python writes except below 1e-4 (0.00001 for 1e-05) and for NaN and
    # infinity (null): those few values take str()
    magnitude = np.abs(values.astype(np.float64, copy=False))  # float32's own threshold too
    odd = np.flatnonzero(~np.isfinite(values) | ((magnitude < 1e-4) & (magnitude > 0))
                         | (magnitude >= 1e16))
    if not odd.size:
        return lines
    parts = lines.split(b",")
    for i in odd.tolist():
        parts[i] = str(values[i]).encode("ascii")
    return b",".join(parts)


def _orjson_texts(values: np.ndarray) -> Optional[bytes]:
    if payload.orjson is None or values.dtype.kind not in "iuf" or values.dtype.itemsize < 4:
        return None
    try:
        text = payload.orjson.dumps(np.ascontiguousarray(values),
                                    option=payload.orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # an orjson without numpy support
        return None
    return text[1:-1]


def output_frame(result: MiniBatchResult) -> Optional[pd.DataFrame]:
    """The mini-batch's rows as one table for `csv` and `parquet` (the module's docstring).

    The file column is categorical (one string per file, not per row) and built once for the
    mini-batch, as is the row column: a million rows cost no Python call per row."""
    if count_rows(result.rows):  # a script's rows: the script decides the columns
        rows = result.rows
        if isinstance(rows, pd.DataFrame):
            frame = rows.reset_index(drop=True)
            frame.columns = [str(c) for c in frame.columns]
            return frame
        return pd.DataFrame({"prediction": [_element_text(e) for e in rows]})
    tables = [(s.name, _prediction_table(s.predictions)) for s in result.scored]
    tables = [(name, t) for name, t in tables if len(t.index)]
    if not tables:
        return None
    counts = np.array([len(t.index) for _, t in tables])
    names = list(dict.fromkeys(name for name, _ in tables))
    codes = np.repeat(np.array([names.index(name) for name, _ in tables]), counts)
    body = tables[0][1] if len(tables) == 1 else pd.concat([t for _, t in tables],
                                                           ignore_index=True)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    head = pd.DataFrame({"file": pd.Categorical.from_codes(codes, categories=names),
                         "row": np.arange(int(counts.sum()), dtype=np.int64) - starts})
    return pd.concat([head, body.reset_index(drop=True)], axis=1)


def _prediction_table(predictions: Any) -> pd.DataFrame:
    """A file's predictions as columns: `prediction`, or the model's own."""
    if isinstance(predictions, dict):
        table = _dict_frame(predictions)
        if table is None:
            table = pd.DataFrame({"prediction": [json.dumps(payload.plain(predictions))]})
        return table
    if isinstance(predictions, pd.DataFrame):
        table = predictions.reset_index(drop=True)
        table.columns = [str(c) for c in table.columns]
        return table
    if isinstance(predictions, pd.Series):
        return pd.DataFrame({"prediction": predictions.reset_index(drop=True)})
    if isinstance(predictions, np.ndarray) and predictions.ndim == 1:
        return pd.DataFrame({"prediction": predictions})
    if isinstance(predictions, np.ndarray) and predictions.ndim == 0:
        return pd.DataFrame({"prediction": [predictions.item()]})
    if isinstance(predictions, np.ndarray):
        return pd.DataFrame({"prediction": [payload.plain(row) for row in predictions]})
    if isinstance(predictions, (list, tuple)):
        return pd.DataFrame({"prediction": pd.Series([payload.plain(v) for v in predictions],
                                                     dtype=object)})
    return pd.DataFrame({"prediction": [payload.plain(predictions)]})


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """A CSV with a header line; nested values (lists, dicts) as JSON text."""
    frame = _nested_as_json(frame)
    arrow = _pyarrow()
    if arrow is not None:
        try:
            table = arrow.Table.from_pandas(frame, preserve_index=False)
            # the CSV writer takes plain columns: a categorical's values, decoded in C
            table = table.cast(arrow.schema([
                arrow.field(f.name, f.type.value_type)
                if arrow.types.is_dictionary(f.type) else f for f in table.schema]))
            sink = io.BytesIO()
            arrow.csv.write_csv(table, sink, arrow.csv.WriteOptions(quoting_style="needed"))
            return sink.getvalue()
        except (arrow.ArrowInvalid, arrow.ArrowTypeError, arrow.ArrowNotImplementedError,
                TypeError):
            pass  # a type arrow does not write (mixed objects): pandas writes their text
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


def _nested_as_json(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists and dicts (a 2-D prediction's rows, a dict's values) as JSON text; a column of
    text only is recognised in one pass in C, never a call per row."""
    nested = [c for c in frame.columns if frame[c].dtype == object
              and pd.api.types.infer_dtype(frame[c], skipna=True) not in ("string", "empty")
              and frame[c].map(lambda v: isinstance(v, (list, dict))).any()]
    if not nested:
        return frame
    frame = frame.copy()
    for c in nested:
        frame[c] = frame[c].map(
            lambda v: json.dumps(payload.plain(v)) if isinstance(v, (list, dict)) else v)
    return frame


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    arrow = _pyarrow()
    if arrow is None:
        raise BatchFileError("writing Parquet needs pyarrow in the model's environment")
    table = arrow.Table.from_pandas(frame, preserve_index=False)
    sink = io.BytesIO()
    arrow.parquet.write_table(table, sink)
    return sink.getvalue()


def check_format(output_format: str) -> None:
    """Raise StartupError when this environment cannot write ``output_format``."""
    if output_format not in FORMATS:
        raise StartupError("output_format must be one of {}".format(", ".join(FORMATS)))
    if output_format == "parquet" and _pyarrow() is None:
        raise StartupError("output_format parquet needs pyarrow in the model's environment")


def render_result(result: MiniBatchResult, output_format: str) -> Tuple[bytes, MiniBatchResult]:
    """render(), with a failure to render (a prediction Parquet cannot hold) as the mini-batch's
    error rather than an exception."""
    try:
        return render(result, output_format), result
    except Exception as exc:  # noqa: BLE001 - arrow and pandas may raise anything here
        result.error = "the predictions could not be written as {}: {}".format(
            output_format, type(exc).__name__)
        result.traceback = traceback.format_exc()
        return b"", result
