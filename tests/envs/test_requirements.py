"""Reading a model's requirements and planning its env: no build, no network."""
import os
import sys
import textwrap

import pytest

from mlflow_deploy.envs import (EnvError, ManagerUnavailable, PythonNotFound,
                                PythonVersionWarning, RequirementConflict, RequirementsError,
                                UnsatisfiedRequirements, prepare_environment,
                                read_model_requirements)
from mlflow_deploy.envs.indexes import EXCLUDE_NEWER_ENV, IndexOptions, read_pip_config
from mlflow_deploy.envs.inference import OLD_MLFLOW_SETUPTOOLS, inference_requirements
from mlflow_deploy.envs.managers import find_conda
from mlflow_deploy.envs.pythons import choose_interpreter
from mlflow_deploy.envs.requirements import conda_to_pip
from mlflow_deploy.errors import DeployError

WHEEL_REQUIRES = ["mlflow-skinny>=2.0", "pandas>=1.5", "numpy>=1.23", "flask>=2.2",
                  "gunicorn>=20.1", "pyyaml>=6.0", "click>=8.0"]


def write(folder, **files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_yaml", ".yaml").replace("_txt", ".txt")).write_text(
            textwrap.dedent(text))
    return folder


PYTHON_ENV = """\
    python: 3.10.11
    build_dependencies:
    - pip==23.0
    - setuptools
    - wheel==0.40.0
    dependencies:
    - -r requirements.txt
"""


def test_python_env_and_requirements_txt(tmp_path):
    model = write(tmp_path / "m", python_env_yaml=PYTHON_ENV,
                  requirements_txt="mlflow==2.7.1  # logged with\n\nnumpy==1.23.5\n")
    reqs = read_model_requirements(model)
    assert reqs.python == (3, 10)
    assert reqs.lines == ["setuptools", "mlflow==2.7.1", "numpy==1.23.5"]  # pip, wheel dropped
    assert "python_env.yaml" in reqs.source and "requirements.txt" in reqs.source


def test_conda_yaml_maps_conda_packages_to_pypi(tmp_path):
    model = write(tmp_path / "m", conda_yaml="""\
        channels: [conda-forge]
        dependencies:
        - python=3.9.16
        - pip<=23.0
        - conda-forge::py-xgboost=1.7
        - pytorch
        - scikit-learn==1.2.2
        - pip:
          - mlflow==2.3.0
          - cloudpickle==2.2.1
    """)
    reqs = read_model_requirements(model)
    assert reqs.python == (3, 9)
    assert reqs.lines == ["xgboost==1.7.*", "torch", "scikit-learn==1.2.2", "mlflow==2.3.0",
                          "cloudpickle==2.2.1"]


def test_python_env_wins_over_conda_yaml(tmp_path):
    model = write(tmp_path / "m", python_env_yaml=PYTHON_ENV, requirements_txt="numpy\n",
                  conda_yaml="dependencies: [python=3.8, not-a-pypi-thing]\n")
    assert read_model_requirements(model).python == (3, 10)


@pytest.mark.parametrize("spec, expected", [
    ("numpy=1.23.5", ("numpy", "==1.23.5.*")),
    ("numpy 1.23.5 py310h_0", ("numpy", "==1.23.5")),
    ("numpy=1.23.*", ("numpy", "==1.23.*")),
    ("numpy=1.23.5=py310_0", ("numpy", "==1.23.5.*")),
    ("conda-forge::SciPy>=1.9,<2", ("scipy", ">=1.9,<2")),
    ("pandas", ("pandas", "")),
])
def test_conda_specs(spec, expected):
    assert conda_to_pip(spec) == expected


def test_unmappable_conda_package_is_named(tmp_path):
    model = write(tmp_path / "m", conda_yaml="""\
        dependencies: [python=3.11, numpy, libmagic-thing, r-base=4.2, pip, {pip: [mlflow]}]
    """)
    with pytest.raises(RequirementsError) as info:
        read_model_requirements(model)
    message = str(info.value)
    assert "'libmagic-thing'" in message and "'r-base'" in message and "numpy" not in message
    assert isinstance(info.value, EnvError) and isinstance(info.value, DeployError)


@pytest.mark.parametrize("files, fragment", [
    ({}, "no python_env.yaml, conda.yaml or requirements.txt"),
    ({"python_env_yaml": "python: 3.10\ndependencies: [-r missing.txt]\n"}, "missing.txt"),
    ({"python_env_yaml": "python: 3.10\ndependencies: [-e ./src]\n"}, "editable"),
    ({"python_env_yaml": "dependencies: [numpy]\n"}, "no 'python' version"),
    ({"python_env_yaml": "python: 3.10\ndependencies: ['numpy>=>1']\n"}, "invalid requirement"),
    ({"conda_yaml": "dependencies: [{conda: [x]}]\n"}, "unexpected entry 'conda'"),
])
def test_unusable_requirement_files(tmp_path, files, fragment):
    with pytest.raises(RequirementsError, match=fragment):
        read_model_requirements(write(tmp_path / "m", **files))


