"""create_deployment -> the first 200, for a linear model and an OpenMP model, fork servers on and off.

    .venv/bin/python bench/create_to_200.py [--runs 3]

The deployments' servers never predict in the gunicorn master (a prediction there starts
OpenMP's thread pool, which a forked worker inherits dead: every request of a
HistGradientBoosting or LightGBM deployment hung); each worker warms up after the fork, and a
start-up self-test posts the input example through a real worker before the create returns. This
measures what that costs a user: the time from calling ``create_deployment`` (in this process,
env cached) until a POST of the input example answers 200. The models: scikit-learn's diabetes
Ridge (the example models' `diabetes`) and a HistGradientBoostingClassifier, in the example
models' shared environment. Medians of ``--runs``; prints a markdown table and writes JSON lines to
bench/out/.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HGB_TREES = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"


def models(root: Path):
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier

    from example_models.build import save_all, shared_requirements

    linear = save_all(str(root / "examples"))["diabetes"]
    X, y = make_classification(500, 10, random_state=0)
    hgb = HistGradientBoostingClassifier(max_iter=50, random_state=0).fit(X, y)
    mlflow.sklearn.save_model(hgb, str(root / "hgb"), signature=infer_signature(X, hgb.predict(X)),
                              input_example=X[:3], pip_requirements=shared_requirements(),
                              skops_trusted_types=[HGB_TREES])
    return {"linear (diabetes Ridge)": str(linear),
            "OpenMP (HistGradientBoosting)": str(root / "hgb")}


def first_200(name: str, model: str) -> float:
    from mlflow_deploy.online import create_deployment, delete_deployment
    from mlflow_deploy.scoring.selftest import self_test_for

    body = self_test_for(model).body
    started = time.monotonic()
    info = create_deployment(name, model)
    try:
        while True:
            try:
                answer = requests.post(info["scoring_uri"], data=body, timeout=30,
                                       headers={"Content-Type": "application/json"})
                if answer.status_code == 200:
                    return time.monotonic() - started
            except requests.ConnectionError:
                pass
            if time.monotonic() - started > 120:
                raise RuntimeError("no 200 within 120 s")
            time.sleep(0.01)
    finally:
        delete_deployment(name)



def write_records(name, records):
    """One JSON line per measurement, to bench/out/<name>-<UTC time>.jsonl."""
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with open(out / "{}-{}.jsonl".format(name, stamp), "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from mlflow_deploy.envs.cache import BUILD_CACHE_ENV, CACHE_ENV
    from mlflow_deploy.online.forkserver import IDLE_ENV, RUN_DIR_ENV, stop_all

    os.environ.setdefault(CACHE_ENV, str(ROOT / ".mlflow-deploy" / "envs"))
    os.environ.setdefault(BUILD_CACHE_ENV, str(ROOT / ".mlflow-deploy" / "build"))
    rows, records = [], []
    with tempfile.TemporaryDirectory(prefix="create-to-200-") as tmp:
        os.environ["MLFLOW_DEPLOY_HOME"] = str(Path(tmp) / "home")
        os.environ[RUN_DIR_ENV] = str(Path(tmp) / "run")
        os.makedirs(os.environ[RUN_DIR_ENV], mode=0o700)
        try:
            for label, model in models(Path(tmp)).items():
                for fork_servers in (True, False):
                    os.environ[IDLE_ENV] = "900" if fork_servers else "0"
                    first_200("warm", model)  # builds or reuses the env; starts its fork server
                    times = [first_200("run{}".format(i), model) for i in range(args.runs)]
                    records.append({"model": label, "fork_servers": fork_servers,
                                    "seconds": times})
                    rows.append("| {} | {} | {:.2f} ({:.2f}-{:.2f}) |".format(
                        label, "on" if fork_servers else "off", statistics.median(times),
                        min(times), max(times)))
        finally:
            stop_all(os.environ[RUN_DIR_ENV])
    write_records("create-to-200", records)
    print("| model | fork servers | create -> first 200, s (median, min-max) |")
    print("|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
