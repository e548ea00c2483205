"""What travels to a Dask worker on another machine (batch/remote.py): a revision's folders in
one archive, unpacked once where the worker lacks them, nested folders kept nested; an env that
cannot be rebuilt from a lock, or a damaged archive, is a one-line start failure. (The whole path
through a real Dask worker with its own filesystem is in test_dask.py.)"""
import io
import shutil
import sys
import tarfile
from dataclasses import replace

import pytest

from mlflow_deploy.batch import remote
from mlflow_deploy.batch.worker import WorkerSpec, WorkerStartFailed


def _revision(root):
    model = root / "model" / "1" / "regressor"
    model.mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    code = root / "code" / "1"
    code.mkdir(parents=True)
    (code / "score.py").write_text("def init():\n    pass\n")
    return WorkerSpec(python=sys.executable, model_dir=str(model), code_dir=str(code),
                      scoring_script="score.py", azureml_model_dir=str(root / "model" / "1"))


def test_missing_folders_are_unpacked_once_and_nested_ones_stay_nested(tmp_path):
    spec = _revision(tmp_path / "rev")
    shipment = remote.pack(spec)
    assert remote.localize(spec, shipment, home=tmp_path / "worker") is spec  # all here
    shutil.move(str(tmp_path / "rev"), str(tmp_path / "elsewhere"))  # "another machine"
    assert remote.needs_shipment(spec)
    local = remote.localize(spec, shipment, home=tmp_path / "worker")
    root = tmp_path / "worker" / "shipped" / shipment.digest
    assert local.model_dir == str(root / "azureml_model_dir" / "regressor")
    assert local.azureml_model_dir == str(root / "azureml_model_dir")
    assert (root / "azureml_model_dir" / "regressor" / "MLmodel").is_file()
    assert (root / "code_dir" / "score.py").read_text().startswith("def init")
    assert not (root / "model_dir").exists()  # inside azureml_model_dir: packed once
    assert local.python == spec.python and local.scoring_script == "score.py"
    stamp = root.stat().st_mtime_ns
    assert remote.localize(spec, shipment, home=tmp_path / "worker") == local
    assert root.stat().st_mtime_ns == stamp
    assert [p.name for p in root.parent.iterdir()] == [shipment.digest]  # no scratch left


def test_an_env_that_cannot_be_rebuilt_from_a_lock_is_a_start_failure(tmp_path):
    spec = replace(_revision(tmp_path / "rev"), python=str(tmp_path / "gone" / "bin" / "python"),
                   env_manager="conda", python_version="3.11.7")
    with pytest.raises(WorkerStartFailed, match="only an environment of env_manager uv or "
                                                "virtualenv can be built here"):
        remote.localize(spec, remote.pack(spec), home=tmp_path / "worker")


def test_a_damaged_archive_is_a_start_failure_and_writes_nothing_outside(tmp_path):
    spec = _revision(tmp_path / "rev")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        evil = tarfile.TarInfo("../../escaped.txt")
        evil.size = 3
        tar.addfile(evil, io.BytesIO(b"bad"))
    shipment = remote.Shipment("0" * 32, buffer.getvalue(), {}, None)
    shutil.rmtree(tmp_path / "rev")
    with pytest.raises(WorkerStartFailed, match="arrived damaged"):
        remote.localize(spec, shipment, home=tmp_path / "worker")
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (tmp_path / "worker" / "shipped" / shipment.digest).exists()
