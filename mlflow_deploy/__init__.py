"""mlflow-deploy: Azure ML no-code deployment of MLflow models, on your own machine."""

__version__ = "0.1.0"
