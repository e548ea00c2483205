"""Payload files checked against a model's signature with no server, the way the server would
check them: one file or a whole folder or glob of them; with ``predict`` the model runs on them
too, in process or (``server``) behind a real server. ``mlflow-deploy validate`` (cli/validate.py)
prints the cases, optionally as JUnit XML for CI (junit.py).
"""
import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

__all__ = ["PayloadCase", "collect_payloads", "validate_payloads"]


@dataclass
class PayloadCase:
    name: str  # the file, as found from the argument
    ok: bool
    message: str  # the summary, or the server's message
    status: int  # 200 when accepted, else the status the server would answer (0: none)
    seconds: float = 0.0
    answered: bool = True  # False: a real server gave no answer (a worker that crashed)

    @property
    def kind(self) -> Optional[str]:
        if self.ok:
            return None
        return "HTTP {}".format(self.status) if self.answered else "no answer"


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
                      predict: bool = False, server: bool = False) -> List[PayloadCase]:
    """Check each file the way the server would; with ``predict``, also run the model. With
    ``server`` (which implies ``predict``) each file is posted to a real server for the model (a
    forked gunicorn worker, in this interpreter), which is stopped before this returns."""
    if server:
        return _served(model_uri, files, validation)
    from mlflow_deploy.scoring.errors import ScoringError
    from mlflow_deploy.scoring.pipeline import check

    from .client import load_predictor, score

    predictor = load_predictor(model_uri)
    cases = []
    for path in files:
        started = time.perf_counter()
        raw, unreadable = _read(path)
        if unreadable is not None:
            cases.append(unreadable)
            continue
        if predict:
            response = score(model_uri, raw, validation=validation, server=False)
            case = _answered(path, response.status, response.raw, response.message)
        else:
            try:
                enforced = check(raw, "application/json", predictor, validation=validation)
                case = PayloadCase(str(path), True, enforced.summary(), 200)
            except ScoringError as exc:
                case = PayloadCase(str(path), False, exc.message, exc.status)
        case.seconds = time.perf_counter() - started
        cases.append(case)
    return cases


def _answered(path: Path, status: int, body: bytes, message: Optional[str]) -> PayloadCase:
    ok = status == 200
    text = "scored: {} byte(s) of predictions".format(len(body)) if ok \
        else message or "HTTP {}".format(status)
    return PayloadCase(str(path), ok, text, status)


def _read(path: Path) -> Tuple[Optional[bytes], Optional[PayloadCase]]:
    try:
        return path.read_bytes(), None
    except OSError as exc:
        return None, PayloadCase(str(path), False, "the file cannot be read ({})".format(
            type(exc).__name__), 0)


def _served(model_uri: str, files: Sequence[Path], validation: str) -> List[PayloadCase]:
    """Each file posted to one real server; its files are removed with it, unless a request got
    no answer: that message names the server's log, which is kept to be read."""
    from mlflow_deploy.scoring.options import ScoringOptions

    from .client import _local_dir
    from .served import NoAnswer, Server

    server = Server(_local_dir(model_uri), ScoringOptions(validation=validation),
                    model_uri=model_uri).start()
    cases: List[PayloadCase] = []
    try:
        for path in files:
            started = time.perf_counter()
            raw, case = _read(path)
            if case is not None:
                cases.append(case)
                continue
            try:
                answer = server.post(raw)
                case = _answered(path, answer.status, answer.body, answer.message)
            except NoAnswer as exc:
                case = PayloadCase(str(path), False, exc.message, 0, answered=False)
            case.seconds = time.perf_counter() - started
            cases.append(case)
    finally:
        server.stop(keep_files=any(not c.answered for c in cases))
    return cases
