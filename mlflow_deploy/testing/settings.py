"""Suite-wide defaults, kept apart from client.py so the pytest plugin can set them cheaply."""
from mlflow_deploy.scoring.options import DEFAULTS, Validation

# `--mlflow-deploy-validation` sets this for a pytest run; an explicit `validation=` argument wins.
defaults = {"validation": DEFAULTS.validation.value}


def default_validation() -> str:
    return defaults["validation"]


def set_default_validation(mode: str) -> str:
    """Set the suite's default mode; returns the previous one so the caller can restore it."""
    previous, defaults["validation"] = defaults["validation"], Validation.parse(mode).value
    return previous
