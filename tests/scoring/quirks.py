"""A test model whose behaviour is chosen per request by the `mode` param."""
import time

import numpy as np
import pandas as pd

import mlflow.pyfunc


class Quirks(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        params = params or {}
        mode = params.get("mode", "ok")
        x = np.asarray(model_input["x"], dtype=np.float64)
        if mode == "value_error":
            raise ValueError("x must be positive " + "!" * 400 + "\nsecond line")
        if mode == "key_error":
            raise KeyError("feature_17")
        if mode == "runtime":
            raise RuntimeError("the GPU caught fire")
        if mode == "sleep":
            time.sleep(float(params.get("seconds", 0.0)))
        if mode == "nan":
            return np.array([np.nan, np.inf, -np.inf, 1.5])[: len(x)]
        if mode == "dict":
            return {"a": x * 2, "b": np.arange(len(x))}
        if mode == "scalar":
            return np.float32(x.sum())
        if mode == "timestamp":
            return pd.DataFrame({"when": pd.to_datetime(["2024-01-02T03:04:05"] * len(x)),
                                 "x": x})
        if mode == "string":
            return "hello"
        if mode == "series":
            return pd.Series(x * 3)
        if mode == "timedelta":  # no JSON encoding for it
            return pd.Series([pd.Timedelta(seconds=v) for v in x])
        if mode == "object":
            return [object() for _ in x]
        return x * 2


def save(path):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("double", "x")]),
        params=ParamSchema([ParamSpec("mode", "string", "ok"),
                            ParamSpec("seconds", "double", 0.0)]))
    import inspect

    takes = inspect.signature(mlflow.pyfunc.save_model).parameters
    code = {"code_paths": [__file__]} if "code_paths" in takes else {"code_path": [__file__]}
    mlflow.pyfunc.save_model(path=str(path), python_model=Quirks(), signature=signature,
                             pip_requirements=["mlflow", "pandas", "numpy"], **code)
    return str(path)
