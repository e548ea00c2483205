"""Models whose predict starts native thread pools (OpenMP: scikit-learn's HistGradientBoosting,
LightGBM) serve from forked gunicorn workers: nothing runs a prediction in a process that later
forks (libgomp's pool does not survive a fork: the child blocks forever in its first parallel
region), so a deployment answers with the in-process predictions with 1 or 2 workers, forked from
the env's fork server or started by exec. That includes the trial prediction that decides whether
a model on double columns is given arrays (predictor.takes_array): made in the worker."""
import pytest
import requests

from example_models.build import shared_requirements
from mlflow_deploy import online
from mlflow_deploy.online import forkserver

pytestmark = pytest.mark.slow

HGB_TREES = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"


def _hgb(folder, on_frame):
    """A HistGradientBoostingClassifier in the example models' env, fitted on an array (a tensor
    signature) or on a DataFrame of double columns (a column signature: the first prediction
    also tries the model on an array); its path, 7 rows and what it predicts for them here."""
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = make_classification(200, 8, random_state=0)
    if on_frame:
        X = pd.DataFrame(X, columns=[f"f{i}" for i in range(8)])
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X, y)
    path = folder / "model"
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(X, model.predict(X)),
                              input_example=X[:3], pip_requirements=shared_requirements(),
                              skops_trusted_types=[HGB_TREES])
    rows = X[:7].round(6)
    return path, rows, model.predict(rows).tolist()


@pytest.fixture(scope="module")
def hgb_model(tmp_path_factory):
    return _hgb(tmp_path_factory.mktemp("hgb"), on_frame=False)


@pytest.fixture(scope="module")
def hgb_frame_model(tmp_path_factory):
    return _hgb(tmp_path_factory.mktemp("hgb-frame"), on_frame=True)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("fork_servers", [True, False], ids=["forked", "exec"])
def test_openmp_model_answers_from_forked_workers(deploy_home, hgb_model, monkeypatch, workers,
                                                  fork_servers):
    if not fork_servers:
        monkeypatch.setenv(forkserver.IDLE_ENV, "0")
    path, rows, expected = hgb_model
    created = online.create_deployment(
        "hgb", str(path), config={"environment_variables": {"WORKER_COUNT": workers}})
    assert created["provisioning_state"] == "Succeeded"
    for _ in range(2 * workers):  # every worker answers, none is stuck in its thread pool
        answer = requests.post(created["scoring_uri"], json={"input_data": rows.tolist()},
                               timeout=20)
        assert answer.status_code == 200, answer.text
        assert answer.json() == expected


def test_a_model_on_double_columns_answers_from_forked_workers(deploy_home, hgb_frame_model):
    path, rows, expected = hgb_frame_model
    created = online.create_deployment("hgb", str(path),
                                       config={"environment_variables": {"WORKER_COUNT": 2}})
    assert created["provisioning_state"] == "Succeeded"
    body = {"input_data": {"columns": list(rows.columns), "index": list(range(len(rows))),
                           "data": rows.values.tolist()}}
    for _ in range(4):
        answer = requests.post(created["scoring_uri"], json=body, timeout=20)
        assert answer.status_code == 200, answer.text
        assert answer.json() == expected
