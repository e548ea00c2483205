"""The request a new deployment is tried with before it is declared ready.

In-process checks cannot see what only a forked worker does (a thread pool that deadlocks after a
fork, a library that fails in a child), so the control plane posts one real request to the real
server: the model's own input example when it has one (it must answer 200), else a payload made
from the signature (the model may rightly reject made-up values with a 4xx: only a 5xx, a timeout
or a crash fails it). Runs where mlflow is: the control plane, or a model's environment.
"""
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional

if TYPE_CHECKING:  # numpy and the schema (pandas) load where a test is made: a kept test is
    # read by the control plane, which need not import them (online/selftest.py)
    from .schema import Column, Signature, Tensor

__all__ = ["SelfTest", "self_test_for", "generated_body"]

#: one plain value per signature type; a required column of any other type (array, object, map,
#: any) has no value to make up, and then there is no generated payload
_VALUES: Dict[str, Any] = {"double": 0.5, "float": 0.5, "long": 1, "integer": 1,
                           "boolean": True, "string": "a", "binary": "YQ==",
                           "datetime": "2020-01-01T00:00:00"}


@dataclass(frozen=True)
class SelfTest:
    """``kind``: "input_example" (must answer 200) or "generated" (must not answer 5xx)."""

    kind: str
    body: bytes

    def passed(self, status: int) -> bool:
        return status == 200 if self.kind == "input_example" else status < 500


def self_test_for(model_dir: str) -> Optional[SelfTest]:
    """The self-test of the MLflow model in ``model_dir``; None when it has neither an input
    example nor a signature values can be made up for."""
    from mlflow.models import Model

    from .predictor import azure_example
    from .schema import Signature

    meta = Model.load(model_dir)
    example = azure_example(model_dir, meta)
    if example is not None:
        return SelfTest("input_example", json.dumps(example).encode("utf-8"))
    params_schema = meta.get_params_schema() if hasattr(meta, "get_params_schema") else None
    body = generated_body(Signature.from_mlflow(meta.get_input_schema(), params_schema))
    return SelfTest("generated", json.dumps(body).encode("utf-8")) if body else None


def generated_body(signature: "Signature") -> Optional[Dict[str, Any]]:
    """One row the signature accepts, as an Azure body; None for no signature or a required
    column or tensor of a type with no plain value."""
    if signature.columns:
        columns = [c for c in signature.columns if c.required]
        row = [_value(c) for c in columns]
        if any(v is None for v in row):
            return None
        return {"input_data": {"columns": [c.name for c in columns], "index": [0],
                               "data": [row]}}
    if signature.tensors:
        arrays = [_tensor(t) for t in signature.tensors]
        if any(a is None for a in arrays):
            return None
        if signature.kind == "named":
            return {"input_data": {t.name: a for t, a in zip(signature.tensors, arrays)}}
        return {"input_data": arrays[0]}
    return None


def _value(column: "Column") -> Any:
    return _VALUES.get(column.type)


def _tensor(tensor: "Tensor") -> Optional[List[Any]]:
    kind = tensor.dtype.kind
    value = {"f": 0.5, "i": 1, "u": 1, "b": True, "U": "a", "S": "a"}.get(kind)
    if value is None:
        return None
    import numpy as np

    shape = [1 if d is None or d < 0 else d for d in tensor.shape] or [1]
    return np.full(shape, value, dtype=object).tolist()
