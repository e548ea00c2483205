"""The README's set-up works where only python3 exists: the Makefile assumes no uv on PATH (pip
puts one beside the interpreter, which pyenv keeps off PATH until `pyenv rehash`), and the code
finds uv through the uv package it depends on."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def path_without_uv(tmp_path):
    """PATH less every folder holding a uv (pyenv's shims included), plus python3 alone."""
    keep = tmp_path / "python-only"
    keep.mkdir()
    os.symlink(os.path.realpath(sys.base_prefix + "/bin/python3"), str(keep / "python3"))
    folders = [d for d in os.environ["PATH"].split(os.pathsep)
               if d and not os.path.exists(os.path.join(d, "uv"))]
    return os.pathsep.join([str(keep)] + folders)


@pytest.mark.slow
def test_make_setup_needs_nothing_but_python3_on_path(tmp_path):
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYENV_"))}
    env["PATH"] = path_without_uv(tmp_path)
    assert subprocess.run(["sh", "-c", "command -v uv"], env=env,
                          stdout=subprocess.DEVNULL).returncode != 0
    done = subprocess.run(["make", "-C", ROOT, "setup", "VENV={}".format(venv)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    assert done.returncode == 0, done.stdout.decode(errors="replace")[-3000:]
    python = str(venv / "bin" / "python")
    found = subprocess.run([python, "-c", "from mlflow_deploy.envs.runner import find_uv; "
                            "print(find_uv())"], env=env, stdout=subprocess.PIPE, check=True)
    assert found.stdout.decode().strip() == str(venv / "bin" / "uv")
    version = subprocess.run([str(venv / "bin" / "mlflow-deploy"), "--help"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert version.returncode == 0, version.stdout.decode(errors="replace")


def test_setup_and_suite_resolve_as_of_the_same_date():
    """`make setup` installs the dev tools as of the date the suite resolves model envs at: with
    two dates, a release between them could pass here and break a fresh machine, or the reverse."""
    import re

    from tests.conftest import EXCLUDE_NEWER

    with open(os.path.join(ROOT, "Makefile")) as makefile:
        dates = re.findall(r"^RESOLVED_AS_OF := (\S+)$", makefile.read(), re.M)
    assert dates == [EXCLUDE_NEWER]
