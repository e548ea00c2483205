"""A job's output files: parts written whole or not at all, and the final file assembled from
them in order, in each format, renamed into place only when complete."""
import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlflow_deploy.batch.output import FORMATS, assemble, write_part


def parquet(**columns) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


def parts(folder, *datas):
    paths = []
    for i, data in enumerate(datas):
        path = folder / "parts" / "{:06d}.part".format(i)
        write_part(path, data)
        paths.append(path)
    return paths


def test_formats():
    assert FORMATS == ("azure", "csv", "parquet")


def test_a_part_is_written_whole_and_nothing_else_is_left(tmp_path):
    path = tmp_path / "parts" / "000001.part"
    write_part(path, b"['a.csv', '1']\n")
    write_part(path, b"['a.csv', '2']\n")  # a retried mini-batch replaces its part
    assert path.read_bytes() == b"['a.csv', '2']\n"
    assert os.listdir(tmp_path / "parts") == ["000001.part"]


def test_a_failed_part_write_leaves_neither_part_nor_temporary_file(tmp_path):
    path = tmp_path / "parts" / "000001.part"
    with pytest.raises(TypeError):
        write_part(path, "text, not bytes")
    assert os.listdir(tmp_path / "parts") == []


def test_azure_parts_are_concatenated_in_order(tmp_path):
    paths = parts(tmp_path, b"['b.csv', '2']\n", b"", b"['c.csv', '3']\n")
    destination = tmp_path / "out" / "predictions.csv"
    size = assemble([paths[2], paths[0], paths[1]], destination, "azure")
    assert destination.read_bytes() == b"['c.csv', '3']\n['b.csv', '2']\n"
    assert size == len(destination.read_bytes())
    assert os.listdir(tmp_path / "out") == ["predictions.csv"]


def test_csv_keeps_one_header(tmp_path):
    header = b'"file","row","prediction"\n'
    paths = parts(tmp_path, header + b'"a.csv",0,1.5\n', b"", header + b'"b.csv",0,2\n'
                  b'"b.csv",1,3\n')
    destination = tmp_path / "predictions.csv"
    assemble(paths, destination, "csv")
    assert destination.read_bytes() == (header + b'"a.csv",0,1.5\n"b.csv",0,2\n'
                                        b'"b.csv",1,3\n')


def test_csv_parts_with_other_columns_fail_and_leave_the_destination_alone(tmp_path):
    destination = tmp_path / "predictions.csv"
    destination.write_bytes(b"what was there\n")
    paths = parts(tmp_path, b"file,row,prediction\na,0,1\n", b"file,row,total\nb,0,2\n")
    with pytest.raises(ValueError, match="part 000001.part has columns other than the first"):
        assemble(paths, destination, "csv")
    assert destination.read_bytes() == b"what was there\n"
    assert sorted(os.listdir(tmp_path)) == ["parts", "predictions.csv"]  # no temporary file


def test_an_unreadable_part_leaves_no_output_and_no_temporary_file(tmp_path):
    destination = tmp_path / "out" / "predictions.csv"
    with pytest.raises(FileNotFoundError):
        assemble([tmp_path / "missing.part"], destination, "azure")
    assert os.listdir(tmp_path / "out") == []


def test_the_output_appears_only_by_rename(tmp_path, monkeypatch):
    """The file is written under a temporary name in the destination's folder and renamed: the
    destination's name never holds part of the output."""
    renames = []
    real = os.replace

    def watch(source, target):
        renames.append((os.path.dirname(str(source)), os.path.basename(str(source)),
                        os.path.exists(str(target))))
        return real(source, target)

    paths = parts(tmp_path, b"['a.csv', '1']\n")
    monkeypatch.setattr(os, "replace", watch)
    destination = tmp_path / "out" / "predictions.csv"
    assemble(paths, destination, "azure")
    folder, temporary, existed = renames[-1]
    assert folder == str(destination.parent) and temporary.startswith(".predictions.csv.")
    assert not existed and destination.read_bytes() == b"['a.csv', '1']\n"


def test_parquet_parts_become_one_table(tmp_path):
    paths = parts(tmp_path, parquet(file=["a.csv"], row=[0], prediction=[1]), b"",
                  parquet(file=["b.csv", "b.csv"], row=[0, 1], prediction=[2.5, 3.5]))
    destination = tmp_path / "predictions.parquet"
    assemble(paths, destination, "parquet")
    table = pq.read_table(destination)
    assert table.to_pydict() == {"file": ["a.csv", "b.csv", "b.csv"], "row": [0, 0, 1],
                                 "prediction": [1.0, 2.5, 3.5]}
    assert table.schema.field("prediction").type == pa.float64()


def test_no_rows_still_make_an_output_file(tmp_path):
    for output_format in FORMATS:
        destination = tmp_path / ("empty." + output_format)
        assemble(parts(tmp_path, b""), destination, output_format)
        assert destination.exists()
    assert pq.read_table(tmp_path / "empty.parquet").num_rows == 0
