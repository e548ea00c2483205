"""Small real models for the testing tools: one per thing `check` and the strategies must see."""
import inspect
import sys

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
    import cloudpickle

    takes = inspect.signature(mlflow.pyfunc.save_model).parameters
    code = {"code_paths": [__file__]} if "code_paths" in takes else {"code_path": [__file__]}
    # the classes are pickled by value: by reference they would load only where `tests` is
    # importable, and `mlflow-deploy check` serves the model from a folder of its own
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        mlflow.pyfunc.save_model(path=str(path), python_model=model, signature=signature,
                                 input_example=input_example,
                                 pip_requirements=["mlflow", "pandas", "numpy"], **code)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    return str(path)


def save_every_type(path):
    return save(path, RowCount(), every_type_signature())


def save_dict_output(path):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(inputs=Schema([ColSpec("double", "x")]))
    return save(path, DictOfArrays(), signature, pd.DataFrame({"x": [1.0, 2.5]}))


# Models from code (a .py file that calls mlflow.models.set_model).
FORK_SHY_ERROR = "this library does not work after a fork"
FORK_SHY = '''
import sys

import mlflow.models
import mlflow.pyfunc


class ForkShy(mlflow.pyfunc.PythonModel):
    """Predicts in a plain process; fails in a server's forked worker (as a library that is not
    fork-safe does: the worker is a fork of gunicorn's master)."""

    def predict(self, context, model_input, params=None):
        # in a gunicorn process (its master's run loop came with the fork), not merely one that
        # imported parts of gunicorn, as a test of them does
        if "gunicorn.arbiter" in sys.modules:
            raise RuntimeError("{}")
        return [1.0] * len(model_input)


mlflow.models.set_model(ForkShy())
'''.format(FORK_SHY_ERROR)
CRASHER = '''
import os
import signal

import mlflow.models
import mlflow.pyfunc


class Crasher(mlflow.pyfunc.PythonModel):
    """Kills the process it predicts in when x is 13 (a native crash): the caller gets no answer."""

    def predict(self, context, model_input, params=None):
        if (model_input["x"] == 13.0).any():
            os.kill(os.getpid(), signal.SIGKILL)
        return [1.0] * len(model_input)


mlflow.models.set_model(Crasher())
'''


def save_from_code(root, name, code):
    """A models-from-code pyfunc with one double column ``x`` and the input example x = 42."""
    from mlflow.models import infer_signature

    root.mkdir(parents=True, exist_ok=True)
    source = root / (name + ".py")
    source.write_text(code)
    frame = pd.DataFrame({"x": [42.0]})
    mlflow.pyfunc.save_model(str(root / name), python_model=str(source),
                             signature=infer_signature(frame, [1.0]), input_example=frame,
                             pip_requirements=["mlflow", "pandas", "numpy"])
    return str(root / name)


def save_fork_shy(root):
    return save_from_code(root, "fork-shy", FORK_SHY)
