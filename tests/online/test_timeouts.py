"""request_timeout_ms holds wherever the model is stuck: a predict blocked in native code never
returns to Python (the in-worker deadline cannot fire), so the gunicorn master's watchdog answers
504 on the worker's own connection at the timeout, kills the worker, and a fresh one serves the
next request. Both ways native code gets stuck: with the GIL released (a ctypes call, as an OpenMP
pool after a fork) and with it held (which no thread of the worker could ever interrupt)."""
import textwrap
import time

import pandas as pd
import pytest
import requests

from example_models.build import shared_requirements
from mlflow_deploy import online
from mlflow_deploy.online.deployments import GATEWAY_GRACE_MS

pytestmark = pytest.mark.slow

STUCK_MODEL = textwrap.dedent('''
    import ctypes

    import mlflow.models
    import mlflow.pyfunc


    class Stuck(mlflow.pyfunc.PythonModel):
        """Blocks forever on a mutex it already holds when params say so, in native code."""

        def predict(self, context, model_input, params=None):
            mode = (params or {}).get("mode", "ok")
            if mode != "ok":
                # CDLL releases the GIL for the call; PyDLL keeps it
                libc = ctypes.CDLL(None) if mode == "native" else ctypes.PyDLL(None)
                mutex = ctypes.create_string_buffer(64)  # zeroed: a default, unlocked mutex
                libc.pthread_mutex_lock(mutex)
                libc.pthread_mutex_lock(mutex)
            return [float(len(model_input))] * len(model_input)


    mlflow.models.set_model(Stuck())
''')
TIMEOUT_MS = 1500
# the deployment's own server, reached here without its endpoint's gateway, gives up this late
SERVER_MS = TIMEOUT_MS + GATEWAY_GRACE_MS


@pytest.fixture(scope="module")
def stuck_model(tmp_path_factory):
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    root = tmp_path_factory.mktemp("stuck")
    code = root / "stuck.py"
    code.write_text(STUCK_MODEL)
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    mlflow.pyfunc.save_model(str(root / "model"), python_model=str(code),
                             signature=infer_signature(frame, [2.0, 2.0], params={"mode": "ok"}),
                             pip_requirements=shared_requirements())
    return root / "model"


def body(mode):
    return {"input_data": {"columns": ["x"], "data": [[1.0], [2.0]]}, "params": {"mode": mode}}


@pytest.mark.parametrize("mode", ["native", "native-holding-the-gil"])
def test_a_predict_stuck_in_native_code_gets_504_at_the_timeout(deploy_home, stuck_model, mode):
    created = online.create_deployment("stuck", str(stuck_model), config={
        "request_timeout_ms": TIMEOUT_MS, "instance_count": 1})
    url = created["scoring_uri"]
    assert requests.post(url, json=body("ok"), timeout=10).json() == [2.0, 2.0]
    started = time.monotonic()
    answer = requests.post(url, json=body(mode), timeout=30,
                           headers={"x-request-id": "stuck-request"})
    elapsed = time.monotonic() - started
    assert answer.status_code == 504, answer.text
    assert answer.json() == {"message": "Scoring timeout after {} ms".format(SERVER_MS)}
    assert answer.headers["x-ms-request-id"] == "stuck-request"
    assert SERVER_MS / 1000.0 <= elapsed < SERVER_MS / 1000.0 + 1.0
    # a fresh worker replaces the killed one
    assert requests.post(url, json=body("ok"), timeout=30).json() == [2.0, 2.0]
    metrics = requests.get(url.replace("/score", "/metrics"), timeout=10).text
    assert 'mlflow_deploy_requests_total{route="score",status="504"} 1.0' in metrics
    log = open(created["log_path"]).read()
    assert "request stuck-request: Scoring timeout after {} ms".format(SERVER_MS) in log
    assert "killed by the scoring watchdog" in log and "out of memory" not in log
    assert "[ACCESS] request_id=stuck-request method=- route=/score status=504 latency_ms=" in log
