from tests.online.fixtures import deploy_home  # noqa: F401