def requirements_of(tmp_path, *lines):
    model = write(tmp_path / "m", python_env_yaml="python: 3.11\ndependencies: [-r requirements.txt]\n",
                  requirements_txt="".join(l + "\n" for l in lines))
    return read_model_requirements(model)


def test_mlflow_skinny_added_only_when_the_model_pins_no_mlflow(tmp_path):
    added = inference_requirements(requirements_of(tmp_path, "numpy"), WHEEL_REQUIRES)
    assert "mlflow-skinny>=2.0" in added and "flask>=2.2" in added and "gunicorn>=20.1" in added
    added = inference_requirements(requirements_of(tmp_path, "mlflow==3.1.0"), WHEEL_REQUIRES)
    assert not any(a.startswith("mlflow") for a in added)
    assert OLD_MLFLOW_SETUPTOOLS not in added


def test_old_mlflow_gets_a_setuptools_with_pkg_resources(tmp_path):
    added = inference_requirements(requirements_of(tmp_path, "mlflow==2.7.1"), WHEEL_REQUIRES)
    assert OLD_MLFLOW_SETUPTOOLS in added
    for pin in ("setuptools==68.0.0", "setuptools<60"):  # the model's own pin wins
        added = inference_requirements(requirements_of(tmp_path, "mlflow==2.7.1", pin),
                                       WHEEL_REQUIRES)
        assert OLD_MLFLOW_SETUPTOOLS not in added
    added = inference_requirements(requirements_of(tmp_path, "mlflow>=2.9"), WHEEL_REQUIRES)
    assert OLD_MLFLOW_SETUPTOOLS not in added  # may resolve to 3.x: nothing to add


@pytest.mark.parametrize("pin, ours", [("flask==2.0.3", "flask>=2.2"),
                                       ("gunicorn==19.9.0", "gunicorn>=20.1"),
                                       ("mlflow==1.30.0", "mlflow-skinny>=2.0")])
def test_conflicting_pin_names_both_requirements(tmp_path, pin, ours):
    with pytest.raises(RequirementConflict) as info:
        inference_requirements(requirements_of(tmp_path, pin), WHEEL_REQUIRES)
    assert "'{}'".format(pin) in str(info.value) and "'{}'".format(ours) in str(info.value)


def test_conflicting_pin_fails_before_any_build(tmp_path, monkeypatch):
    model = write(tmp_path / "m", python_env_yaml="python: 3.11\ndependencies: [flask==2.0.3]\n")
    with pytest.raises(RequirementConflict, match="'flask==2.0.3'.*'flask>=2.2'"):
        prepare_environment(model, home=tmp_path / "home")
    assert not list((tmp_path / "home" / "envs").glob("[0-9a-f]*"))


def test_unavailable_python_names_version_and_interpreters(tmp_path):
    with pytest.raises(PythonNotFound) as info:
        choose_interpreter((3, 99), "exact")
    message = str(info.value)
    assert "Python 3.99" in message and "found: " in message and "nearest" in message
    assert "{}.{}".format(*sys.version_info[:2]) in message


def test_nearest_python_warns_and_picks_the_closest(tmp_path):
    seen = []
    with pytest.warns(PythonVersionWarning, match="Python 3.99"):
        interpreter = choose_interpreter((3, 99), "nearest", progress=seen.append)
    assert interpreter.minor[0] == 3 and os.path.exists(interpreter.path)
    assert seen and seen[0].startswith("warning:")


def test_unknown_policy_and_manager(tmp_path):
    with pytest.raises(RequirementsError, match="python_version_policy"):
        choose_interpreter((3, 11), "closest")
    model = write(tmp_path / "m", python_env_yaml="python: 3.11\ndependencies: [numpy]\n")
    with pytest.raises(ManagerUnavailable, match="env_manager must be one of"):
        prepare_environment(model, manager="pixi")


