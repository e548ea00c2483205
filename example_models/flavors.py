"""The flavor matrix: one small real model for each flavor users log most.

    python -m example_models.flavors --save-to DIR          # plain model folders
    python -m example_models.flavors --heavy --save-to DIR  # PyTorch, TensorFlow, transformers
    python -m example_models.flavors                        # log + register ($MLFLOW_TRACKING_URI)

Each model comes with an input example (and a signature inferred from it, or given where the
flavor needs one), so a deployment can be scored with the model's own example and the answer
compared with the pyfunc's prediction in-process (tests/flavors).

The models of a group share ONE explicit requirement list pinned to the versions that trained
them (requirements()): MLflow then infers nothing (a subprocess per model), and the whole group
resolves to one locked environment, built once. The heavy group (torch, TensorFlow, transformers)
has its own list: its libraries weigh gigabytes and are installed only by `make test-flavors`.
"""
import argparse
import inspect
import os
import sys
import tempfile

import numpy as np
import pandas as pd

#: The flavors the test suite serves (`make test`).
SUITE = ("sklearn-linear", "sklearn-forest", "sklearn-hgb", "sklearn-pipeline", "xgboost",
         "lightgbm", "catboost", "statsmodels", "onnx", "pyfunc-params", "pyfunc-text")
#: The flavors whose libraries are too heavy for the suite (`make test-flavors`).
HEAVY = ("pytorch", "tensorflow", "transformers")

BASE_DISTRIBUTIONS = ("mlflow", "cloudpickle", "numpy", "pandas", "scikit-learn", "scipy", "skops")
#: What serving the suite's models needs besides the base (skl2onnx only converts: not served).
SUITE_DISTRIBUTIONS = (("xgboost-cpu", "xgboost"), "lightgbm", "catboost", "statsmodels", "onnx",
                       "onnxruntime")
HEAVY_DISTRIBUTIONS = ("torch", ("tensorflow-cpu", "tensorflow"), "transformers")

# scikit-learn models are saved with skops, which loads only the types it is told to trust
# beyond its defaults: these are the ones our forests and gradient boosting need.
FOREST_TYPES = ["sklearn.tree._tree.Tree"]
HGB_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]

CITIES = ["Lyon", "Oslo", "Lima", "Pune"]


def requirements(heavy=False):
    """The group's requirement list, pinned to what is installed here (a distribution given as
    alternatives pins the first one installed: xgboost-cpu is the same module as xgboost without
    the CUDA build)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for entry in BASE_DISTRIBUTIONS + (HEAVY_DISTRIBUTIONS if heavy else SUITE_DISTRIBUTIONS):
        for dist in (entry,) if isinstance(entry, str) else entry:
            try:
                pins.append("{}=={}".format(dist, version(dist)))
                break
            except PackageNotFoundError:
                continue
        else:
            raise RuntimeError("{} is not installed: `make setup` installs the suite's flavor "
                               "libraries, `make test-flavors` the heavy ones".format(entry))
    return pins


def _frame(n=200, seed=0):
    """Numeric columns, a long column and a string column; y depends on all of them."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "x1": rng.normal(0, 1, n), "x2": rng.uniform(-2, 2, n), "x3": rng.normal(5, 2, n),
        "rooms": rng.integers(1, 6, n).astype("int64"),
        "city": rng.choice(CITIES, n),
    })
    city_effect = X["city"].map(dict(zip(CITIES, [0.0, 1.5, -1.0, 0.5])))
    y = 2 * X["x1"] - X["x2"] + 0.3 * X["x3"] + 0.5 * X["rooms"] + city_effect \
        + rng.normal(0, 0.3, n)
    return X, y


def _numeric(X):
    return X[["x1", "x2", "x3", "rooms"]].astype({"rooms": "float64"})


def _sig(example, output):
    from mlflow.models import infer_signature

    return infer_signature(example, output)


def _sklearn_linear():
    import mlflow.sklearn
    from sklearn.linear_model import Ridge

    X, y = _frame()
    X = _numeric(X)
    model = Ridge(alpha=0.5).fit(X, y)
    example = X.head(3)
    return mlflow.sklearn, {"sk_model": model}, dict(
        signature=_sig(example, model.predict(example)), input_example=example)


def _sklearn_forest():
    import mlflow.sklearn
    from sklearn.ensemble import RandomForestRegressor

    X, y = _frame()
    X = _numeric(X)
    model = RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0).fit(X, y)
    example = X.head(3)
    return mlflow.sklearn, {"sk_model": model}, dict(
        signature=_sig(example, model.predict(example)), input_example=example,
        skops_trusted_types=FOREST_TYPES)


def _sklearn_hgb():
    """A classifier with string classes, answering probabilities (pyfunc_predict_fn)."""
    import mlflow.sklearn
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = _frame()
    X = _numeric(X)
    labels = np.where(y > y.median(), "high", "low")
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X, labels)
    example = X.head(3)
    return mlflow.sklearn, {"sk_model": model}, dict(
        signature=_sig(example, model.predict_proba(example)), input_example=example,
        pyfunc_predict_fn="predict_proba", skops_trusted_types=HGB_TYPES)


