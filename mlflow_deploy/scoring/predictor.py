"""Load an MLflow model once and predict with it.

Reads what scoring needs from the model (signature, params schema, input example) at load time,
so nothing on the request path touches MLmodel or the disk again.
"""
import inspect
import json
import os
import warnings
from typing import Any, Callable, Dict, Optional

import mlflow.pyfunc
import numpy as np
import pandas as pd

from .schema import Signature

#: flavors whose pyfunc predict hands its input straight to the library's own predict. For them
#: MLflow's schema enforcement inside PyFuncModel.predict repeats ours, which is stricter and has
#: already given every column the signature's type: about a third of a 1-row request's CPU
#: (bench/profile_scoring.py). Other flavors convert the input in their wrapper or through type
#: hints, and keep MLflow's path.
DIRECT_LOADERS = frozenset({"mlflow.sklearn", "mlflow.xgboost", "mlflow.lightgbm"})


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
        loader = (meta.flavors.get("python_function") or {}).get("loader_module")
        self._loader = loader
        self._direct = direct_predict(model, loader)
        self._as_array: Optional[bool] = None  # decided at the first prediction (frame_as_array)

    @classmethod
    def load(cls, model_dir: str) -> "Predictor":
        return cls(mlflow.pyfunc.load_model(model_dir), model_dir)

    def predict(self, model_input: Any, params: Optional[Dict[str, Any]] = None) -> Any:
        """Predict on input our enforcement produced (schema.enforce): straight through the
        flavor's own predict where that is all MLflow would do after enforcing again."""
        if self._direct is not None and not params:
            if isinstance(model_input, pd.DataFrame) and self.frame_as_array():
                # a worker predicts one request at a time (sync workers, one batch file at a
                # time): the process-wide filter list may be swapped for the call
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=_NO_NAMES_WARNING,
                                            category=UserWarning)
                    return self._direct(model_input.to_numpy())
            return self._direct(model_input)
        if params and self._takes_params:
            return self.model.predict(model_input, params=params)
        return self.model.predict(model_input)

    def frame_as_array(self) -> bool:
        """takes_array, decided by the process that predicts, at its first prediction, never at
        load: its trial prediction starts the flavor's native thread pools (OpenMP, as
        HistGradientBoosting's), and a gunicorn master that loaded the model and then forks
        would leave each worker blocked forever in the pool it inherited."""
        if self._as_array is None:
            self._as_array = self._direct is not None and takes_array(
                self.model, self._loader, self._direct, self.signature)
        return self._as_array


def direct_predict(model: Any, loader: Optional[str]) -> Optional[Callable[[Any], Any]]:
    """The flavor's predict behind ``model`` (a PyFuncModel) for DIRECT_LOADERS, else None.

    MLflow offers no public way to skip its enforcement, so this reads PyFuncModel's private
    ``_predict_fn`` (the flavor wrapper's bound predict, mlflow 2.7 to 3.x alike), here only:
    where it is missing, None, and the public predict is used.
    """
    if loader not in DIRECT_LOADERS:
        return None
    function = getattr(model, "_predict_fn", None)
    return function if callable(function) else None


#: scikit-learn's warning for an array given to an estimator fitted on a DataFrame: takes_array
#: gives it one only where the columns are those of the fit, in the fit's order
_NO_NAMES_WARNING = "X does not have valid feature names"


def takes_array(model: Any, loader: Optional[str], direct: Callable[[Any], Any],
                signature: Signature) -> bool:
    """Whether a scikit-learn model may be given the enforced frame as its numpy array: the same
    array its own input check would make of the frame (``frame.to_numpy()``), without the check's
    per-call work on a DataFrame (column names, dtypes), most of a 1-row request's CPU.

    Only when that cannot change a prediction: every column a required double (one float
    block), the estimator fitted on these columns in this order or on an array (its
    ``feature_names_in_``, read through the public ``get_raw_model``), and an example row
    predicted both ways gives the same answer (a pipeline that selects columns by name fails
    on an array, and keeps the frame).
    """
    if loader != "mlflow.sklearn" or signature.kind != "columns" or not signature.columns:
        return False
    if not all(c.type == "double" and c.required for c in signature.columns):
        return False
    try:
        estimator = model.get_raw_model()
    except Exception:  # noqa: BLE001 - mlflow < 2.12 has no get_raw_model: keep the frame
        return False
    names = [c.name for c in signature.columns]
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is not None and [str(n) for n in fitted] != names:
        return False
    example = pd.DataFrame(np.full((2, len(names)), 0.5), columns=names)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            same = np.array_equal(np.asarray(direct(example)),
                                  np.asarray(direct(example.to_numpy())))
    except Exception:  # noqa: BLE001 - whatever fails on an array keeps the frame
        return False
    return bool(same)


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
