"""Train the digits classifier, save or log it as an MLflow model, and render its PNG images.

    python -m example_models.digits.build                # log + register into $MLFLOW_TRACKING_URI
    python -m example_models.digits.build --save-to DIR  # a plain model folder DIR/digits
Either way the images go to example_models/digits/images (`--images DIR`, `--count N`).

The data is scikit-learn's 8x8 digits (64 features, each pixel 0..16). The PNGs are 32x32
grayscale, ink white on black as in MNIST, each pixel a 4x4 block; batch_driver.py scales them
back to the 64 features. Images are named `<index>-<label>.png`, so a batch job's predictions can
be checked against the labels.
"""
import argparse
import inspect
import os
import sys

import numpy as np

from example_models.build import shared_requirements

NAME = "digits"
HERE = os.path.dirname(os.path.abspath(__file__))
IMAGES = os.path.join(HERE, "images")
SCALE = 4  # each 8x8 pixel becomes a SCALE x SCALE block
LEVELS = 16  # the dataset's pixel values run 0..16


def train():
    """(model, dataset): a logistic regression on all 1797 images, as the dataset gives them.

    newton-cg converges in about a dozen iterations on the raw 0..16 pixels, where the default
    lbfgs needs over a hundred (seconds against tens of seconds on a busy machine).
    """
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    model = LogisticRegression(solver="newton-cg", max_iter=200)
    return model.fit(digits.data, digits.target), digits


def requirements():
    """The shared pins, plus Pillow for batch_driver.py, which runs in the model's environment."""
    from importlib.metadata import PackageNotFoundError, version

    pins = shared_requirements()
    try:
        pins.append("pillow=={}".format(version("pillow")))
    except PackageNotFoundError:
        pass
    return pins


def _model_kwargs(model, digits):
    from mlflow.models import infer_signature

    X = digits.data
    return dict(sk_model=model, signature=infer_signature(X, model.predict(X)),
                input_example=X[:2], pip_requirements=requirements())


def save(out_dir):
    """Save the model as the plain folder out_dir/digits (kept if already there); its path."""
    import mlflow.sklearn

    path = os.path.join(out_dir, NAME)
    if not os.path.exists(os.path.join(path, "MLmodel")):
        mlflow.sklearn.save_model(path=path, **_model_kwargs(*train()))
    return path


def log(tracking_uri=None):
    """Log and register 'digits' once (a registered version 1 is left alone); its model URI."""
    import mlflow
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    try:
        client.get_model_version(NAME, "1")
    except MlflowException:
        experiment = "example-models"
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment,
                                     artifact_location=os.environ.get("MLFLOW_ARTIFACT_ROOT"))
        mlflow.set_experiment(experiment)
        params = inspect.signature(mlflow.sklearn.log_model).parameters
        where = {"name": "model"} if "name" in params else {"artifact_path": "model"}
        with mlflow.start_run(run_name=NAME):
            mlflow.sklearn.log_model(**where, registered_model_name=NAME,
                                     **_model_kwargs(*train()))
    return "models:/{}/1".format(NAME)


def render_images(out_dir, count=30):
    """Write the dataset's first `count` images as PNGs `<index>-<label>.png`; their paths.

    Pillow comes with mlflow (through matplotlib), so it is here wherever the model is built.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i in range(min(count, len(digits.images))):
        pixels = np.rint(digits.images[i] * 255.0 / LEVELS).astype(np.uint8)
        block = np.kron(pixels, np.ones((SCALE, SCALE), dtype=np.uint8))
        path = os.path.join(out_dir, "{:03d}-{}.png".format(i, digits.target[i]))
        Image.fromarray(block).save(path, format="PNG")
        paths.append(path)
    return paths


def label_of(file_name):
    """The true digit of a rendered image, from its name `<index>-<label>.png`."""
    return int(os.path.splitext(os.path.basename(file_name))[0].split("-")[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save-to", help="save a plain model folder here instead of logging")
    parser.add_argument("--images", default=IMAGES, help="where to render the PNGs")
    parser.add_argument("--count", type=int, default=30, help="how many PNGs to render")
    args = parser.parse_args(argv)
    where = save(args.save_to) if args.save_to else log()
    images = render_images(args.images, args.count)
    print("{:14s} {}".format(NAME, where))
    print("{:14s} {} PNGs in {}".format("images", len(images), args.images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
