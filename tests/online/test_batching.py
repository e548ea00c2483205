"""The gateway's batching (online/batching.py), end to end: a real endpoint in front of a real
deployment of a row-wise model, batching turned on through the CLI's YAML and off through the
API while a steady load runs; concurrent requests of every kind get exactly what they got one at
a time, and a request alone at an idle deployment waits for no batch."""
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
import requests

from example_models.build import shared_requirements
from mlflow_deploy import online
from mlflow_deploy.online import instances, supervisor
from tests import prometheus
from tests.connections import wait_until
from tests.online.load import SteadyLoad

pytestmark = pytest.mark.slow

SCALER = textwrap.dedent('''
    import time

    import mlflow.models
    import mlflow.pyfunc
    import pandas as pd

    FAILS_ON, REJECTED, SLOW = -2.0, -3.0, -4.0


    class Scaler(mlflow.pyfunc.PythonModel):
        """Row-wise: y = x * scale; fails (500) on one value, rejects (400) another, takes
        seconds on a third."""

        def predict(self, context, model_input, params=None):
            scale = (params or {}).get("scale", 1.0)
            out = []
            for x in model_input["x"]:
                if x == SLOW:
                    time.sleep(3.0)
                if x == FAILS_ON:
                    raise RuntimeError("the model fails on this row")
                if x == REJECTED:
                    raise ValueError("the model rejects this row")
                out.append(x * scale)
            return pd.DataFrame({"y": out})


    mlflow.models.set_model(Scaler())
''')
MLFLOW_DEPLOY = os.path.join(os.path.dirname(sys.executable), "mlflow-deploy")
BATCH_TIME_S = 0.1
SLOW = -4.0  # the scaler's row that takes 3 s


@pytest.fixture(scope="module")
def scaler(tmp_path_factory):
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    folder = tmp_path_factory.mktemp("scaler")
    (folder / "scaler.py").write_text(SCALER)
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    mlflow.pyfunc.save_model(
        str(folder / "model"), python_model=str(folder / "scaler.py"),
        signature=infer_signature(frame, pd.DataFrame({"y": [1.0, 2.0]}), params={"scale": 1.0}),
        pip_requirements=shared_requirements())
    return str(folder / "model")


def split(*xs, **envelope):
    return {"input_data": {"columns": ["x"], "data": [[x] for x in xs]}, **envelope}


# every kind of request, joinable or not, valid or not: (body, extra headers)
REQUESTS = [
    (split(1.0), {}),
    (split(2.0, 3.0, 4.0), {}),
    (split(5.0, params={"scale": 2.0}), {}),
    (split(6.0, 7.0, params={"scale": 2.0}), {}),
    (split(8.0, params={"scale": 0.5}), {}),
    (split(-2.0), {}),  # the model fails: 500, its message names its own request id
    (split(9.0, -3.0), {}),  # the model rejects it: 400, joined with the others of its kind
    ({"input_data": {"columns": ["x"], "data": [["a"]]}}, {}),  # not a number: 400
    ({"input_data": {"columns": ["x"], "index": [0, 1], "data": [[10.0], [11.0]]}}, {}),
    ({"input_data": [[12.0]]}, {}),  # a tensor for a column signature
    (split(13, 14), {}),  # integers for a double column
    (split(15.0, params={"scale": 3.0, "nope": 1}), {}),  # a param the model does not take
    (split(16.0), {"x-ms-client-request-id": "client-16"}),
    # joined with the other of its kind: the joined answer reports coercions, so both go alone
    (split(17.0, params={"scale": 3.0, "nope": 1}), {}),
]


def post(uri, index, round_, body, headers):
    request_id = "req-{}-{}".format(round_, index)
    started = time.monotonic()
    answer = requests.post(uri, json=body, headers={"x-request-id": request_id, **headers},
                           timeout=30)
    return answer, request_id, time.monotonic() - started


def metrics(uri):
    """The endpoint's /metrics, parsed."""
    return prometheus.parse(requests.get(uri.replace("/score", "/metrics"), timeout=30).text)


def outcome(answer, request_id):
    """What a client sees of an answer, its own request id taken out of the message."""
    assert answer.headers["x-request-id"] == request_id
    assert answer.headers["x-ms-request-id"] == request_id
    body = answer.json()
    if isinstance(body, dict) and "message" in body:
        body = dict(body, message=body["message"].replace(request_id, "<id>"))
    return (answer.status_code, answer.headers.get("ms-azureml-model-error-statuscode"), body,
            answer.headers.get("x-mlflow-deploy-coercions"),
            answer.headers["x-ms-client-request-id"].replace(request_id, "<id>"))


