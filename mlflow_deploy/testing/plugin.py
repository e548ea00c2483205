"""The pytest plugin, loaded through the ``pytest11`` entry point wherever mlflow-deploy is installed.

It gives a suite the ``scoring_client`` fixture, the ``payloads`` marker and the
``--mlflow-deploy-validation`` and ``--mlflow-deploy-server`` options. It imports nothing heavy at load time: every pytest run on
the machine loads it, and most never score a model.
"""
import glob
import os
from pathlib import Path
from typing import List, Optional

import pytest

from mlflow_deploy.scoring.options import MODES

from .settings import set_default_server, set_default_validation

MARKER = ("payloads(*globs, model=None): run the test once per payload file matching the globs "
          "(relative to the test file's folder); the test receives `payload`, a PayloadFile "
          "that scores its bytes against `model` (a model URI or a folder)")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlflow-deploy", "scoring MLflow models like Azure ML")
    group.addoption("--mlflow-deploy-validation", choices=MODES, default=None,
                    dest="mlflow_deploy_validation",
                    help="default validation mode of mlflow_deploy.testing for this run "
                         "(an explicit validation= argument wins; default: compatible)")
    group.addoption("--mlflow-deploy-server", action="store_true", default=False,
                    dest="mlflow_deploy_server",
                    help="mlflow_deploy.testing scores through a real server (gunicorn, a forked "
                         "worker; one per model, kept for the run) instead of in process (an "
                         "explicit server= argument wins)")


_PREVIOUS_MODE = pytest.StashKey[str]()
_PREVIOUS_SERVER = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)
    mode = config.getoption("mlflow_deploy_validation", default=None)
    if mode:
        config.stash[_PREVIOUS_MODE] = set_default_validation(mode)
    if config.getoption("mlflow_deploy_server", default=False):
        config.stash[_PREVIOUS_SERVER] = set_default_server(True)


def pytest_unconfigure(config: pytest.Config) -> None:
    # pytester runs nested sessions in one interpreter: hand the outer one its defaults back
    if _PREVIOUS_MODE in config.stash:
        set_default_validation(config.stash[_PREVIOUS_MODE])
    if _PREVIOUS_SERVER in config.stash:
        set_default_server(config.stash[_PREVIOUS_SERVER])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("payloads")
    if marker is None:
        return
    if "payload" not in metafunc.fixturenames:
        raise pytest.UsageError("@pytest.mark.payloads needs the test to take a `payload` argument")
    folder = Path(str(metafunc.definition.path)).parent
    patterns = marker.args or ("*.json",)
    files = _matching(folder, patterns)
    if not files:
        raise pytest.UsageError("@pytest.mark.payloads: no payload file matches the globs given "
                                "to {} (they are relative to the test file's folder)".format(
                                    metafunc.definition.nodeid))
    model = _model(marker.kwargs.get("model"), folder)
    from .client import PayloadFile

    metafunc.parametrize("payload", [PayloadFile(path, model) for path in files],
                         ids=[_case_id(path, folder) for path in files])


def _matching(folder: Path, patterns) -> List[Path]:
    found = set()
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        full = pattern if os.path.isabs(pattern) else os.path.join(str(folder), pattern)
        found.update(Path(p) for p in glob.glob(full, recursive=True) if os.path.isfile(p))
    return sorted(found)


def _model(model: Optional[str], folder: Path) -> Optional[str]:
    """A relative folder is relative to the test file, like the globs; URIs stay as they are."""
    if model is None:
        return None
    model = os.fspath(model)
    if ":" not in model and not os.path.isabs(os.path.expanduser(model)):
        return str(folder / model)
    return model


def _case_id(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return path.name


@pytest.fixture
def scoring_client():
    """A factory: ``scoring_client(model_uri, validation=None, server=None)`` -> a
    ``ScoringClient``.

    Models stay loaded (and their servers running) for the whole run, one per URI, whatever the
    fixture's scope.
    """
    from .client import ScoringClient

    def make(model_uri: str, validation: Optional[str] = None,
             server: Optional[bool] = None) -> ScoringClient:
        return ScoringClient(os.fspath(model_uri), validation, server)

    return make
