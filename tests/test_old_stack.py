"""The scoring core on the oldest stack it promises (DESIGN §2): Python 3.10, mlflow 2.7.1,
pandas 1.5, numpy 1.23 and no orjson, as the seed's example model pins. The scoring tests run
again in that environment, against models logged there with mlflow 2."""
import glob
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD_VENV = os.path.join(ROOT, ".venv-old-stack")
OLD_STACK = ["mlflow==2.7.1", "pandas==1.5.3", "numpy==1.23.5", "scikit-learn==1.1.2",
             "scipy==1.10.1", "flask<3", "gunicorn", "pyyaml", "click",
             # mlflow 2.7 imports pkg_resources; its own requirements do not say so
             "setuptools<70",
             "pytest", "pytest-timeout", "hypothesis", "requests"]


def python310():
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10.*/bin/python3.10")))
    return found[-1] if found else shutil.which("python3.10")


@pytest.mark.slow
def test_scoring_suite_passes_on_the_old_stack():
    interpreter = python310()
    uv = shutil.which("uv")
    if not interpreter or not uv:
        pytest.skip("needs a Python 3.10 interpreter and uv on this machine")
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
    python = os.path.join(OLD_VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([uv, "venv", "-q", "-p", interpreter, OLD_VENV], check=True, env=env)
    subprocess.run([uv, "pip", "install", "-q", "--compile-bytecode", "-p", python] + OLD_STACK,
                   check=True, env=env)
    subprocess.run([uv, "pip", "install", "-q", "-p", python, "--no-deps", "-e", ROOT],
                   check=True, env=env)
    versions = subprocess.run(
        [python, "-c", "import sys, mlflow, pandas, numpy; print(sys.version_info[:2], "
         "mlflow.__version__, pandas.__version__, numpy.__version__)"],
        check=True, capture_output=True, text=True).stdout
    assert "(3, 10) 2.7.1 1.5.3 1.23.5" in versions
    run = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          os.path.join(ROOT, "tests", "scoring")],
                         cwd=ROOT, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items()
                              if not k.startswith(("MLFLOW_", "PYTEST_"))})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    print(run.stdout.strip().splitlines()[-1], file=sys.stderr)
