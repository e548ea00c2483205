"""settings.py: each -C key is parsed from a string or a Python value; errors name the key only."""

import pytest

from mlflow_deploy.errors import InvalidParameter
from mlflow_deploy.online.settings import DeploymentSettings, parse_settings


def test_defaults():
    assert parse_settings(None) == DeploymentSettings()
    assert parse_settings({}).to_dict() == {
        "instance_count": 1,
        "env_manager": "local",
        "validation": "compatible",
        "request_timeout_ms": 5000,
        "max_request_mb": 100.0,
        "error_details": True,
        "port": None,
    }


def test_strings_from_the_cli():
    settings = parse_settings(
        {
            "instance_count": "3",
            "env_manager": "LOCAL",
            "validation": "strict",
            "request_timeout_ms": " 250 ",
            "max_request_mb": "0.5",
            "error_details": "false",
            "port": "18080",
        }
    )
    assert settings == DeploymentSettings(3, "local", "strict", 250, 0.5, False, 18080)


def test_python_values_and_base():
    base = parse_settings({"instance_count": 2, "port": 18081})
    settings = parse_settings({"error_details": False, "max_request_mb": 2}, base=base)
    assert (
        settings.instance_count,
        settings.port,
        settings.error_details,
        settings.max_request_mb,
    ) == (2, 18081, False, 2.0)
    assert parse_settings({"port": "auto"}, base=base).port is None


@pytest.mark.parametrize(
    "key, value",
    [
        ("instance_count", "0"),
        ("instance_count", "two"),
        ("instance_count", True),
        ("instance_count", "65"),
        ("validation", "lenient"),
        ("request_timeout_ms", "-1"),
        ("request_timeout_ms", "180001"),
        ("max_request_mb", "0"),
        ("max_request_mb", "big"),
        ("error_details", "maybe"),
        ("port", "80"),
        ("port", "70000"),
        ("port", "x"),
        ("env_manager", "pipenv"),
    ],
)
def test_bad_values_name_the_key_not_the_value(key, value):
    with pytest.raises(InvalidParameter) as caught:
        parse_settings({key: value})
    message = str(caught.value)
    assert f"'{key}'" in message
    if isinstance(value, str) and len(value) > 1:
        assert f"'{value}'" not in message


@pytest.mark.parametrize("manager", ["conda", "virtualenv", "uv"])
def test_other_env_managers_come_later(manager):
    with pytest.raises(InvalidParameter, match="comes? with environment building"):
        parse_settings({"env_manager": manager})


def test_unknown_key_lists_known_ones():
    with pytest.raises(InvalidParameter, match="Unknown config key 'workers'.*instance_count"):
        parse_settings({"workers": "2"})
