"""Suite-wide defaults, kept apart from client.py so the pytest plugin can set them cheaply."""
from mlflow_deploy.scoring.options import DEFAULTS, Validation

# `--mlflow-deploy-validation` and `--mlflow-deploy-server` set these for a pytest run; an
# explicit `validation=` or `server=` argument wins.
defaults = {"validation": DEFAULTS.validation.value, "server": False}


def default_validation() -> str:
    return defaults["validation"]


def set_default_validation(mode: str) -> str:
    """Set the suite's default mode; returns the previous one so the caller can restore it."""
    previous, defaults["validation"] = defaults["validation"], Validation.parse(mode).value
    return previous


def default_server() -> bool:
    """Whether the helpers score through a real server (a forked gunicorn worker) by default."""
    return defaults["server"]


def set_default_server(server: bool) -> bool:
    """Set the suite's default; returns the previous one so the caller can restore it."""
    previous, defaults["server"] = defaults["server"], bool(server)
    return previous
