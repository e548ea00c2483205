import pytest

from mlflow_deploy.scoring.predictor import Predictor


@pytest.fixture(scope="session")
def quirks_dir(tmp_path_factory):
    from tests.scoring import quirks

    return quirks.save(tmp_path_factory.mktemp("quirks") / "model")


@pytest.fixture(scope="session")
def predictors(example_model_dirs, quirks_dir):
    """name -> Predictor, loaded once (in this interpreter)."""
    loaded = {name: Predictor.load(path) for name, path in example_model_dirs.items()}
    loaded["quirks"] = Predictor.load(quirks_dir)
    return loaded


@pytest.fixture(scope="session")
def digits_model_dir(tmp_path_factory):
    """The digits example (batch's image example) saved once as a plain MLflow model folder."""
    from example_models.digits import build

    return build.save(str(tmp_path_factory.mktemp("digits-model")))


@pytest.fixture(scope="session")
def digits_images(tmp_path_factory):
    """A folder of 30 PNGs rendered from the digits dataset, named `<index>-<label>.png`."""
    from example_models.digits import build

    folder = tmp_path_factory.mktemp("digits-images")
    build.render_images(str(folder), count=30)
    return folder
