"""Payload files checked against a model's signature with no server, the way the server would
check them: one file or a whole folder or glob of them. ``mlflow-deploy validate`` (cli/validate.py)
prints the cases, optionally as JUnit XML for CI (junit.py).
"""
import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

__all__ = ["PayloadCase", "collect_payloads", "validate_payloads"]


@dataclass
class PayloadCase:
    name: str  # the file, as found from the argument
    ok: bool
    message: str  # the summary, or the server's message
    status: int  # 200 when accepted, else the status the server would answer
    seconds: float = 0.0

    @property
    def kind(self) -> Optional[str]:
        return None if self.ok else "HTTP {}".format(self.status)


def collect_payloads(arguments: Sequence[str]) -> List[Path]:
    """Each argument is a file, a folder (its *.json files, recursively) or a quoted glob."""
    from mlflow_deploy.errors import InvalidParameter

    found: List[Path] = []
    for argument in arguments:
        path = Path(os.path.expanduser(argument))
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = sorted(p for p in path.rglob("*.json") if p.is_file())
        else:
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True)
                             if os.path.isfile(p))
        if not matches:
            raise InvalidParameter("No payload file found for a PAYLOAD argument (give a file, a "
                                   "folder of *.json files, or a quoted glob).")
        found.extend(m for m in matches if m not in found)
    return found


def validate_payloads(model_uri: str, files: Sequence[Path], validation: str = "compatible",
                      predict: bool = False) -> List[PayloadCase]:
    """Check each file the way the server would; with ``predict``, also run the model."""
    from mlflow_deploy.scoring.errors import ScoringError
    from mlflow_deploy.scoring.pipeline import check

    from .client import load_predictor, score

    predictor = load_predictor(model_uri)
    cases = []
    for path in files:
        started = time.perf_counter()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            cases.append(PayloadCase(str(path), False, "the file cannot be read ({})".format(
                type(exc).__name__), 0))
            continue
        if predict:
            response = score(model_uri, raw, validation=validation)
            ok = response.status == 200
            message = "scored: {} byte(s) of predictions".format(len(response.raw)) if ok \
                else response.message or "HTTP {}".format(response.status)
            case = PayloadCase(str(path), ok, message, response.status)
        else:
            try:
                enforced = check(raw, "application/json", predictor, validation=validation)
                case = PayloadCase(str(path), True, enforced.summary(), 200)
            except ScoringError as exc:
                case = PayloadCase(str(path), False, exc.message, exc.status)
        case.seconds = time.perf_counter() - started
        cases.append(case)
    return cases
