"""``mlflow-deploy validate MODEL_URI PAYLOAD...``: payload files checked against a model with no
server (mlflow_deploy/testing/validate.py), one file or a folder or glob of them, optionally as
JUnit XML for CI. ``--server`` posts each to a real server instead, stopped before it returns.

One file: exit 0 and ``OK: <summary>``, or exit 1 and the message the server would answer.
Several files print one line each and exit 1 when any is rejected.
"""
from pathlib import Path
from typing import Optional, Sequence

import click

from mlflow_deploy.errors import PredictionFailed
from mlflow_deploy.testing.junit import write_junit
from mlflow_deploy.testing.validate import collect_payloads, validate_payloads

from .common import VALIDATION

__all__ = ["validate_command"]


@click.command("validate")
@click.argument("model_uri")
@click.argument("payloads", nargs=-1, required=True)
@VALIDATION
@click.option("--predict", is_flag=True, help="Also run the model on each payload.")
@click.option("--server", is_flag=True,
              help="Post each payload to a real server (gunicorn, a forked worker, this Python) "
              "instead of scoring in process; implies --predict.")
@click.option("--junit-xml", "junit_xml", type=click.Path(dir_okay=False),
              help="Write a JUnit XML report with one test case per payload file.")
def validate_command(model_uri: str, payloads: Sequence[str], validation: str, predict: bool,
                     server: bool, junit_xml: Optional[str]) -> None:
    """Check Azure PAYLOADS (files, folders or quoted globs) against MODEL_URI's signature, with no
    server (or, with --server, post them to a real one): exit 0 and a summary, or exit 1 and the
    message the server would answer."""
    files = collect_payloads(payloads)
    cases = validate_payloads(model_uri, files, validation, predict or server, server)
    if junit_xml:
        write_junit(junit_xml, "mlflow-deploy validate " + model_uri, cases)
    single = len(payloads) == 1 and len(cases) == 1 and Path(payloads[0]).is_file()
    if single:
        case = cases[0]
        if not case.ok and not case.answered:
            raise PredictionFailed(case.message)
        if not case.ok:  # the message `from_scoring_error` gives the single-file command
            raise PredictionFailed("{}: {}".format(case.status, case.message), status=case.status)
        click.echo("OK: " + case.message)
        return
    for case in cases:
        click.echo("{:4} {}: {}".format("ok" if case.ok else "FAIL", case.name, case.message
                                        if case.ok else "{}: {}".format(case.kind,
                                                                       case.message)))
    failed = sum(not c.ok for c in cases)
    click.echo("{} payload(s): {} accepted, {} rejected".format(len(cases), len(cases) - failed,
                                                              failed))
    if failed:
        raise SystemExit(1)
