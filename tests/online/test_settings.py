"""settings.py: each -C key is parsed from a string or a Python value; errors name the key only."""

import pytest

from mlflow_deploy.errors import InvalidParameter
from mlflow_deploy.online.settings import DeploymentSettings, parse_settings


def test_defaults():
    assert parse_settings(None) == DeploymentSettings()
    assert parse_settings({}).to_dict() == {
        "instance_count": 1,
        "env_manager": "uv",
        "python_version_policy": "exact",
        "package": None,
        "exclude_newer": None,
        "code": None,
        "scoring_script": None,
        "conda_file": None,
        "validation": "compatible",
        "request_timeout_ms": 5000,
        "max_request_mb": 100.0,
        "error_details": True,
        "port": None,
        "max_concurrent_requests_per_instance": 1,
        "max_batch_size": 1,
        "max_batch_time_ms": 10,
        "environment_variables": {},
        "liveness_probe": {"initial_delay": 0, "period": 1, "timeout": 2,
                           "failure_threshold": 3, "success_threshold": 1},
        "readiness_probe": {"initial_delay": 0, "period": 1, "timeout": 2,
                            "failure_threshold": 30, "success_threshold": 1},
    }


def test_strings_from_the_cli():
    settings = parse_settings(
        {
            "instance_count": "3",
            "env_manager": "LOCAL",
            "python_version_policy": "Nearest",
            "validation": "strict",
            "request_timeout_ms": " 250 ",
            "max_request_mb": "0.5",
            "error_details": "false",
            "port": "18080",
        }
    )
    assert settings == DeploymentSettings(
        instance_count=3,
        env_manager="local",
        python_version_policy="nearest",
        validation="strict",
        request_timeout_ms=250,
        max_request_mb=0.5,
        error_details=False,
        port=18080,
    )


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
        ("python_version_policy", "closest"),
        ("package", "no/such/folder"),
        ("max_batch_size", "0"),
        ("max_batch_size", "1025"),
        ("max_batch_time_ms", "-1"),
    ],
)
def test_bad_values_name_the_key_not_the_value(key, value):
    with pytest.raises(InvalidParameter) as caught:
        parse_settings({key: value})
    message = str(caught.value)
    assert f"'{key}'" in message
    if isinstance(value, str) and len(value) > 1:
        assert f"'{value}'" not in message


def test_probes_lay_given_fields_over_the_local_defaults():
    settings = parse_settings({"liveness_probe": '{"period": 5, "failure_threshold": 2}',
                               "readiness_probe": {"initial_delay": 3}})
    assert settings.liveness_probe == {"initial_delay": 0, "period": 5, "timeout": 2,
                                       "failure_threshold": 2, "success_threshold": 1}
    assert settings.readiness_probe["initial_delay"] == 3
    assert settings.readiness_probe["failure_threshold"] == 30


@pytest.mark.parametrize("key, value, named", [
    ("liveness_probe", '{"period": 0}', "'liveness_probe.period'"),
    ("liveness_probe", '{"success_threshold": 2}', "'liveness_probe.success_threshold'"),
    ("readiness_probe", '{"perod": 1}', "'readiness_probe' takes only"),
    ("readiness_probe", "[1]", "'readiness_probe' must map"),
    ("readiness_probe", "{", "'readiness_probe' is not a JSON object"),
    ("readiness_probe", {"timeout": "soon"}, "'readiness_probe.timeout'"),
])
def test_bad_probes_name_the_field(key, value, named):
    with pytest.raises(InvalidParameter, match=named) as caught:
        parse_settings({key: value})
    assert "soon" not in str(caught.value) and "perod" not in str(caught.value)


@pytest.mark.parametrize("manager", ["uv", "virtualenv", "local", "conda"])
def test_every_env_manager_is_accepted(manager):
    assert parse_settings({"env_manager": manager}).env_manager == manager


