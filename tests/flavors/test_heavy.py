"""The heavy flavors (PyTorch, TensorFlow/Keras, a transformers pipeline): served and compared
like the matrix (test_matrix.py), but only under `make test-flavors`, which installs their
libraries (gigabytes: not for every `make test`) into a venv of their own, `.venv-flavors`.

torch is pinned to 2.13.0, whose CPU build lies on this machine's disk: pip takes it from there,
and so does the env builder, which hands pip's find-links to uv (envs/indexes.py)."""
import pytest

from example_models.flavors import HEAVY
from tests.flavors.conftest import HEAVY_ENV, heavy_requested, matrix_case, serve_and_compare

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not heavy_requested(), reason="heavy flavors: `make test-flavors` runs "
                                                     "them (it sets {})".format(HEAVY_ENV)),
]

LIBRARY = {"pytorch": "torch", "tensorflow": "tensorflow", "transformers": "transformers"}


@pytest.mark.parametrize("name", [matrix_case(name) for name in HEAVY])
def test_the_heavy_flavor_serves_its_input_example_as_in_process(name, matrix_model,
                                                                 deploy_home, bounded_start):
    pytest.importorskip(LIBRARY[name])
    bounded_start(name)
    serve_and_compare(name, matrix_model(name))
