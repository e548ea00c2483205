"""Train and log the example models.

    python -m example_models.build                      # log + register into $MLFLOW_TRACKING_URI
    python -m example_models.build --save-to DIR        # plain model folders (no tracking store)

Each model exercises one payload form of Azure ML no-code deployment (docs/ARCHITECTURE.md):
  diabetes      column signature, 10 double columns (the seed MLmodel), scikit-learn regression
  heart         column signature, 12 long/double columns (the seed's split example), classifier
  iris-tensor   one unnamed tensor (-1, 4) float64, classifier
  tokens-mask   named tensors tokens/mask int64 (-1, 12), pyfunc
  mixed-params  long/double/string columns, an optional column and a params schema, pyfunc
  no-signature  a regression logged without signature or input example
Runs on mlflow 2.x and 3.x (the old-stack test logs them with mlflow 2).
"""
import argparse
import inspect
import os
import sys

import numpy as np
import pandas as pd

HEART_COLUMNS = ["age", "sex", "trestbps", "chol", "fbs", "restecg", "thalach", "exang",
                 "oldpeak", "slope", "ca", "thal"]
NAMES = ("diabetes", "heart", "iris-tensor", "tokens-mask", "mixed-params", "no-signature")


def _diabetes():
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return Ridge(alpha=0.1).fit(X, y), X


def _diabetes_arrays():
    """The same regression fitted on a bare array: no feature names, as models without
    signatures usually are."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True)
    return Ridge(alpha=0.1).fit(X, y)


def _heart():
    """Synthetic rows shaped like the UCI heart data of the seed's payload example."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n = 400
    X = pd.DataFrame({
        "age": rng.integers(29, 78, n), "sex": rng.integers(0, 2, n),
        "trestbps": rng.integers(94, 200, n), "chol": rng.integers(126, 564, n),
        "fbs": rng.integers(0, 2, n), "restecg": rng.integers(0, 3, n),
        "thalach": rng.integers(71, 202, n), "exang": rng.integers(0, 2, n),
        "oldpeak": rng.uniform(0, 6.2, n).round(1), "slope": rng.integers(0, 3, n),
        "ca": rng.integers(0, 4, n), "thal": rng.integers(0, 4, n),
    })[HEART_COLUMNS].astype({c: "int64" for c in HEART_COLUMNS if c != "oldpeak"})
    y = ((X["age"] / 80 + X["chol"] / 600 + X["oldpeak"] / 6 + rng.normal(0, 0.2, n)) > 1.4)
    return LogisticRegression(max_iter=2000).fit(X, y.astype("int64")), X


def _iris():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=1000).fit(X, y), X


def _pyfunc_models():
    """Defined lazily: mlflow.pyfunc is only imported when the models are built."""
    import mlflow.pyfunc

    class TokensMask(mlflow.pyfunc.PythonModel):
        """Counts the unmasked tokens and sums their ids: a stand-in for a text model."""

        def predict(self, context, model_input, params=None):
            tokens = np.asarray(model_input["tokens"], dtype=np.int64)
            mask = np.asarray(model_input["mask"], dtype=np.int64)
            return pd.DataFrame({"kept": mask.sum(axis=1), "id_sum": (tokens * mask).sum(axis=1)})

    class MixedParams(mlflow.pyfunc.PythonModel):
        """Price lines with params: scale multiplies, suffix is appended to the label."""

        def predict(self, context, model_input, params=None):
            params = params or {}
            scale = float(params.get("scale", 1.0))
            suffix = str(params.get("suffix", ""))
            discount = model_input["discount"] if "discount" in model_input else 0.0
            total = model_input["count"] * model_input["price"] * scale - discount
            return pd.DataFrame({"total": total.astype("float64"),
                                 "label": model_input["label"].astype(str) + suffix})

    return TokensMask(), MixedParams()


def _signatures():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    iris = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float64), (-1, 4))]),
                          outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]))
    tokens = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.int64), (-1, 12), "tokens"),
                       TensorSpec(np.dtype(np.int64), (-1, 12), "mask")]),
        outputs=Schema([ColSpec("long", "kept"), ColSpec("long", "id_sum")]))
    # mlflow >= 2.10 spells it `required=False`, earlier 2.x `optional=True`
    takes = inspect.signature(ColSpec.__init__).parameters
    optional = {"required": False} if "required" in takes else {"optional": True}
    mixed = ModelSignature(
        inputs=Schema([ColSpec("long", "count"), ColSpec("double", "price"),
                       ColSpec("string", "label"), ColSpec("double", "discount", **optional)]),
        outputs=Schema([ColSpec("double", "total"), ColSpec("string", "label")]),
        params=ParamSchema([ParamSpec("scale", "double", 1.0), ParamSpec("suffix", "string", "")]))
    return iris, tokens, mixed