def _sklearn_pipeline():
    """One-hot encoded strings and scaled numbers (a ColumnTransformer) before a classifier."""
    import mlflow.sklearn
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = _frame()
    prep = ColumnTransformer([
        ("city", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ("num", StandardScaler(), ["x1", "x2", "x3", "rooms"]),
    ])
    model = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=1000))])
    model.fit(X, (y > y.median()).astype("int64"))
    example = X.head(3)
    return mlflow.sklearn, {"sk_model": model}, dict(
        signature=_sig(example, model.predict_proba(example)), input_example=example,
        pyfunc_predict_fn="predict_proba")


def _xgboost():
    import mlflow.xgboost
    import xgboost as xgb

    X, y = _frame()
    X = _numeric(X)
    model = xgb.XGBRegressor(n_estimators=20, max_depth=3, n_jobs=1, random_state=0).fit(X, y)
    example = X.head(3)
    return mlflow.xgboost, {"xgb_model": model}, dict(
        signature=_sig(example, model.predict(example)), input_example=example)


def _lightgbm():
    """A native Booster (lgb.train), binary: it predicts probabilities."""
    import lightgbm as lgb
    import mlflow.lightgbm

    X, y = _frame()
    X = _numeric(X)
    data = lgb.Dataset(X, label=(y > y.median()).astype("int64"))
    model = lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1,
                       "seed": 0}, data, num_boost_round=20)
    example = X.head(3)
    return mlflow.lightgbm, {"lgb_model": model}, dict(
        signature=_sig(example, model.predict(example)), input_example=example)


def _catboost():
    """A regressor with a categorical string feature."""
    import mlflow.catboost
    from catboost import CatBoostRegressor

    X, y = _frame()
    model = CatBoostRegressor(iterations=30, depth=3, random_seed=0, verbose=False,
                              thread_count=1, allow_writing_files=False)
    model.fit(X, y, cat_features=["city"])
    example = X.head(3)
    return mlflow.catboost, {"cb_model": model}, dict(
        signature=_sig(example, model.predict(example)), input_example=example)


def _statsmodels():
    """An OLS fitted from a formula (a categorical term included): it predicts from a frame."""
    import mlflow.statsmodels
    import statsmodels.formula.api as smf

    X, y = _frame()
    model = smf.ols("y ~ x1 + x2 + x3 + rooms + C(city)", data=X.assign(y=y)).fit()
    example = X.head(3)
    return mlflow.statsmodels, {"statsmodels_model": model}, dict(
        signature=_sig(example, model.predict(example)), input_example=example)


def _onnx():
    """A scikit-learn classifier converted with skl2onnx: one float32 tensor in, two out
    (labels and probabilities, without the ZipMap that turns them into dictionaries)."""
    import mlflow.onnx
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    X, y = _frame()
    X = _numeric(X).to_numpy(dtype=np.float32)
    model = LogisticRegression(max_iter=1000).fit(X, (y > np.median(y)).astype("int64"))
    onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    return mlflow.onnx, {"onnx_model": onx}, dict(input_example=X[:3])