def test_batching_answers_as_alone_and_switches_under_load(deploy_home, scaler, tmp_path):
    uri = online.create_endpoint("ept", config={"auth_mode": "none"})["scoring_uri"]
    settings = {"max_concurrent_requests_per_instance": "4",
                "environment_variables": {"WORKER_COUNT": "1"}}
    online.create_deployment("blue", scaler, endpoint="ept",
                             config={**settings, "all_traffic": "true"})

    alone, predict_s = [], 0.0
    for index, (body, headers) in enumerate(REQUESTS):
        answer, request_id, took = post(uri, index, "alone", body, headers)
        alone.append(outcome(answer, request_id))
        predict_s = max(predict_s, took)
    assert [o[0] for o in alone].count(200) == 10 and alone[5][:2] == (424, "500") and \
        alone[6][:2] == (424, "400")
    assert "<id>" in alone[5][2]["message"] and alone[12][4] == "client-16"

    (tmp_path / "blue.yml").write_text(textwrap.dedent(f"""\
        name: blue
        endpoint_name: ept
        request_settings: {{max_concurrent_requests_per_instance: 4}}
        environment_variables: {{WORKER_COUNT: "1"}}
        tags:
          mlflow-deploy/max_batch_size: "16"
          mlflow-deploy/max_batch_time_ms: "{int(BATCH_TIME_S * 1000)}"
    """))
    with SteadyLoad(uri, split(1.0), expect=[{"y": 1.0}]) as load:
        load.served_more()
        done = subprocess.run([MLFLOW_DEPLOY, "online-deployment", "update", "-f",
                               str(tmp_path / "blue.yml")], capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        # what show prints; no new revision: only the gateway reads the setting
        assert '"max_batch_size": 16' in done.stdout and '"revision": 1,' in done.stdout
        load.served_more()
        with ThreadPoolExecutor(len(REQUESTS)) as pool:
            for round_ in range(3):
                answers = list(pool.map(lambda job: post(uri, job[0], round_, *job[1]),
                                        enumerate(REQUESTS)))
                assert [outcome(a, i) for a, i, _ in answers] == alone
    assert load.failed == [] and load.ok > 0

    # alone at an idle deployment, a request is sent at once: it waits for no batch
    labels = {"endpoint": "ept", "deployment": "blue"}

    def waits_and_unwaited(scrape):
        return (prometheus.value(scrape, "mlflow_deploy_gateway_batch_wait_seconds_count",
                                 **labels),
                prometheus.value(scrape, "mlflow_deploy_gateway_batch_wait_seconds_bucket",
                                 le="0.0005", **labels))

    before = waits_and_unwaited(metrics(uri))
    answer, request_id, took = post(uri, 0, "last", *REQUESTS[0])
    assert outcome(answer, request_id) == alone[0]
    assert took < BATCH_TIME_S + predict_s + 1.0, (took, predict_s)
    scrape = metrics(uri)
    waits, unwaited = waits_and_unwaited(scrape)
    assert (waits, unwaited) == (before[0] + 1, before[1] + 1), "the lone request waited"
    calls = prometheus.value(scrape, "mlflow_deploy_gateway_batch_size_count", **labels)
    assert 0 < prometheus.value(scrape, "mlflow_deploy_gateway_batch_size_bucket", le="1.0",
                                **labels) < calls  # some calls carried more than one request
    # no request waited much past the batch time (0.1 s; the bucket above leaves the event loop
    # of a busy machine its lateness)
    assert waits > calls and prometheus.value(
        scrape, "mlflow_deploy_gateway_batch_wait_seconds_bucket", le="0.5", **labels) == waits

    with SteadyLoad(uri, split(1.0), expect=[{"y": 1.0}]) as load:
        load.served_more()
        updated = online.update_deployment("blue", config={"max_batch_size": 1}, endpoint="ept")
        load.served_more()
        waits_on = prometheus.value(metrics(uri),
                                    "mlflow_deploy_gateway_batch_wait_seconds_count", **labels)
    assert load.failed == [] and load.ok > 0
    assert updated["config"]["max_batch_size"] == 1 and updated["revision"] == 1
    answer, request_id, _ = post(uri, 0, "off", *REQUESTS[0])
    assert outcome(answer, request_id) == alone[0]
    assert prometheus.value(metrics(uri), "mlflow_deploy_gateway_batch_wait_seconds_count",
                            **labels) == waits_on  # off: no request went through a batch


def test_a_request_goes_at_once_to_a_free_worker_unless_batches_find_company(deploy_home,
                                                                             scaler):
    """With two workers, a request that arrives while one is being scored has a worker free:
    it is sent at once, however long the batch time. Once a batch has found company (both
    workers busy, two requests joined), the deployment keeps a worker for the batches: beside
    one request in flight, the next waits for its batch."""
    uri = online.create_endpoint("epw", config={"auth_mode": "none"})["scoring_uri"]
    online.create_deployment("blue", scaler, endpoint="epw", config={
        "max_concurrent_requests_per_instance": "4", "environment_variables": {"WORKER_COUNT": "2"},
        "max_batch_size": "16", "max_batch_time_ms": "2000", "all_traffic": "true"})
    address = instances.instances_of(deploy_home.get_deployment("blue"))[0].address
    labels = {"endpoint": "epw", "deployment": "blue"}

    def waits_and_unwaited():
        scrape = metrics(uri)
        return (prometheus.value(scrape, "mlflow_deploy_gateway_batch_wait_seconds_count",
                                 **labels),
                prometheus.value(scrape, "mlflow_deploy_gateway_batch_wait_seconds_bucket",
                                 le="0.0005", **labels))

    def beside_a_slow_one(round_):
        """A request sent while one slow request is being scored, the other worker free."""
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(post, uri, 0, round_, split(SLOW), {})
            wait_until(lambda: prometheus.total(metrics(uri), "mlflow_deploy_requests_in_flight",
                                                deployment="blue") == 1)
            answer, _, _ = post(uri, 1, round_, split(1.0), {})
            assert answer.status_code == 200 and answer.json() == [{"y": 1.0}]
            assert not slow.done(), "the slow request ended first: the two did not overlap"
            assert slow.result()[0].status_code == 200

    beside_a_slow_one("beside")
    assert waits_and_unwaited() == (2, 2), "a request waited for a batch beside a free worker"

    with ThreadPoolExecutor(4) as pool:  # both workers busy: the next two are joined
        slow = [pool.submit(post, uri, index, "busy", split(SLOW), {}) for index in (0, 1)]
        wait_until(lambda: supervisor.liveness(address, timeout=0.5) is None,
                   message="the slow requests did not take both workers")
        joined = [pool.submit(post, uri, index, "joined", split(x), {})
                  for index, x in ((2, 2.0), (3, 3.0))]
        assert [f.result()[0].status_code for f in slow] == [200, 200]
        assert [f.result()[0].json() for f in joined] == [[{"y": 2.0}], [{"y": 3.0}]]
    assert waits_and_unwaited() == (6, 4)
    assert prometheus.value(metrics(uri), "mlflow_deploy_gateway_batch_size_bucket", le="2.0",
                            **labels) - prometheus.value(
        metrics(uri), "mlflow_deploy_gateway_batch_size_bucket", le="1.0", **labels) == 1

    beside_a_slow_one("after")
    assert waits_and_unwaited() == (8, 5), "beside a free worker, after a joined batch, a " \
                                           "request went alone"


def test_only_what_splits_by_rows_is_split_and_only_plain_rows_are_joined():
    from mlflow_deploy.online.batching import _shape, _split

    # Azure's renderings: a list per row (Series, array, records), a dict of such lists
    assert _split(b'[{"y":1.0},{"y":2.0},{"y":3.0}]', [2, 1]) == \
        [b'[{"y":1.0},{"y":2.0}]', b'[{"y":3.0}]']
    assert _split(b'{"a":[1,2,3],"b":[[1],[2],[3]]}', [1, 2]) == \
        [b'{"a":[1],"b":[[1]]}', b'{"a":[2,3],"b":[[2],[3]]}']
    for unsplittable in (b'[1,2]', b'"text"', b'{"a":[1,2,3],"b":1}', b'{}', b'3'):
        assert _split(unsplittable, [1, 2]) is None
    # what goes alone: records, an index of its own, tensors of other lengths, no rows, a
    # number JSON cannot write back
    assert _shape([{"x": 1.0}]) is None
    assert _shape({"columns": ["x"], "index": [5], "data": [[1.0]]}) is None
    assert _shape({"a": [1, 2], "b": [1]}) is None
    assert _shape({"columns": ["x"], "data": []}) is None
    with pytest.raises(ValueError):
        _shape([[float("nan")]])
    assert _shape([1, 2])[1] == 2 and _shape({"a": [[1], [2]], "b": [3, 4]})[1] == 2
    # the kinds of values decide what joins: ints and floats are inferred apart
    assert _shape([[1.0]])[0] != _shape([[1]])[0] and _shape([[1.0]])[0] == _shape([[2.5]])[0]
