"""The scoring server. Runs inside the model's own environment, so it imports only the standard
library, numpy, pandas, mlflow and (app.py only) flask, and never the control plane."""
