"""Enforce once: for flavors whose pyfunc wrapper only calls the library (DIRECT_LOADERS), the
predictor calls the flavor's predict itself, skipping MLflow's second enforcement inside
PyFuncModel.predict (private API, in predictor.direct_predict only). Runs again on the old stack
(mlflow 2.7.1), so the private attribute is checked on the oldest and newest MLflow."""
import numpy as np
import pandas as pd
import pytest

from mlflow_deploy.scoring import payload, schema
from mlflow_deploy.scoring.predictor import direct_predict


def _enforced(predictor, rows):
    columns = [c.name for c in predictor.signature.columns]
    data = np.random.default_rng(7).normal(size=(rows, len(columns))).round(4).tolist()
    parsed = payload.from_azure_body({"input_data": {"columns": columns,
                                                     "index": list(range(rows)), "data": data}})
    return schema.enforce(parsed, predictor.signature)


def test_a_sklearn_model_predicts_through_its_flavor_without_pyfuncs_second_enforcement(
        predictors, monkeypatch):
    predictor = predictors["diabetes"]
    assert predictor._direct is not None  # the private attribute exists on this MLflow
    enforced = _enforced(predictor, 5)
    expected = predictor.model.predict(enforced.model_input)  # MLflow's public path
    # the public path is not taken: were it called, this prediction would fail
    monkeypatch.setattr(type(predictor.model), "predict",
                        lambda *a, **k: pytest.fail("PyFuncModel.predict was called"))
    got = predictor.predict(enforced.model_input)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_other_flavors_and_params_keep_mlflows_own_predict(predictors):
    assert predictors["quirks"]._direct is None  # a PythonModel: its wrapper converts input
    assert predictors["mixed-params"]._direct is None
    assert direct_predict(predictors["diabetes"].model, "mlflow.pyfunc.model") is None
    assert direct_predict(object(), "mlflow.sklearn") is None  # an MLflow without the attribute


def test_the_heart_classifier_answers_its_example_as_pyfunc_does(predictors):
    predictor = predictors["heart"]
    assert predictor._direct is not None
    frame = pd.DataFrame(predictor.input_example["input_data"]["data"],
                         columns=predictor.input_example["input_data"]["columns"])
    enforced = schema.enforce(payload.from_azure_body({"input_data": {
        "columns": list(frame.columns), "index": list(range(len(frame))),
        "data": frame.values.tolist()}}), predictor.signature)
    np.testing.assert_array_equal(np.asarray(predictor.predict(enforced.model_input)),
                                  np.asarray(predictor.model.predict(enforced.model_input)))
