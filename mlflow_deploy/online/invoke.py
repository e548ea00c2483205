"""Client side of scoring: turn what ``predict`` is given into an Azure payload, post it to a
server's ``/score``, and turn a non-200 answer into the control plane's error."""

from typing import Any, Dict, Optional

import numpy as np
import pandas as pd
import requests

from mlflow_deploy.errors import InvalidParameter, PredictionFailed
from mlflow_deploy.scoring.payload import dumps

__all__ = ["to_payload", "score"]


def _unwrap_read_json(frame: pd.DataFrame) -> Any:
    """``mlflow deployments predict --input-path`` reads an Azure payload file with
    ``pd.read_json``: ``{"input_data": ...}`` arrives as one column ``input_data``, indexed by the
    split keys (columns/index/data), by tensor names, or by row number for a list. Undo that."""
    column = frame["input_data"]
    if isinstance(frame.index, pd.RangeIndex):
        return [v.tolist() if isinstance(v, np.ndarray) else v for v in column]
    return {str(key): value for key, value in column.items()}


def _frame_to_split(frame: pd.DataFrame) -> Dict[str, Any]:
    split = frame.to_dict(orient="split")
    split.pop("index", None)
    # NaN / NaT become null, as Azure clients send missing values
    split["data"] = [
        [None if (not isinstance(v, (list, dict, np.ndarray)) and pd.isna(v)) else v for v in row]
        for row in split["data"]
    ]
    return split


def to_payload(inputs: Any, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A dict with ``input_data`` goes as is; a DataFrame as split orientation; a list or ndarray
    as a tensor; any other dict as named tensors. ``params`` become the top-level ``params``."""
    if isinstance(inputs, pd.DataFrame):
        columns = list(inputs.columns)
        if columns == ["input_data"]:
            payload = {"input_data": _unwrap_read_json(inputs)}
        elif sorted(columns) == ["input_data", "params"]:
            raise InvalidParameter(
                "params cannot be sent through --input-path (MLflow reads the file with "
                "pd.read_json); send them with the Python API (predict(..., params=...)) or HTTP."
            )
        else:
            payload = {"input_data": _frame_to_split(inputs)}
    elif isinstance(inputs, dict):
        payload = dict(inputs) if "input_data" in inputs else {"input_data": inputs}
    elif isinstance(inputs, (list, tuple, np.ndarray)):
        payload = {
            "input_data": np.asarray(inputs).tolist()
            if isinstance(inputs, np.ndarray)
            else list(inputs)
        }
    elif isinstance(inputs, pd.Series):
        payload = {"input_data": inputs.tolist()}
    else:
        raise InvalidParameter(
            "inputs must be a dict, a pandas DataFrame, a list or a numpy array."
        )
    if params:
        payload["params"] = dict(params)
    return payload


def score(scoring_uri: str, payload: Dict[str, Any], timeout_s: float) -> Any:
    """POST the payload; return the decoded answer, or raise PredictionFailed with the server's
    own message (its body is ours, so it never echoes the payload)."""
    try:
        # the server's own serialiser: numpy, timestamps and bytes as Azure clients send them,
        # NaN and infinities as null
        body = dumps(payload)
    except TypeError as exc:
        raise InvalidParameter(f"inputs cannot be sent as JSON: {exc}.") from None
    try:
        answer = requests.post(
            scoring_uri,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=timeout_s,
        )
    except requests.RequestException as exc:
        raise PredictionFailed(
            f"The scoring server did not answer ({type(exc).__name__})."
        ) from None
    if answer.status_code != 200:
        try:
            message = answer.json().get("message") or answer.text
        except (ValueError, AttributeError):
            message = answer.text
        raise PredictionFailed(
            f"{answer.status_code}: {message.strip()}", status=answer.status_code
        )
    try:
        return answer.json()
    except ValueError:
        return answer.text
