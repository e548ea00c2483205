"""Scoring script for an MLflow classifier that answers probabilities instead of classes.

Azure's "customize inference with a scoring script" for MLflow models (seed 003): deploy the
MLflow model folder together with this script, e.g. the `heart` example model:
    -m path/to/heart/model -C code=example_models/scripts/postprocess -C scoring_script=score.py
and the deployment finds the model at $AZUREML_MODEL_DIR/model/MLmodel.

Request:  {"input_data": {"columns": [...], "index": [...], "data": [[...], ...]}}
Response: {"classes": [...], "probabilities": [[...], ...]}  one row of probabilities per input row
"""
import json
import os

import mlflow.sklearn
import pandas as pd


def find_mlflow_model(root):
    """The folder holding MLmodel: AZUREML_MODEL_DIR itself or one folder below it."""
    candidates = [root] + [os.path.join(root, name) for name in sorted(os.listdir(root))]
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "MLmodel")):
            return folder
    raise FileNotFoundError("no MLmodel file in AZUREML_MODEL_DIR or the folders in it")


def init():
    global model
    model = mlflow.sklearn.load_model(find_mlflow_model(os.environ["AZUREML_MODEL_DIR"]))
    print("loaded a {} with classes {}".format(type(model).__name__, model.classes_.tolist()))


def run(raw_data):
    body = json.loads(raw_data)
    if "input_data" not in body:
        raise ValueError("Request must contain a top level key named 'input_data'")
    frame = pd.DataFrame(**body["input_data"])  # split orientation: columns, index, data
    return {"classes": model.classes_.tolist(),
            "probabilities": model.predict_proba(frame).tolist()}
