"""Which modules a piece of code leaves imported, run in a fresh interpreter: the tests that keep
a command from importing what it does not use (mlflow, pandas, other nouns' modules)."""
import ast
import subprocess
import sys
from typing import Iterable, List, Mapping, Optional, Tuple


def modules_after(code: str, names: Iterable[str], env: Optional[Mapping[str, str]] = None
                  ) -> Tuple[subprocess.CompletedProcess, List[str]]:
    """Run ``code``; return the finished process and, sorted, the modules of ``names`` (each a
    module and its submodules) imported when it exits, however it exits."""
    names = sorted(set(names))
    done = subprocess.run(
        [sys.executable, "-c", "import atexit, sys\n"
         "atexit.register(lambda: print('LOADED', sorted(m for m in sys.modules if any("
         "m == n or m.startswith(n + '.') for n in {!r})), file=sys.stderr))\n".format(names)
         + code],
        capture_output=True, text=True, timeout=300, env=None if env is None else dict(env))
    lines = [line for line in done.stderr.splitlines() if line.startswith("LOADED ")]
    assert lines, done.stderr
    return done, ast.literal_eval(lines[-1][len("LOADED "):])
