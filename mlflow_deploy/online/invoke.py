"""Client side of scoring: turn what ``predict`` is given into an Azure payload, post it to a
server's ``/score``, and turn a non-200 answer into the control plane's error."""

from typing import Any, Dict, Optional

from mlflow_deploy.errors import InvalidParameter, PredictionFailed
from mlflow_deploy.online.routes import MODEL_ERROR_STATUS

# pandas, numpy, the payload encoder and requests are imported where a payload is made or sent:
# every control-plane command imports this module (through online.deployments), and pandas'
# import was most of an `online-deployment update`'s own time (0.6 of 1.1 s)

__all__ = ["to_payload", "score", "post"]


def _unwrap_read_json(frame: Any) -> Any:
    """``mlflow deployments predict --input-path`` reads an Azure payload file with
    ``pd.read_json``: ``{"input_data": ...}`` arrives as one column ``input_data``, indexed by the
    split keys (columns/index/data), by tensor names, or by row number for a list. Undo that."""
    import numpy as np
    import pandas as pd

    column = frame["input_data"]
    if isinstance(frame.index, pd.RangeIndex):
        return [v.tolist() if isinstance(v, np.ndarray) else v for v in column]
    return {str(key): value for key, value in column.items()}


def to_payload(inputs: Any, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """What ``predict`` is given as an Azure body (scoring.payload.to_azure_body: a DataFrame in
    the split orientation, a list or ndarray as a tensor, a dict as named tensors, a dict with
    ``input_data`` as is), after undoing what MLflow's ``--input-path`` reading did to a file."""
    import numpy as np
    import pandas as pd

    from mlflow_deploy.scoring.payload import to_azure_body

    if isinstance(inputs, pd.DataFrame):
        columns = list(inputs.columns)
        if columns == ["input_data"]:
            inputs = {"input_data": _unwrap_read_json(inputs)}
        elif sorted(columns) == ["input_data", "params"]:
            raise InvalidParameter(
                "params cannot be sent in a file that `mlflow deployments predict` reads (MLflow "
                "reads it with pd.read_json); send them with the Python API "
                "(predict(..., params=...)) or HTTP."
            )
    elif not isinstance(inputs, (dict, list, tuple, np.ndarray, pd.Series)):
        raise InvalidParameter(
            "inputs must be a dict, a pandas DataFrame, a list or a numpy array."
        )
    return to_azure_body(inputs, params)


def score(scoring_uri: str, payload: Dict[str, Any], timeout_s: float,
          headers: Optional[Dict[str, str]] = None) -> Any:
    """POST the payload; return the decoded answer, or raise PredictionFailed (``post``)."""
    from mlflow_deploy.scoring.payload import dumps

    try:
        # the server's own serialiser: numpy, timestamps and bytes as Azure clients send them,
        # NaN and infinities as null
        body = dumps(payload)
    except TypeError as exc:
        raise InvalidParameter(f"inputs cannot be sent as JSON: {exc}.") from None
    return post(scoring_uri, body, timeout_s, headers)


def post(scoring_uri: str, body: bytes, timeout_s: float,
         headers: Optional[Dict[str, str]] = None) -> Any:
    """POST a JSON body; return the decoded answer, or raise PredictionFailed with the server's
    own message (its body is ours, so it never echoes the payload). An endpoint wraps its
    deployment's error in a 424 naming the inner status: the error shows both."""
    import requests

    try:
        answer = requests.post(
            scoring_uri,
            data=body,
            headers={"Content-Type": "application/json", **(headers or {})},
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
        inner = answer.headers.get(MODEL_ERROR_STATUS)
        if answer.status_code == 424 and inner:
            raise PredictionFailed(
                f"424 (the deployment answered {inner}): {message.strip()}", status=int(inner))
        raise PredictionFailed(
            f"{answer.status_code}: {message.strip()}", status=answer.status_code
        )
    try:
        return answer.json()
    except ValueError:
        return answer.text
