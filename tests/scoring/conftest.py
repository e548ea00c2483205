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