def test_conda_manager_without_conda_suggests_uv(tmp_path, monkeypatch):
    """A `mamba` on PATH that is not conda's (PyPI has a test runner by that name) is no conda."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mamba"
    fake.write_text("#!/bin/sh\necho 'mamba: unrecognized arguments' >&2\nexit 2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + "/usr/bin" + os.pathsep + "/bin")
    assert find_conda() is None
    model = write(tmp_path / "m", conda_yaml="dependencies: [python=3.11, numpy]\n")
    with pytest.raises(ManagerUnavailable) as info:
        prepare_environment(model, manager="conda")
    assert "conda" in str(info.value) and "uv" in str(info.value)
    assert "not conda's" in str(info.value)


def test_local_manager_checks_the_current_interpreter(tmp_path):
    import sklearn

    # MLflow writes setuptools among the build dependencies; a running model does not need it
    ok = write(tmp_path / "ok", python_env_yaml="python: 3.11\nbuild_dependencies: [pip, "
               "setuptools==99.0]\ndependencies: [-r requirements.txt]\n",
               requirements_txt="scikit-learn=={}\nnumpy\n".format(sklearn.__version__))
    env = prepare_environment(ok, manager="local")
    assert env.python == sys.executable and env.key == "local"
    bad = write(tmp_path / "bad", python_env_yaml="python: 3.11\ndependencies: [-r requirements.txt]\n",
                requirements_txt="scikit-learn==0.20.0\nnot-installed-pkg-xyz\nnumpy\n")
    with pytest.raises(UnsatisfiedRequirements) as info:
        prepare_environment(bad, manager="local")
    message = str(info.value)
    assert "scikit-learn==0.20.0 (installed: {})".format(sklearn.__version__) in message
    assert "not-installed-pkg-xyz (not installed)" in message and "numpy" not in message


def test_pip_configuration_reaches_uv(tmp_path, monkeypatch):
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nindex-url = file:///srv/simple\nextra-index-url = "
                      "file:///a/simple file:///b/simple\n[install]\nfind-links = /w1\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_FIND_LINKS", "/w2 /w3")
    assert read_pip_config()["find-links"] == "/w2 /w3"
    args = IndexOptions.from_pip_config().uv_args()
    assert args[:2] == ["--index-url", "file:///srv/simple"]
    assert args.count("--extra-index-url") == 2 and args.count("--find-links") == 2
    assert args[-2:] == ["--index-strategy", "unsafe-best-match"]
    offline = IndexOptions.wheelhouse(tmp_path).uv_args()
    assert offline[:2] == ["--offline", "--no-index"] and str(tmp_path) in offline


def with_mlmodel(tmp_path, mlflow_version, *lines):
    model = requirements_of(tmp_path, *lines)
    model.mlflow_version = mlflow_version
    return model


@pytest.mark.parametrize("lines, logged, bound, mlflow_2", [
    (["mlflow"], "3.17.2", "mlflow==3.17.2", False),  # bare: the mlflow it was logged with
    (["mlflow>=2.9"], "3.17.2", "mlflow==3.17.2", False),
    (["mlflow-skinny<3"], "2.7.1", "mlflow-skinny==2.7.1", True),
    (["mlflow"], None, "mlflow>=2.0", False),  # no record: the range scoring/ supports
    (["mlflow"], "1.27.0", "mlflow>=2.0", False),  # logged with an mlflow scoring/ cannot run
    (["mlflow<3"], "3.1.0", "mlflow>=2.0", True),  # the record contradicts the model's own pin
    (["mlflow"], "2.8.1.dev0", "mlflow>=2.0", False),  # not a release
])
def test_a_loose_mlflow_is_held_to_the_logged_version_or_the_supported_range(
        tmp_path, lines, logged, bound, mlflow_2):
    added = inference_requirements(with_mlmodel(tmp_path, logged, *lines), WHEEL_REQUIRES)
    assert [a for a in added if a.startswith("mlflow")] == [bound]
    assert (OLD_MLFLOW_SETUPTOOLS in added) == mlflow_2


def test_an_exact_mlflow_pin_is_kept_as_it_is(tmp_path):
    added = inference_requirements(with_mlmodel(tmp_path, "3.17.2", "mlflow==3.1.0"),
                                   WHEEL_REQUIRES)
    assert not any(a.startswith("mlflow") for a in added)


def test_mlmodel_mlflow_version_is_read(tmp_path):
    model = write(tmp_path / "m", python_env_yaml="python: 3.11\ndependencies: [mlflow]\n",
                  MLmodel="mlflow_version: 2.7.1\nflavors: {}\n")
    assert read_model_requirements(model).mlflow_version == "2.7.1"


def test_exclude_newer_pins_resolution_in_time(tmp_path, monkeypatch):
    monkeypatch.delenv(EXCLUDE_NEWER_ENV, raising=False)
    plain = IndexOptions.from_pip_config()
    assert "--exclude-newer" not in plain.uv_args(constraints=True)
    dated = IndexOptions.from_pip_config("2026-11-01")
    assert dated.uv_args(constraints=True)[-2:] == ["--exclude-newer", "2026-11-01"]
    assert "--exclude-newer" not in dated.uv_args()  # installs follow the lock's hashes
    assert dated.identity() != plain.identity()  # another date is another resolution memo
    monkeypatch.setenv(EXCLUDE_NEWER_ENV, "2026-10-01")
    assert IndexOptions.from_pip_config().exclude_newer == "2026-10-01"
    assert IndexOptions.from_pip_config("2026-11-01").exclude_newer == "2026-11-01"


def test_model_envs_get_the_fast_extra_but_not_uv_or_rich(tmp_path):
    from mlflow_deploy.envs.wheel import project_wheel

    requires = project_wheel().requires
    names = [r.split(";")[0].split(">")[0].split("=")[0].strip() for r in requires]
    assert "orjson" in names and "uv" not in names
    assert "rich" not in names  # the CLI's terminal display, never the scoring server's
    assert not [r for r in requires if "extra" in r]
