"""Scenario models for environment builds, each saved and built once per session.

Models are real MLflow models saved with explicit requirements (so MLflow infers nothing), then
their env files are edited to the scenario (Python version, pins, conda-only). Builds share the
user's uv cache (warm across runs) and one MLFLOW_DEPLOY_HOME for the session.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

MODEL_CODE = textwrap.dedent('''
    import mlflow.models
    import mlflow.pyfunc

    try:  # at load, as a real model's library is: not in the first request's time
        import sklearn
    except ImportError:  # a scenario without scikit-learn
        sklearn = None


    class VersionModel(mlflow.pyfunc.PythonModel):
        """Answers each row with the scikit-learn version it runs with ("none": no sklearn)."""

        def predict(self, context, model_input, params=None):
            return [sklearn.__version__ if sklearn else "none"] * len(model_input)


    mlflow.models.set_model(VersionModel())
''')

#: A model reads sklearn.__version__; the base (dev) env has a newer one than this pin.
OLD_SKLEARN = "scikit-learn==1.5.2"


def save_model(path: Path, requirements, python=None, conda_only=False, conda_dependencies=None):
    """A models-from-code pyfunc at ``path`` whose env files ask for ``requirements``."""
    import mlflow.models
    import mlflow.pyfunc

    code = path.parent / (path.name + "_code.py")
    code.write_text(MODEL_CODE)
    mlflow.pyfunc.save_model(str(path), python_model=str(code), pip_requirements=list(requirements))
    # MLflow adds its own version; these scenarios say exactly what they need (mlflow-skinny is
    # then added by the builder, which keeps the envs small).
    lines = [r for r in (path / "requirements.txt").read_text().splitlines()
             if not r.startswith("mlflow==")]
    (path / "requirements.txt").write_text("".join(l + "\n" for l in lines))
    env = yaml.safe_load((path / "python_env.yaml").read_text())
    if python:
        env["python"] = python
    (path / "python_env.yaml").write_text(yaml.safe_dump(env))
    if conda_only:
        (path / "python_env.yaml").unlink()
        (path / "requirements.txt").unlink()
        conda = {"name": "mlflow-env", "channels": ["conda-forge"],
                 "dependencies": ["python={}".format(python or "3.11")]
                 + list(conda_dependencies or []) + ["pip", {"pip": lines}]}
        (path / "conda.yaml").write_text(yaml.safe_dump(conda))
    return path


@pytest.fixture(scope="session")
def env_home(tmp_path_factory):
    """One MLFLOW_DEPLOY_HOME for the session's builds (envs, locks, resolutions; the project
    wheel is in the suite's build cache, tests/conftest.py)."""
    return tmp_path_factory.mktemp("mlflow-deploy-home")


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("env-models")
    return {
        # python_env.yaml + requirements.txt, Python 3.10, an older scikit-learn than the dev env
        "old_sklearn": save_model(root / "old_sklearn", [OLD_SKLEARN], python="3.10.11"),
        # conda.yaml only: a conda package (mapped) plus the pip: list
        "conda_only": save_model(root / "conda_only", ["cloudpickle"], python="3.11",
                                 conda_only=True, conda_dependencies=["scikit-learn"]),
    }


SEED_MODEL_SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    rng = np.random.RandomState(0)
    X = rng.rand(50, 3)
    model = LinearRegression().fit(X, X @ [1.0, 2.0, 3.0])
    mlflow.sklearn.save_model(model, sys.argv[1], signature=infer_signature(X, model.predict(X)),
                              input_example=X[:2])
''')


@pytest.fixture(scope="session")
def seed_model(tmp_path_factory):
    """A real scikit-learn model logged the way seed 000's example was: Python 3.10, mlflow 2.7.1,
    numpy 1.23.5, scikit-learn 1.1.2 (MLflow 2.7 writes those pins itself; mlflow 2 needs
    setuptools for pkg_resources, which it does not list)."""
    from tests.old_stack import old_stack_python

    python = old_stack_python()
    if python is None:
        pytest.skip("needs a Python 3.10 interpreter on this machine")
    path = tmp_path_factory.mktemp("seed-model") / "model"
    subprocess.run([python, "-c", SEED_MODEL_SCRIPT, str(path)], check=True, timeout=600,
                   env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")})
    return path


@pytest.fixture(scope="session")
def built(env_home, models):
    """name -> Environment, building each scenario env at most once per session."""
    from mlflow_deploy.envs import prepare_environment

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = prepare_environment(models[name], home=env_home)
        return cache[name]

    return get


def run_python(python, code, **kwargs):
    """Run ``code`` with another interpreter; return its stdout (its stderr on failure)."""
    proc = subprocess.run([str(python), "-c", code], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=300, **kwargs)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    return proc.stdout.decode()


def seed_home(source: Path, target: Path) -> Path:
    """A fresh cache home that already has the session's resolutions (no envs; the wheel is in
    the shared build cache): the next build resolves nothing and goes straight to installing."""
    if (source / "envs" / ".resolved").is_dir():
        shutil.copytree(str(source / "envs" / ".resolved"), str(target / "envs" / ".resolved"),
                        ignore=shutil.ignore_patterns(".*"))
    return target


PREPARE_SCRIPT = textwrap.dedent('''
    import json, sys, time
    from mlflow_deploy.envs import prepare_environment
    started = time.monotonic()
    env = prepare_environment(sys.argv[1], home=sys.argv[2], manager=sys.argv[3])
    print(json.dumps({"key": env.key, "built": env.built, "resolved": env.resolved,
                      "python": env.python, "seconds": time.monotonic() - started}))
