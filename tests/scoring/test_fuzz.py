"""A bounded fuzz run against live servers of example models: hostile and valid requests drawn
by hypothesis (tests/scoring/fuzzing.py: the project's payload strategies, structural garbage,
odd headers, encodings and query strings), each sent over its own socket. No answer may be a
5xx, a hang or a crash; 4xx answers carry a JSON message, 200s are JSON, every answer has the
request ids, a valid payload scores 200. `make bench-fuzz` sends 10^5 of them."""
import os

import pytest
from hypothesis import HealthCheck, given, settings

from tests.scoring import fuzzing

# one of each kind of signature: a tensor, named tensors, columns with params, none
MODELS = ["iris-tensor", "tokens-mask", "mixed-params", "no-signature"]
# the old-stack run (tests/test_old_stack.py) sends fewer: it looks for what that stack's
# libraries answer differently, which the first draws already reach
EXAMPLES_ENV = "MLFLOW_DEPLOY_TEST_FUZZ_EXAMPLES"
EXAMPLES = int(os.environ.get(EXAMPLES_ENV, "300"))


def signature_of(model_dir):
    from mlflow.models import Model

    return Model.load(model_dir).signature


@pytest.mark.parametrize("name", MODELS)
def test_no_request_gets_a_5xx_a_hang_or_a_crash(servers, example_model_dirs, name):
    server = servers[name]
    address = ("127.0.0.1", server.port)
    strategy = fuzzing.probes(signature_of(example_model_dirs[name]),
                              server.config.options.max_request_bytes)

    # derandomized: the same requests every run, so a failure here is the code's, not luck's
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def answered(probe):
        answer = fuzzing.exchange(address, probe.request())
        problems = fuzzing.judge(probe, answer)
        assert not problems, "{}\n{}".format(problems, probe.summary())

    answered()
    assert server.proc.poll() is None
