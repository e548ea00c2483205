"""The scoring core on the oldest stack it promises: Python 3.10, mlflow 2.7.1,
pandas 1.5, numpy 1.23 and no orjson, as the seed's example model pins. The scoring tests run
again in that environment, against models logged there with mlflow 2."""
import os
import subprocess
import sys

import pytest

from tests.old_stack import ROOT, old_stack_python
from tests.scoring.test_fuzz import EXAMPLES_ENV


@pytest.mark.slow
def test_scoring_suite_passes_on_the_old_stack(tmp_path):
    python = old_stack_python()
    if python is None:
        pytest.skip("needs a Python 3.10 interpreter on this machine")
    versions = subprocess.run(
        [python, "-c", "import sys, mlflow, pandas, numpy; print(sys.version_info[:2], "
         "mlflow.__version__, pandas.__version__, numpy.__version__)"],
        check=True, capture_output=True, text=True).stdout
    assert "(3, 10) 2.7.1 1.5.3 1.23.5" in versions
    # its own basetemp: the inner pytest would otherwise prune the numbered folders under the
    # user's shared temp root, which this run (or another) is still writing into
    # the million-row memory test is left out: what it measures is the server's own decoder,
    # the same on every stack, and it costs 15 s
    run = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--basetemp", str(tmp_path / "inner"), "-k", "not a_million_rows",
                          os.path.join(ROOT, "tests", "scoring")],
                         cwd=ROOT, capture_output=True, text=True,
                         env={**{k: v for k, v in os.environ.items()
                                 if not k.startswith(("MLFLOW_", "PYTEST_"))},
                              EXAMPLES_ENV: "60"})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    print(run.stdout.strip().splitlines()[-1], file=sys.stderr)