''')


def prepare_in_subprocess(model_dir, home, manager="uv", wrapper=(), **popen):
    """Start prepare_environment in a child process (optionally under e.g. ``unshare -rn``)."""
    return subprocess.Popen([*wrapper, sys.executable, "-c", PREPARE_SCRIPT, str(model_dir),
                             str(home), manager], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            **popen)


def result_of(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])


# --- offline packages and the `env` CLI (test_package.py, tests/cli/test_env.py) ----------------

def make_sdist(folder: Path, name: str, version: str, broken: bool = False,
               setup_py: str = None) -> Path:
    """A source-only distribution (no wheel anywhere), written by hand: building it needs only
    setuptools. ``broken``: its metadata builds (so it resolves) but its wheel build fails.
    ``setup_py``: a setup.py of the caller's (e.g. a build that waits for the test)."""
    import io
    import tarfile

    base = "{}-{}".format(name.replace("-", "_"), version)
    files = {
        "PKG-INFO": "Metadata-Version: 2.1\nName: {}\nVersion: {}\n".format(name, version),
        "pyproject.toml": textwrap.dedent('''
            [build-system]
            requires = ["setuptools>=64"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{}"
            version = "{}"
            ''').format(name, version),
        name.replace("-", "_") + ".py": "SOURCE = 'built from the sdist'\n",
    }
    if broken:
        files["setup.py"] = textwrap.dedent('''
            from setuptools import setup
            from setuptools.command.build_py import build_py


            class Broken(build_py):
                def run(self):
                    raise SystemExit("this sdist does not build (on purpose)")


            setup(cmdclass={"build_py": Broken})
            ''')
    if setup_py is not None:
        files["setup.py"] = setup_py
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = Path(folder) / (base + ".tar.gz")
    with tarfile.open(str(path), "w:gz") as tar:
        for rel, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(base + "/" + rel)
            info.size, info.mtime = len(data), 0  # the same bytes every run: uv and pip cache it
            tar.addfile(info, io.BytesIO(data))
    return path


def cli_environ(home, **extra):
    """The environment for a CLI subprocess using ``home``, without the suite's shared cache."""
    import os

    from mlflow_deploy.envs.cache import CACHE_ENV, HOME_ENV

    env = {k: v for k, v in os.environ.items() if k != CACHE_ENV}
    env[HOME_ENV] = str(home)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(args, home, wrapper=(), timeout=600, **extra_env):
    """``mlflow-deploy ARGS`` in a real subprocess (optionally under e.g. ``unshare -rn``)."""
    return subprocess.run([*wrapper, sys.executable, "-m", "mlflow_deploy.cli", *map(str, args)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          env=cli_environ(home, **extra_env), universal_newlines=True)


def summary(stdout: str) -> dict:
    """The ``name: value`` lines that `env build` and `package` end with."""
    return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)


def link_env(source_home: Path, target_home: Path, key: str) -> None:
    """Put a real env of ``source_home`` into ``target_home``'s cache: the venv hard-linked (fast,
    and removing the copy leaves the original alone), its lock and metadata copied."""
    import os

    source, target = source_home / "envs", target_home / "envs"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(str(source / key), str(target / key), symlinks=True, copy_function=os.link)
    for suffix in (".lock", ".json"):
        shutil.copy2(str(source / (key + suffix)), str(target / (key + suffix)))


def unshare_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rn", "true"]).returncode == 0


def make_wheel(folder: Path, name: str, version: str) -> Path:
    """A tiny pure-Python wheel ``name==version``, written by hand (no build tool, no index), for
    tests that publish a release themselves into a local find-links folder."""
    import base64
    import hashlib
    import zipfile

    module = name.replace("-", "_")
    info = "{}-{}.dist-info".format(module, version)
    files = {
        module + "/__init__.py": "VERSION = {!r}\n".format(version),
        info + "/METADATA": "Metadata-Version: 2.1\nName: {}\nVersion: {}\n".format(name, version),
        info + "/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append("{},sha256={},{}".format(path, digest.decode(), len(text.encode())))
    files[info + "/RECORD"] = "\n".join(record + [info + "/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "{}-{}-py3-none-any.whl".format(module, version)
    with zipfile.ZipFile(str(path), "w") as archive:
        for name_in_zip, text in files.items():
            archive.writestr(zipfile.ZipInfo(name_in_zip, date_time=(2020, 1, 1, 0, 0, 0)), text)
    return path
