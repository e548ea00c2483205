"""Train the three small models the multi-model scoring script (score.py, seed 000) serves.

    python example_models/scripts/multi_model/build.py [OUT]     # OUT defaults to ./models

writes OUT/model_A/model.pkl, OUT/model_B/model.pkl and OUT/model_C/model.pkl: scikit-learn
regressions on 3 features, pickled as score.py loads them. Deploy the folder and the script with
`-m OUT -C code=example_models/scripts/multi_model -C scoring_script=score.py`; the deployment
sees it as $AZUREML_MODEL_DIR/models/..., which is where score.py looks. A request:
    {"model_id": "model_A", "data": [[1, 2, 3], [4, 5, 6]]}
"""
import os
import pickle
import sys

import numpy as np


def train():
    """model_id -> fitted model; each learns a different function of the same 3 features."""
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    X = rng.uniform(0, 12, size=(200, 3))
    return {
        "model_A": LinearRegression().fit(X, X @ [1.0, 2.0, 3.0]),
        "model_B": Ridge(alpha=1.0).fit(X, X.sum(axis=1) * 10),
        "model_C": DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, X[:, 0] > 6),
    }


def build(out: str) -> str:
    """Pickle every model into out/<model_id>/model.pkl; returns out."""
    for model_id, model in train().items():
        folder = os.path.join(out, model_id)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "model.pkl"), "wb") as f:
            pickle.dump(model, f)
    return out


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "models"))
