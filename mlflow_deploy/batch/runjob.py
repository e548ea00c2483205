"""The process that runs one batch job: ``python -m mlflow_deploy.batch.runjob JOB [--home HOME]``.

Started detached by ``invoke`` and ``job resume`` (its own session, its output appended to the
job's log); SIGTERM (``job cancel``) or SIGINT makes it stop its workers and end Canceled. Exits 0
when the job completed, 1 otherwise.

The work is under ``if __name__ == "__main__"``: the Dask executor's local cluster starts its
worker processes by spawning, and a spawned process imports the main module of its parent
again, which must then do nothing.
"""
import argparse
import sys
from typing import Optional, Sequence

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlflow_deploy.batch.runjob",
                                     description="Run one batch job (started by invoke).")
    parser.add_argument("job", help="the job's name")
    parser.add_argument("--home", default=None, help="MLFLOW_DEPLOY_HOME (default: as set)")
    args = parser.parse_args(argv)

    from mlflow_deploy.batch.jobs import run_job
    from mlflow_deploy.store import Store

    status = run_job(args.job, Store(args.home), install_signals=True)
    return 0 if status in ("Completed", None) else 1


if __name__ == "__main__":
    sys.exit(main())
