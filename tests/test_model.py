"""model.py: every URI form resolves to the same MLmodel; each failure is one clear error that
does not quote the user's values."""

import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow.models import Model

from mlflow_deploy.errors import InvalidParameter, NotFound
from mlflow_deploy.model import load_model, read_model, resolve_model_dir, to_mlflow_uri

DIABETES_COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture(scope="module")
def diabetes_run_id(example_models):
    return mlflow.MlflowClient().get_model_version("diabetes", "1").run_id


def check_diabetes(info):
    assert "python_function" in info.flavors
    assert info.loader_module == "mlflow.sklearn"
    assert info.inputs.input_names() == DIABETES_COLUMNS
    assert info.outputs is not None
    assert (info.path / "MLmodel").is_file()
    assert info.mlflow_version == mlflow.__version__
    assert info.python_version
    assert info.env_files["requirements"].is_file()
    assert info.env_files["virtualenv"].name == "python_env.yaml"


def test_registry_version(example_models, tmp_path):
    info = load_model(example_models["diabetes"], tmp_path / "dl")
    check_diabetes(info)
    assert info.uri == "models:/diabetes/1"
    assert info.path.is_relative_to(tmp_path / "dl")


def test_registry_alias(example_models, tmp_path):
    mlflow.MlflowClient().set_registered_model_alias("diabetes", "champion", "1")
    check_diabetes(load_model("models:/diabetes@champion", tmp_path / "dl"))


def test_azureml_reference_is_a_registry_version(example_models, tmp_path):
    assert to_mlflow_uri("azureml:diabetes:1") == "models:/diabetes/1"
    assert to_mlflow_uri("azureml:diabetes@latest") == "models:/diabetes/latest"
    check_diabetes(load_model("azureml:diabetes:1", tmp_path / "dl"))


def test_run_uri(diabetes_run_id, tmp_path):
    check_diabetes(load_model(f"runs:/{diabetes_run_id}/model", tmp_path / "dl"))


def test_local_path_and_file_uri_are_used_in_place(example_model_dirs):
    path = Path(example_model_dirs["diabetes"])
    assert resolve_model_dir(str(path)) == path.resolve()
    assert resolve_model_dir(path.as_uri()) == path.resolve()
    check_diabetes(read_model(path))


def test_local_path_is_copied_when_asked(example_model_dirs, tmp_path):
    copied = resolve_model_dir(example_model_dirs["diabetes"], tmp_path / "copy", copy_local=True)
    assert copied == tmp_path / "copy"
    check_diabetes(read_model(copied))


def test_signature_params_and_input_example(example_model_dirs):
    info = read_model(example_model_dirs["mixed-params"])
    assert info.params is not None and len(info.params.params) > 0
    assert info.loader_module == "mlflow.pyfunc.model"
    no_sig = read_model(example_model_dirs["no-signature"])
    assert no_sig.signature is None and no_sig.inputs is None and no_sig.params is None


def test_directory_without_mlmodel(tmp_path):
    secret = tmp_path / "secret-name"
    secret.mkdir()
    with pytest.raises(InvalidParameter, match="no MLmodel file") as caught:
        resolve_model_dir(str(secret))
    assert "secret-name" not in str(caught.value)


def test_missing_local_path(tmp_path):
    with pytest.raises(NotFound) as caught:
        resolve_model_dir(str(tmp_path / "nowhere-xyz"))
    assert "nowhere-xyz" not in str(caught.value)


def test_model_without_pyfunc_flavor(example_model_dirs, tmp_path):
    path = tmp_path / "sklearn-only"
    shutil.copytree(example_model_dirs["diabetes"], path)
    mlmodel = Model.load(str(path / "MLmodel"))
    del mlmodel.flavors["python_function"]
    mlmodel.save(str(path / "MLmodel"))
    with pytest.raises(InvalidParameter, match="no python_function flavor"):
        read_model(path)


@pytest.mark.parametrize("uri, scheme", [("s3x://bucket/key", "s3x"), ("hdfs:/x/y", "hdfs")])
def test_unknown_scheme(uri, scheme):
    with pytest.raises(InvalidParameter) as caught:
        resolve_model_dir(uri)
    assert f"scheme '{scheme}'" in str(caught.value)
    assert "bucket" not in str(caught.value)


@pytest.mark.parametrize("uri", ["azureml:nover", "azureml://registries/x/models/y/versions/1", ""])
def test_malformed_references(uri):
    with pytest.raises(InvalidParameter):
        to_mlflow_uri(uri)


@pytest.mark.parametrize(
    "uri, what",
    [
        ("models:/no-such-model-zz/1", "The registered model named"),
        ("models:/diabetes/97", "The registered model version named"),
        ("models:/diabetes@no-such-alias-zz", "The registered model alias named"),
        ("azureml:diabetes:97", "The registered model version named"),
    ],
)
def test_missing_registry_entries(example_models, tmp_path, uri, what):
    with pytest.raises(NotFound, match=what) as caught:
        load_model(uri, tmp_path / "dl")
    assert "zz" not in str(caught.value) and "97" not in str(caught.value)


def test_missing_run(example_models, tmp_path):
    with pytest.raises(NotFound, match="run named by the runs: model URI does not exist"):
        load_model("runs:/0123456789abcdef0123456789abcdef/model", tmp_path / "dl")


def test_missing_artifact_path_in_run(diabetes_run_id, tmp_path):
    with pytest.raises(NotFound, match="artifact path"):
        load_model(f"runs:/{diabetes_run_id}/not-there", tmp_path / "dl")
