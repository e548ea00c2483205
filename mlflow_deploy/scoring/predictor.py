"""Load an MLflow model once and predict with it.

Reads what scoring needs from the model (signature, params schema, input example) at load time,
so nothing on the request path touches MLmodel or the disk again.
"""
import inspect
import json
import os
from typing import Any, Dict, Optional

import mlflow.pyfunc

from .schema import Signature


class Predictor:
    def __init__(self, model: Any, model_dir: str):
        self.model = model
        self.model_dir = model_dir
        meta = model.metadata
        self.input_schema = meta.get_input_schema()
        self.output_schema = meta.get_output_schema()
        self.params_schema = meta.get_params_schema() if hasattr(meta, "get_params_schema") \
            else None
        self.signature = Signature.from_mlflow(self.input_schema, self.params_schema)
        self.mlflow_version = getattr(meta, "mlflow_version", None)
        self.flavors = sorted(meta.flavors)
        self.input_example = azure_example(model_dir, meta)
        # mlflow < 2.6 has no params argument
        self._takes_params = "params" in inspect.signature(model.predict).parameters

    @classmethod
    def load(cls, model_dir: str) -> "Predictor":
        return cls(mlflow.pyfunc.load_model(model_dir), model_dir)

    def predict(self, model_input: Any, params: Optional[Dict[str, Any]] = None) -> Any:
        if params and self._takes_params:
            return self.model.predict(model_input, params=params)
        return self.model.predict(model_input)


def loader_module(model_dir: str) -> Optional[str]:
    """The MLmodel's python_function loader module (``mlflow.sklearn``, ``mlflow.lightgbm``, ...):
    which flavor will load the model, read without loading it."""
    from mlflow.models import Model

    flavor = Model.load(model_dir).flavors.get("python_function") or {}
    return flavor.get("loader_module")


def azure_example(model_dir: str, meta: Any) -> Optional[Dict[str, Any]]:
    """The model's saved input example as an Azure request body, for /swagger.json."""
    info = getattr(meta, "saved_input_example_info", None) or {}
    path = info.get("artifact_path")
    if not path:
        return None
    try:
        with open(os.path.join(model_dir, path), encoding="utf-8") as f:
            example = json.load(f)
    except (OSError, ValueError):
        return None
    body: Dict[str, Any] = {}
    if isinstance(example, dict) and "params" in example and isinstance(example["params"], dict):
        body["params"] = example.pop("params")
    if isinstance(example, dict) and set(example) == {"inputs"}:  # mlflow 2 tensor examples
        example = example["inputs"]
    if info.get("type") == "dataframe" and info.get("pandas_orient") == "records":
        columns = list(example[0]) if example else []
        example = {"columns": columns, "data": [[r.get(c) for c in columns] for r in example]}
    if isinstance(example, dict) and "data" in example and "index" not in example:
        example = dict(example, index=list(range(len(example["data"]))))
    body["input_data"] = example
    return dict(sorted(body.items()))
