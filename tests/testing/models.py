"""Small real models for the testing tools: one per thing `check` and the strategies must see."""
import inspect

import numpy as np
import pandas as pd

import mlflow.pyfunc


class RowCount(mlflow.pyfunc.PythonModel):
    """Answers one number per row: lets any well-formed input through to the output."""

    def predict(self, context, model_input, params=None):
        return np.arange(len(model_input), dtype=np.float64)


class DictOfArrays(mlflow.pyfunc.PythonModel):
    """Returns a dict of numpy arrays: MLflow allows it, Azure's server fails to serialise it."""

    def predict(self, context, model_input, params=None):
        x = np.asarray(model_input["x"], dtype=np.float64)
        return {"doubled": x * 2, "rank": np.arange(len(x))}


def _optional():
    from mlflow.types import ColSpec

    takes = inspect.signature(ColSpec.__init__).parameters
    return {"required": False} if "required" in takes else {"optional": True}


def every_type_signature():
    """A column of every MLflow type, optional columns, and params of every type and a list."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import AnyType, Array, Map, Object, Property

    optional = _optional()
    inputs = Schema([
        ColSpec("double", "d"), ColSpec("float", "f"), ColSpec("long", "l"),
        ColSpec("integer", "i"), ColSpec("boolean", "b"), ColSpec("string", "s"),
        ColSpec("binary", "bin"), ColSpec("datetime", "when"),
        ColSpec(Array("long"), "ids"),
        ColSpec(Object([Property("name", "string"), Property("score", "double")]), "obj"),
        ColSpec(Map("double"), "weights"),
        ColSpec(AnyType(), "anything"),
        ColSpec("double", "opt_d", **optional), ColSpec("string", "opt_s", **optional),
    ])
    params = ParamSchema([
        ParamSpec("scale", "double", 1.0), ParamSpec("k", "long", 3),
        ParamSpec("flag", "boolean", False), ParamSpec("tag", "string", "x"),
        ParamSpec("ids", "long", [1, 2], shape=(-1,)),
    ])
    return ModelSignature(inputs=inputs, params=params)


def save(path, model, signature=None, input_example=None):
    takes = inspect.signature(mlflow.pyfunc.save_model).parameters
    code = {"code_paths": [__file__]} if "code_paths" in takes else {"code_path": [__file__]}
    mlflow.pyfunc.save_model(path=str(path), python_model=model, signature=signature,
                             input_example=input_example,
                             pip_requirements=["mlflow", "pandas", "numpy"], **code)
    return str(path)


def save_every_type(path):
    return save(path, RowCount(), every_type_signature())


def save_dict_output(path):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(inputs=Schema([ColSpec("double", "x")]))
    return save(path, DictOfArrays(), signature, pd.DataFrame({"x": [1.0, 2.5]}))
