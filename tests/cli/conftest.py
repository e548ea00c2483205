"""The environment scenarios of tests/envs/ (models saved and built once per session), for the
tests of `mlflow-deploy env`: fixtures of a conftest reach only its own folder."""
from tests.envs.conftest import built, env_home, models  # noqa: F401 - fixtures
