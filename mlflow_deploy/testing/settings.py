"""Suite-wide defaults, kept apart from client.py so the pytest plugin can set them cheaply."""
VALIDATION_MODES = ("compatible", "strict")

# `--mlflow-deploy-validation` sets this for a pytest run; an explicit `validation=` argument wins.
defaults = {"validation": "compatible"}


def default_validation() -> str:
    return defaults["validation"]


def set_default_validation(mode: str) -> str:
    """Set the suite's default mode; returns the previous one so the caller can restore it."""
    if mode not in VALIDATION_MODES:
        raise ValueError("validation must be one of: " + ", ".join(VALIDATION_MODES))
    previous, defaults["validation"] = defaults["validation"], mode
    return previous
