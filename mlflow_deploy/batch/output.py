"""A batch job's output files: each finished mini-batch's rows as a part written atomically, and
the final output assembled from the parts in order, so that a reader never sees a torn file.

Formats (``FORMATS``): ``azure``, the lines Azure's MLflow batch driver appends to
predictions.csv (no header: parts are concatenated as they are); ``csv``, a CSV whose parts each
start with the same header line, kept once; ``parquet``, one Parquet file per part, concatenated
into one table (pyarrow, imported only then).
"""
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

# the batch worker writes its own mini-batches' parts (where the rows are); the job writes the
# rest of its files with the same function
from mlflow_deploy.scoring.parts import FORMATS, discard, fsync_dir, make_durable, write_part

__all__ = ["FORMATS", "write_part", "make_durable", "assemble"]


def assemble(parts: Sequence[Path], destination: Path, output_format: str) -> int:
    """The final output file from the parts in order (csv: one header); written to a temporary
    file in destination's folder, fsync'ed, renamed into place; returns bytes written.

    Empty parts (mini-batches without rows) are skipped. CSV parts must share their header: a
    part whose header differs is an error naming the part, never a file with two tables in it.
    """
    if output_format not in FORMATS:
        raise ValueError("output_format must be one of {}".format(", ".join(FORMATS)))
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix="." + destination.name + ".", suffix=".tmp",
                                dir=str(destination.parent))
    try:
        with os.fdopen(fd, "wb") as out:
            if output_format == "parquet":
                _parquet(parts, out)
            else:
                _text(parts, out, header=output_format == "csv")
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        os.replace(temp, str(destination))
    except BaseException:
        discard(temp)
        raise
    fsync_dir(destination.parent)
    return size


def _text(parts: Sequence[Path], out, header: bool) -> None:
    first = None
    for part in parts:
        with open(str(part), "rb") as f:
            if header:
                line = f.readline()
                if not line:
                    continue
                if first is None:
                    first = line
                    out.write(line)
                elif line != first:
                    raise ValueError("part {} has columns other than the first part's; a CSV "
                                     "output needs the same columns in every mini-batch".format(
                                         Path(part).name))
            shutil.copyfileobj(f, out, 1 << 20)


def _parquet(parts: Sequence[Path], out) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise RuntimeError("assembling a Parquet output needs pyarrow") from None
    writer = None
    schema = None
    try:
        tables = [pq.read_table(str(p)) for p in parts if os.path.getsize(str(p))]
        if tables:
            try:
                schema = _unified([t.schema for t in tables], pa)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise ValueError("the mini-batches' Parquet parts have columns of different "
                                 "types; they cannot be one table") from None
        for table in tables:
            if writer is None:
                writer = pq.ParquetWriter(out, schema)
            writer.write_table(_conform(table, schema, pa))
        if writer is None:  # no rows at all: an empty table, still a Parquet file
            writer = pq.ParquetWriter(out, pa.schema([]))
    finally:
        if writer is not None:
            writer.close()


def _unified(schemas, pa):
    """One schema for every part: int64 in one part and double in another become double."""
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except TypeError:  # pyarrow < 14 has no promote_options: equal types, or nulls, only
        return pa.unify_schemas(schemas)


def _conform(table, schema, pa):
    """A part's table with the unified schema's columns (absent ones null) and types."""
    columns = []
    for f in schema:
        if f.name in table.column_names:
            column = table.column(f.name)
            columns.append(column if column.type == f.type else column.cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)