def _pyfunc_params():
    """A custom pyfunc whose params schema the request fills (scale, suffix)."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    class Quote(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            params = params or {}
            total = model_input["count"] * model_input["price"] * float(params.get("scale", 1.0))
            return pd.DataFrame({"total": total.astype("float64"),
                                 "label": model_input["label"] + str(params.get("suffix", ""))})

    signature = ModelSignature(
        inputs=Schema([ColSpec("long", "count"), ColSpec("double", "price"),
                       ColSpec("string", "label")]),
        outputs=Schema([ColSpec("double", "total"), ColSpec("string", "label")]),
        params=ParamSchema([ParamSpec("scale", "double", 1.0), ParamSpec("suffix", "string", "")]))
    example = pd.DataFrame({"count": [2, 5], "price": [9.99, 1.5], "label": ["pen", "ink"]})
    return mlflow.pyfunc, {"python_model": Quote()}, dict(
        signature=signature, input_example=(example, {"scale": 2.5, "suffix": "-eu"}))


def _pyfunc_text():
    """A custom pyfunc over text, logged as text models are: its input example a list of strings,
    from which MLflow infers one unnamed string column."""
    import mlflow.pyfunc

    class WordCount(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            texts = (model_input.iloc[:, 0] if isinstance(model_input, pd.DataFrame)
                     else pd.Series(list(model_input)))
            return texts.str.split().str.len().to_numpy(dtype="int64")

    example = ["it was a good movie", "not a very good day", "bad"]
    return mlflow.pyfunc, {"python_model": WordCount()}, dict(
        signature=_sig(example, np.array([5, 5, 1])), input_example=example)


def _pytorch():
    import mlflow.pytorch
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    model.eval()
    X, _ = _frame()
    example = _numeric(X).to_numpy(dtype=np.float32)[:3]
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    return mlflow.pytorch, {"pytorch_model": model}, dict(
        signature=_sig(example, output), input_example=example)


def _tensorflow():
    """A Keras model (TensorFlow backend), logged with mlflow.tensorflow."""
    import mlflow.tensorflow
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(8, activation="relu"),
                                 tf.keras.layers.Dense(3)])
    X, _ = _frame()
    example = _numeric(X).to_numpy(dtype=np.float32)[:3]
    return mlflow.tensorflow, {"model": model}, dict(
        signature=_sig(example, model.predict(example, verbose=0)), input_example=example)


#: The tiny tokenizer's vocabulary: special tokens, then whole words.
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "day", "movie",
         "very", "not", "the", "was", "it"]


def _transformers():
    """A text-classification pipeline around a BERT of a tiny configuration, with random weights
    and a word-level vocabulary written here: nothing is downloaded."""
    import mlflow.transformers
    import torch
    from transformers import (BertConfig, BertForSequenceClassification, BertTokenizerFast,
                              pipeline)

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                        initializer_range=0.5, num_labels=2,
                        id2label={0: "NEGATIVE", 1: "POSITIVE"},
                        label2id={"NEGATIVE": 0, "POSITIVE": 1})
    model = BertForSequenceClassification(config).eval()
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers >= 5
        tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)},
                                      model_max_length=32)
    else:  # 4.x reads the vocabulary from a file only
        with tempfile.TemporaryDirectory() as folder:
            vocab = os.path.join(folder, "vocab.txt")
            with open(vocab, "w", encoding="utf-8") as f:
                f.write("\n".join(VOCAB) + "\n")
            tokenizer = BertTokenizerFast(vocab_file=vocab, model_max_length=32)
    classifier = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    example = ["it was a good movie", "not a very good day"]
    return mlflow.transformers, {"transformers_model": classifier}, dict(
        input_example=example, task="text-classification")


BUILDERS = {
    "sklearn-linear": _sklearn_linear, "sklearn-forest": _sklearn_forest,
    "sklearn-hgb": _sklearn_hgb, "sklearn-pipeline": _sklearn_pipeline, "xgboost": _xgboost,
    "lightgbm": _lightgbm, "catboost": _catboost, "statsmodels": _statsmodels, "onnx": _onnx,
    "pyfunc-params": _pyfunc_params, "pyfunc-text": _pyfunc_text, "pytorch": _pytorch,
    "tensorflow": _tensorflow, "transformers": _transformers,
}


def build(name):
    """name -> (flavor module, the model argument of its save/log_model, other kwargs)."""
    return BUILDERS[name]()


def save(name, path, pip_requirements=None):
    """Save one matrix model as a plain folder at ``path`` (left alone if already there)."""
    if not os.path.exists(os.path.join(path, "MLmodel")):
        flavor, model, kwargs = build(name)
        if pip_requirements is None:
            pip_requirements = requirements(heavy=name in HEAVY)
        flavor.save_model(path=path, **model, pip_requirements=pip_requirements, **kwargs)
    return path


def save_all(out_dir, names=SUITE):
    """Save the named models as out_dir/<name>; returns name -> path."""
    pins = {}
    paths = {}
    for name in names:
        heavy = name in HEAVY
        if heavy not in pins:
            pins[heavy] = requirements(heavy)
        paths[name] = save(name, os.path.join(out_dir, name), pins[heavy])
    return paths


def log_all(names=SUITE, tracking_uri=None):
    """Log and register the named models once (as `flavor-<name>`); returns name -> model URI."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    experiment = "flavor-matrix"
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment,
                                 artifact_location=os.environ.get("MLFLOW_ARTIFACT_ROOT"))
    mlflow.set_experiment(experiment)
    uris = {}
    for name in names:
        registered = "flavor-" + name
        try:
            client.get_model_version(registered, "1")
        except MlflowException:
            flavor, model, kwargs = build(name)
            where = ({"name": "model"} if "name" in inspect.signature(flavor.log_model).parameters
                     else {"artifact_path": "model"})
            with mlflow.start_run(run_name=name):
                flavor.log_model(**where, **model, registered_model_name=registered,
                                 pip_requirements=requirements(heavy=name in HEAVY), **kwargs)
        uris[name] = "models:/{}/1".format(registered)
    return uris


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save-to", help="save plain model folders here instead of logging")
    parser.add_argument("--heavy", action="store_true", help="the heavy flavors instead")
    parser.add_argument("names", nargs="*", help="only these (default: the whole group)")
    args = parser.parse_args(argv)
    names = tuple(args.names) or (HEAVY if args.heavy else SUITE)
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        parser.error("unknown model name; choose from: " + ", ".join(BUILDERS))
    found = save_all(args.save_to, names) if args.save_to else log_all(names)
    for name, where in found.items():
        print("{:18s} {}".format(name, where))
    return 0


if __name__ == "__main__":
    sys.exit(main())
