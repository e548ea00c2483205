"""Fixtures of the batch worker's tests: a real model environment (the example models' one,
built once into the suite's shared env cache) and the models scored in it."""
import pytest


@pytest.fixture(scope="session")
def model_python(example_model_dirs, tmp_path_factory):
    """The interpreter of the example models' environment (they share one lock), built or
    reused through the same prepare_environment as a deployment."""
    from mlflow_deploy.envs import prepare_environment

    home = tmp_path_factory.mktemp("batch-env-home")
    return prepare_environment(example_model_dirs["diabetes"], home=home).python


@pytest.fixture(scope="session")
def image_model_dir(digits_model_dir, tmp_path_factory):
    from tests.batch.models import save_image_model

    return save_image_model(tmp_path_factory.mktemp("image-model") / "model", digits_model_dir)
