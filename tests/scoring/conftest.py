import pytest

from mlflow_deploy.scoring.predictor import Predictor
from tests.conftest import Server


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


@pytest.fixture(scope="session")
def servers(example_model_dirs, quirks_dir, tmp_path_factory):
    """One running server per example model (and the quirks model), shared by the session's
    tests over HTTP (test_server.py, test_fuzz.py): started once."""
    started = {}
    try:
        for name, path in sorted(example_model_dirs.items()) + [("quirks", quirks_dir)]:
            directory = tmp_path_factory.mktemp("srv-" + name)
            settings = {"workers": 2, "request_timeout_ms": 1500} if name == "quirks" else {}
            started[name] = Server(directory, path, model_uri="models:/{}/1".format(name),
                                   deployment=name, max_request_mb=0.05, **settings)
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()
