"""Batch scoring script for the digits model: Azure's MNIST batch_driver.py, for scikit-learn's
8x8 digits.

init() loads the MLflow model under AZUREML_MODEL_DIR once. run(mini_batch) reads each PNG, scales
it to the 64 features the model was trained on (8x8 pixels, values 0..16) and returns one row per
file: the file name, the predicted class and its probability.
"""
import glob
import os
from typing import List

import numpy as np
import pandas as pd
from PIL import Image

SIDE = 8
LEVELS = 16.0
# Pillow >= 9.1 names its filters under Image.Resampling
BOX = getattr(Image, "Resampling", Image).BOX

model = None


def init():
    global model
    import mlflow.sklearn

    # AZUREML_MODEL_DIR is the folder Azure mounts the registered model in: the model folder is
    # inside it under its registered name (or, for a model given as its own folder, is it)
    model = mlflow.sklearn.load_model(find_model(os.environ["AZUREML_MODEL_DIR"]))


def find_model(root: str) -> str:
    if os.path.isfile(os.path.join(root, "MLmodel")):
        return root
    found = sorted(glob.glob(os.path.join(root, "*", "MLmodel")))
    if not found:
        raise FileNotFoundError("no MLflow model (a folder with an MLmodel file) in "
                                "AZUREML_MODEL_DIR")
    return os.path.dirname(found[0])


def features(path: str) -> np.ndarray:
    """Any grayscale or colour image -> 8x8 box-averaged pixels on the dataset's 0..16 scale."""
    with Image.open(path) as image:
        small = image.convert("L").resize((SIDE, SIDE), BOX)
    return np.asarray(small, dtype=np.float64).reshape(-1) * LEVELS / 255.0


def run(mini_batch: List[str]) -> pd.DataFrame:
    print("Executing run method over batch of {} files.".format(len(mini_batch)))
    X = np.stack([features(path) for path in mini_batch])
    probabilities = model.predict_proba(X)
    best = probabilities.argmax(axis=1)
    return pd.DataFrame({
        "file": [os.path.basename(path) for path in mini_batch],
        "class": model.classes_[best],
        "probability": probabilities[np.arange(len(best)), best],
    })
