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


def test_a_sklearn_model_on_double_columns_is_given_the_frames_own_array(predictors,
                                                                        monkeypatch):
    """scikit-learn's input check on a DataFrame (names, dtypes) was most of a 1-row request;
    the estimator gets the array that check would have made, and predicts the same, bit for
    bit. MLflow before get_raw_model keeps the frame."""
    predictor = predictors["diabetes"]
    assert predictor.frame_as_array() == hasattr(predictor.model, "get_raw_model")
    enforced = _enforced(predictor, 1000)
    expected = predictor.model.predict(enforced.model_input)
    if predictor._as_array:
        estimator = predictor.model.get_raw_model()
        given = []
        real = type(estimator).predict
        monkeypatch.setattr(type(estimator), "predict",
                            lambda self, X, *a, **k: given.append(type(X)) or real(self, X))
    got = predictor.predict(enforced.model_input)  # warnings are errors in this suite
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    if predictor._as_array:
        assert given == [np.ndarray]


def test_a_model_fitted_on_other_columns_or_not_all_double_keeps_the_frame(predictors,
                                                                          tmp_path):
    """An array carries no names: a model fitted with its columns in another order than the
    signature's (which would mis-predict on an array instead of failing) keeps the frame, as do
    signatures with other types than double."""
    mlflow_sklearn = pytest.importorskip("mlflow.sklearn")
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    from mlflow_deploy.scoring.predictor import Predictor

    frame = pd.DataFrame({"b": [0.0, 1.0, 2.0, 3.0], "a": [1.0, 0.0, 1.0, 5.0]})
    model = LinearRegression().fit(frame, [1.0, 2.0, 3.0, 7.0])
    mlflow_sklearn.save_model(model, str(tmp_path / "m"),
                              signature=infer_signature(frame[["a", "b"]]))
    predictor = Predictor.load(str(tmp_path / "m"))
    assert predictor._direct is not None and not predictor.frame_as_array()
    assert not predictors["heart"].frame_as_array()  # integer columns