def test_package_is_an_absolute_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pkg").mkdir()
    assert parse_settings({"package": "pkg"}).package == str(tmp_path / "pkg")
    assert parse_settings({"package": ""}).package is None


def test_a_batch_waits_less_than_the_request_timeout():
    assert parse_settings({"request_timeout_ms": 5}).max_batch_time_ms == 10  # batching off
    with pytest.raises(InvalidParameter, match="'max_batch_time_ms' must be below "
                                               "'request_timeout_ms'"):
        parse_settings({"max_batch_size": 8, "max_batch_time_ms": 5000})


def test_unknown_key_lists_known_ones():
    with pytest.raises(InvalidParameter, match="Unknown config key 'workers'.*instance_count"):
        parse_settings({"workers": "2"})


def test_script_settings_go_together(tmp_path):
    (tmp_path / "score.py").write_text("def init(): pass\ndef run(raw): return raw\n")
    (tmp_path / "env.yml").write_text("dependencies: [python=3.11]\n")
    settings = parse_settings({"code": str(tmp_path), "scoring_script": "score.py",
                               "conda_file": str(tmp_path / "env.yml")})
    assert settings.code == str(tmp_path) and settings.scoring_script == "score.py"
    for config, fragment in [
        ({"code": str(tmp_path)}, "go together"),
        ({"scoring_script": "score.py"}, "go together"),
        ({"code": str(tmp_path), "scoring_script": "other.py"}, "inside 'code'"),
        ({"code": str(tmp_path), "scoring_script": "../score.py"}, "relative"),
        ({"conda_file": str(tmp_path / "env.yml")}, "environment of a scoring script"),
        ({"conda_file": str(tmp_path / "missing.yml")}, "existing file"),
        # a script's run() takes any body: there are no rows to join
        ({"code": str(tmp_path), "scoring_script": "score.py", "max_batch_size": 8},
         "'max_batch_size'"),
    ]:
        with pytest.raises(InvalidParameter, match=fragment):
            parse_settings(config)


def test_set_items_alone_change_only_what_they_name():
    """An update by --set without a file: a path naming a block replaces each key in it, one
    naming an entry of a mapping changes that entry over the deployment's current value, in
    whichever order the items come; an empty update keeps every setting."""
    from mlflow_deploy.online.settings import config_from_set
    from mlflow_deploy.specs import load_deployment_spec, set_path

    current = parse_settings({"environment_variables": {"WORKER_COUNT": "2", "A": "1"},
                              "liveness_probe": {"period": 2}, "request_timeout_ms": 3000,
                              "max_concurrent_requests_per_instance": 4}).to_dict()

    def config(*items):
        spec = load_deployment_spec(name="blue", endpoint_name="ept", set_values=items)
        return config_from_set(spec, map(set_path, items), current)

    assert config() == {}
    assert config("instance_count=2") == {"instance_count": 2}
    assert config("environment_variables.B=x", "liveness_probe.timeout=3") == {
        "environment_variables": {"WORKER_COUNT": "2", "A": "1", "B": "x"},
        "liveness_probe": {**current["liveness_probe"], "timeout": 3}}
    assert config("environment_variables.B=x", "environment_variables={C: 1}") == \
        config("environment_variables={C: 1}") == {"environment_variables": {"C": "1"}}
    assert config("environment_variables={C: 1}", "environment_variables.B=x") == {
        "environment_variables": {"C": "1", "B": "x"}}
    assert config("request_settings.request_timeout_ms=100") == {"request_timeout_ms": 100}
    assert config("request_settings={request_timeout_ms: 100}") == {
        "request_timeout_ms": 100, "max_concurrent_requests_per_instance": 1}
    assert config("tags.mlflow-deploy/validation=strict") == {"validation": "strict"}
    assert parse_settings(config("environment_variables.B=x"), base=DeploymentSettings(
        **current)).to_dict() == {**current, "environment_variables": {
            "WORKER_COUNT": "2", "A": "1", "B": "x"}}
