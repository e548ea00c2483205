"""The oldest stack scoring/ promises, as the seed's example model pins it: Python 3.10,
mlflow 2.7.1, pandas 1.5, numpy 1.23, scikit-learn 1.1.2 and no orjson, in ``.venv-old-stack/``
(built once, kept beside the checkout). Used to run the scoring suite there and to log real
models with mlflow 2.7.1."""
import glob
import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD_VENV = os.path.join(ROOT, ".venv-old-stack")
OLD_STACK = ["mlflow==2.7.1", "pandas==1.5.3", "numpy==1.23.5", "scikit-learn==1.1.2",
             "scipy==1.10.1", "flask<3", "gunicorn", "pyyaml", "click", "prometheus-client",
             # mlflow 2.7 imports pkg_resources; its own requirements do not say so
             "setuptools<70",
             "pytest", "pytest-timeout", "hypothesis", "requests"]


def python310():
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10.*/bin/python3.10")))
    return found[-1] if found else shutil.which("python3.10")


def old_stack_python() -> str:
    """The old stack's interpreter, with this checkout installed (--no-deps); None where this
    machine has no Python 3.10."""
    from mlflow_deploy.envs.runner import find_uv
    from tests.conftest import EXCLUDE_NEWER

    interpreter = python310()
    if not interpreter:
        return None
    uv = find_uv()
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
    python = os.path.join(OLD_VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([uv, "venv", "-q", "-p", interpreter, OLD_VENV], check=True, env=env)
    # the packages left unpinned resolve as the index was on the suite's date, not today
    subprocess.run([uv, "pip", "install", "-q", "--compile-bytecode", "--exclude-newer",
                    EXCLUDE_NEWER, "-p", python] + OLD_STACK, check=True, env=env)
    subprocess.run([uv, "pip", "install", "-q", "-p", python, "--no-deps", "-e", ROOT],
                   check=True, env=env)
    return python
