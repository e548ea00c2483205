"""What a fork server prepares once for every server it forks (scoring/forkserver.py), checked
in a fresh interpreter of the stack under test: this file runs again on the old stack (mlflow
2.7.1), so the private MLflow function it relies on is checked on the oldest and newest MLflow."""
import subprocess
import sys

# counts how often the installed packages are mapped to their modules: before the fork server's
# warm-up, after it, and after a model load in the same process (a forked server's)
COUNT_MAPS = r"""
import sys
import importlib_metadata
from mlflow_deploy.scoring import forkserver

forkserver.warm(["mlflow.pyfunc"])
maps = []
build = importlib_metadata.packages_distributions


def counted():
    maps.append(1)
    return build()


importlib_metadata.packages_distributions = counted
before = len(maps)
forkserver.warm_requirement_check()
warmed = len(maps)
import mlflow.pyfunc
mlflow.pyfunc.load_model(sys.argv[1])
print(before, warmed, len(maps))
"""


def test_a_server_forked_from_a_warm_fork_server_does_not_map_the_packages_again(
        example_model_dirs):
    # the map is built on a model load's requirement check: 0.58 s of a new instance's 0.67 s
    # under load, once its imports are warm
    run = subprocess.run([sys.executable, "-c", COUNT_MAPS, example_model_dirs["diabetes"]],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    before, warmed, loaded = map(int, run.stdout.split()[-3:])
    assert (before, warmed) == (0, 1), "the fork server's warm-up did not map the packages"
    assert loaded == 1, "the model's load mapped the packages again"
