"""``python -m mlflow_deploy.cli``: the ``mlflow-deploy`` command without its console script."""
from mlflow_deploy.cli import main

if __name__ == "__main__":
    main()
