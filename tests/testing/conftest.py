"""Models the testing tools are tried on, beyond the example models: saved once per session."""
import shutil

import pytest
import yaml


@pytest.fixture(scope="session")
def every_type_dir(tmp_path_factory):
    from tests.testing.models import save_every_type

    return save_every_type(tmp_path_factory.mktemp("every-type") / "model")


@pytest.fixture(scope="session")
def dict_output_dir(tmp_path_factory):
    from tests.testing.models import save_dict_output

    return save_dict_output(tmp_path_factory.mktemp("dict-output") / "model")


@pytest.fixture(scope="session")
def fork_shy_dir(tmp_path_factory):
    """A model that predicts in the process that loaded it and fails in a forked worker."""
    from tests.testing.models import save_fork_shy

    return save_fork_shy(tmp_path_factory.mktemp("fork-shy"))


@pytest.fixture
def python_399_dir(example_model_dirs, tmp_path):
    """A copy of the diabetes model that asks for a Python no machine has."""
    path = tmp_path / "diabetes-py399"
    shutil.copytree(example_model_dirs["diabetes"], path)
    env_file = path / "python_env.yaml"
    env = yaml.safe_load(env_file.read_text())
    env["python"] = "3.99.0"
    env_file.write_text(yaml.safe_dump(env))
    mlmodel = path / "MLmodel"
    meta = yaml.safe_load(mlmodel.read_text())
    meta["flavors"]["python_function"]["python_version"] = "3.99.0"
    mlmodel.write_text(yaml.safe_dump(meta))
    return str(path)
