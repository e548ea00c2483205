"""Where a request's time goes in the scoring server, stage by stage, for a 1-row and a 1000-row
body: the first step of making it faster is knowing what to take out.

Run it with the model's own environment's interpreter (what users get), e.g.

    ENV=$(mlflow-deploy online-deployment show ... | jq -r .environment.python)
    $ENV bench/profile_scoring.py MODEL_DIR [--requests 2000]

It builds the same Flask app a deployment's workers serve (scoring.app.create_app around the
model's scorer) and calls it as gunicorn does, with a WSGI environ per request, so the figures
are the worker's own CPU per request without gunicorn's HTTP parsing (measured apart by the
server benchmarks). cProfile attributes each request's time to the stages below by their
cumulative time; profiling slows small calls more than large ones, so the unprofiled time per
request is printed beside them, and the shares, not the profiled milliseconds, are the result.
"""
import argparse
import cProfile
import io
import json
import pstats
import sys
import time

import numpy as np

#: stage -> (file fragment, function name) of the call whose cumulative time is the stage's
STAGES = [
    ("JSON decode (payload.loads)", ("scoring/payload.py", "loads")),
    ("our enforcement (schema.enforce)", ("scoring/schema.py", "enforce")),
    ("pyfunc predict, all of it", ("mlflow/pyfunc/__init__.py", "predict")),
    ("  MLflow's own schema enforcement", ("mlflow/models/utils.py", "_enforce_schema")),
    ("  the model (sklearn predict)", ("sklearn/linear_model/_base.py", "predict")),
    ("render (payload.render_azure)", ("scoring/payload.py", "render_azure")),
    ("request ids and headers (pipeline.response_headers)",
     ("scoring/pipeline.py", "response_headers")),
    ("metrics (Metrics.observe)", ("scoring/metrics.py", "observe")),
]


def body(rows: int, columns, seed: int = 42) -> bytes:
    data = np.random.default_rng(seed).normal(size=(rows, len(columns))).round(6).tolist()
    return json.dumps({"input_data": {"columns": columns, "index": list(range(rows)),
                                      "data": data}}).encode("utf-8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    from werkzeug.test import EnvironBuilder

    from mlflow_deploy.scoring.app import create_app
    from mlflow_deploy.scoring.config import ServerConfig
    from mlflow_deploy.scoring.scorer import ModelScorer

    config = ServerConfig(model_dir=args.model_dir)
    scorer = ModelScorer.load(args.model_dir, config.options)
    app = create_app(scorer, config)
    columns = [c.name for c in scorer.signature.columns]

    def start_response(status, headers, exc_info=None):
        assert status.startswith("200"), status

    print(json.dumps({"python": sys.version.split()[0], "numpy": np.__version__,
                      "mlflow": __import__("mlflow").__version__,
                      "pandas": __import__("pandas").__version__}))
    for rows in (1, 1000):
        raw = body(rows, columns)
        environ = EnvironBuilder(path="/score", method="POST", data=raw,
                                 content_type="application/json").get_environ()

        def call():
            environ["wsgi.input"] = io.BytesIO(raw)
            b"".join(app(dict(environ), start_response))

        n = args.requests if rows == 1 else max(args.requests // 4, 100)
        for _ in range(50):
            call()
        started = time.perf_counter()
        for _ in range(n):
            call()
        plain_ms = (time.perf_counter() - started) / n * 1e3
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(n):
            call()
        profile.disable()
        stats = pstats.Stats(profile).stats
        total = sum(tt for (_, _, _), (_, _, tt, _, _) in stats.items())
        print("\n{} row(s): {:.3f} ms per request unprofiled; profiled {:.3f} ms".format(
            rows, plain_ms, total / n * 1e3))
        for label, (fragment, name) in STAGES:
            cumulative = max((ct for (path, _, func), (_, _, _, ct, _) in stats.items()
                              if func == name and fragment in path), default=0.0)
            print("  {:55s} {:7.3f} ms  {:5.1f} %".format(label, cumulative / n * 1e3,
                                                         100 * cumulative / total))
        top = pstats.Stats(profile)
        top.sort_stats("tottime")
        stream = io.StringIO()
        top.stream = stream
        top.print_stats(12)
        print("  top functions by own time:")
        for line in stream.getvalue().splitlines():
            if line.strip() and ("{" in line or "/" in line) and "ncalls" not in line:
                print("   ", line.strip()[:150])


if __name__ == "__main__":
    main()