def _models():
    """name -> (flavor module, model, kwargs for log/save_model)."""
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import infer_signature

    iris_sig, tokens_sig, mixed_sig = _signatures()
    diabetes, Xd = _diabetes()
    heart, Xh = _heart()
    iris, Xi = _iris()
    tokens_mask, mixed_params = _pyfunc_models()
    no_sig = _diabetes_arrays()
    tokens_example = {"tokens": np.array([[0, 655, 85, 5, 23, 84, 23, 52, 856, 5, 23, 1]]),
                      "mask": np.array([[0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]])}
    mixed_example = pd.DataFrame({"count": [2, 5], "price": [9.99, 1.5], "label": ["pen", "ink"]})
    return {
        "diabetes": (mlflow.sklearn, diabetes, dict(
            signature=infer_signature(Xd, diabetes.predict(Xd)), input_example=Xd.head(3))),
        "heart": (mlflow.sklearn, heart, dict(
            signature=infer_signature(Xh, heart.predict(Xh)), input_example=Xh.head(2))),
        "iris-tensor": (mlflow.sklearn, iris, dict(signature=iris_sig, input_example=Xi[:2])),
        "tokens-mask": (mlflow.pyfunc, tokens_mask, dict(
            signature=tokens_sig, input_example=tokens_example)),
        "mixed-params": (mlflow.pyfunc, mixed_params, dict(
            signature=mixed_sig, input_example=mixed_example)),
        "no-signature": (mlflow.sklearn, no_sig, {}),
    }


def shared_requirements():
    """One requirement list for every example model, pinned to what trained them.

    Given explicitly so MLflow skips its slow requirement inference (a subprocess per model) and
    so all the examples resolve to one locked environment.
    """
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in ("mlflow", "cloudpickle", "numpy", "pandas", "scikit-learn", "scipy", "skops"):
        try:
            pins.append("{}=={}".format(dist, version(dist)))
        except PackageNotFoundError:
            pass
    return pins


def _model_arg(flavor, model):
    return {"python_model": model} if flavor.__name__ == "mlflow.pyfunc" else {"sk_model": model}


def save_all(out_dir):
    """Save every example model as a plain folder out_dir/<name>; returns name -> path."""
    requirements = shared_requirements()
    paths = {}
    for name, (flavor, model, kwargs) in _models().items():
        path = os.path.join(out_dir, name)
        if not os.path.exists(os.path.join(path, "MLmodel")):
            flavor.save_model(path=path, **_model_arg(flavor, model),
                              pip_requirements=requirements, **kwargs)
        paths[name] = path
    return paths


def log_all(tracking_uri=None):
    """Log and register every example model once; returns name -> 'models:/<name>/1'.

    Idempotent: a model already registered is left alone, so `make example-models` can rerun.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    experiment = "example-models"
    if mlflow.get_experiment_by_name(experiment) is None:
        artifacts = os.environ.get("MLFLOW_ARTIFACT_ROOT")
        mlflow.create_experiment(experiment, artifact_location=artifacts)
    mlflow.set_experiment(experiment)
    requirements = shared_requirements()
    uris = {}
    for name, (flavor, model, kwargs) in _models().items():
        try:
            client.get_model_version(name, "1")
        except MlflowException:
            with mlflow.start_run(run_name=name):
                log_params = inspect.signature(flavor.log_model).parameters
                where = {"name": "model"} if "name" in log_params else {"artifact_path": "model"}
                flavor.log_model(**where, **_model_arg(flavor, model),
                                 registered_model_name=name,
                                 pip_requirements=requirements, **kwargs)
        uris[name] = "models:/{}/1".format(name)
    return uris


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save-to", help="save plain model folders here instead of logging")
    args = parser.parse_args(argv)
    if args.save_to:
        for name, path in save_all(args.save_to).items():
            print("{:14s} {}".format(name, path))
    else:
        for name, uri in log_all().items():
            print("{:14s} {}".format(name, uri))
    return 0


if __name__ == "__main__":
    sys.exit(main())
