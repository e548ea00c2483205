"""`python -m mlflow_deploy.scoring.smoke [MODEL_DIR]`: the last step of every env build.

Run by the control plane with the new env's interpreter before the env is cached: it imports what
the scoring server imports and loads the model as the server does (``Predictor.load``), so an env
whose packages resolve but do not import together (an old mlflow beside a new protobuf) fails its
build with the import error instead of a server that dies at its first start. Without a model
folder (a scoring script's env) it imports the server only. Exit 0: the env serves.
"""
import sys


def main(argv) -> int:
    import flask  # noqa: F401  the server's own packages, in the order the server imports them
    import gunicorn  # noqa: F401

    from . import app, pipeline  # noqa: F401

    if argv:
        from .predictor import Predictor

        Predictor.load(argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
