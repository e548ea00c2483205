"""Fixtures of the batch worker's tests: a real model environment (the example models' one,
built once into the suite's shared env cache) and the models scored in it."""
import pytest


@pytest.fixture(scope="session")
def model_python(example_model_dirs, shared_env_cache):
    """The interpreter of the example models' environment (they share one lock), built or
    reused in the suite's shared env cache through the same prepare_environment as a
    deployment: the worker runs the checkout's scoring/ as that env has it installed."""
    from mlflow_deploy.envs import prepare_environment

    return prepare_environment(example_model_dirs["diabetes"]).python


@pytest.fixture(scope="session")
def image_model_dir(digits_model_dir, tmp_path_factory):
    import mlflow.models

    from tests.batch.models import save_image_model

    if not hasattr(mlflow.models, "set_model"):  # the oldest supported stack (mlflow 2.7)
        pytest.skip("the image model is saved as models-from-code, which needs mlflow 2.12+")

    return save_image_model(tmp_path_factory.mktemp("image-model") / "model", digits_model_dir)
