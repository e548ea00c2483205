"""Azure ML CLI v2 YAML specs: Azure's own examples parse, each class of key (implemented,
recorded and ignored, unknown) behaves as documented, ``--set`` and the flags override the file,
and every error names the file and line (or the flag) of the key at fault, never its value."""
import dataclasses
import os
import pathlib
import textwrap

import pytest

from mlflow_deploy.errors import InvalidParameter
from mlflow_deploy.specs import (
    DeploymentSpec,
    EndpointSpec,
    ProbeSettings,
    RequestSettings,
    SpecError,
    load_deployment_spec,
    load_endpoint_spec,
    parse_share_map,
)

DATA = pathlib.Path(__file__).resolve().parent / "data" / "azure_yaml"
SECRET = "SECRET-VALUE-123"


@pytest.fixture
def write(tmp_path):
    """Write a YAML spec (dedented) into the test's folder; returns its path."""
    def write(text, name="spec.yml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return str(path)
    return write


def error_of(call, *args, **kwargs):
    """The SpecError ``call`` raises; its message must never carry the distinctive value."""
    with pytest.raises(SpecError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert SECRET not in message and "SECRET" not in message, message
    return message


# ---- Azure's examples -------------------------------------------------------------------------

SEED_DEPLOYMENTS = {
    # file: (model, line of environment.image, line of instance_type)
    "deployment-local-model-file.yml":
        ("/Downloads/multi-models-sample/models/model_1/v1/sample_m1.pkl", 11, 12),
    "deployment-local-model-folder.yml": ("/Downloads/multi-models-sample/models", 11, 12),
    "deployment-registered-model.yml": ("azureml:local-multimodel:3", 10, 11),
}
SEED_ENDPOINTS = {
    "endpoint-sample.yml": ("this is a sample endpoint", {}),
    "endpoint-traffic-blue.yml": (None, {"blue": 100}),
    "endpoint-traffic-blue-green.yml": (None, {"blue": 50, "green": 50}),
}
SEED_ERRORS = {
    "endpoint-token.yml": (load_endpoint_spec, ":4: key 'auth_mode'", "not supported locally"),
    "deployment-blue-registered-environment.yml":
        (load_deployment_spec, ":5: key 'environment'",
         "registered environments are not supported"),
}


def test_every_example_file_is_tested():
    assert sorted(p.name for p in DATA.glob("*.yml")) == sorted(
        list(SEED_DEPLOYMENTS) + list(SEED_ENDPOINTS) + list(SEED_ERRORS))


@pytest.mark.parametrize("name", sorted(SEED_DEPLOYMENTS))
def test_azure_deployment_examples_parse(name):
    model, image_line, instance_type_line = SEED_DEPLOYMENTS[name]
    path = str(DATA / name)
    spec = load_deployment_spec(path)
    code = os.path.normpath(str(DATA / "../../model-1/onlinescoring"))
    assert not os.path.exists(code)  # parsing never checks that a path exists: the caller does
    assert (spec.name, spec.endpoint_name, spec.model) == ("blue", "my-endpoint", model)
    assert (spec.code, spec.scoring_script) == (code, "score.py")
    assert spec.conda_file == os.path.normpath(str(DATA / "../../model-1/environment/conda.yml"))
    assert spec.image == "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"
    assert (spec.instance_type, spec.instance_count) == ("Standard_DS3_v2", 1)
    assert spec.request_settings == RequestSettings()
    assert spec.environment_variables == {} and spec.settings == {} and spec.worker_count == 1
    assert spec.warnings == (
        f"{path}:{image_line}: key 'environment.image' is recorded and ignored locally: no Docker "
        "here, the environment is built from environment.conda_file",
        f"{path}:{instance_type_line}: key 'instance_type' is recorded, not enforced locally",
    )


def test_azure_examples_pasted_from_the_web_page_name_the_no_break_space(write):
    """The web page indents its YAML with U+202F, which YAML reads as part of the key."""
    text = (DATA / "deployment-registered-model.yml").read_text(encoding="utf-8")
    pasted = write(text.replace("\n  ", "\n\u202f "))
    message = error_of(load_deployment_spec, pasted)
    assert message.startswith(f"{pasted}:6: a key is indented with a no-break space")


@pytest.mark.parametrize("name", sorted(SEED_ENDPOINTS))
def test_azure_endpoint_examples_parse(name):
    description, traffic = SEED_ENDPOINTS[name]
    assert load_endpoint_spec(str(DATA / name)) == EndpointSpec(
        name="endpt-06121530123456", auth_mode="key", description=description, traffic=traffic)


@pytest.mark.parametrize("name", sorted(SEED_ERRORS))
def test_azure_examples_with_what_is_not_local_fail_at_their_line(name):
    load, where, what = SEED_ERRORS[name]
    message = error_of(load, str(DATA / name))
    assert message.startswith(str(DATA / name) + where) and what in message


# ---- endpoints --------------------------------------------------------------------------------

def test_an_endpoint_from_flags_alone_has_azure_defaults():
    spec = load_endpoint_spec(name="my-endpoint")
    assert spec == EndpointSpec(name="my-endpoint", auth_mode="key", description=None, tags={},
                                traffic={}, mirror_traffic={}, warnings=())
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]


def test_without_a_file_a_name_is_required():
    assert error_of(load_endpoint_spec) == "--name: required when no YAML file is given"
    assert error_of(load_endpoint_spec, set_values=["auth_mode=none"]).startswith("--name:")
    assert load_endpoint_spec(set_values=["name=from-set", "auth_mode=none"]) == EndpointSpec(
        name="from-set", auth_mode="none")


def test_a_file_without_a_name_names_the_file_and_the_flag(write):
    path = write("auth_mode: key\n")
    assert error_of(load_endpoint_spec, path) == (
        f"{path}: key 'name' is missing (give it in the file or with --name)")
    assert load_endpoint_spec(path, name="from-flag").name == "from-flag"


@pytest.mark.parametrize("mode", ["aml_token", "aad_token"])
def test_token_auth_is_refused(write, mode):
    path = write(f"name: my-endpoint\nauth_mode: {mode}\n")
    assert error_of(load_endpoint_spec, path) == (
        f"{path}:2: key 'auth_mode': token auth is not supported locally; use key or none")


def test_auth_mode_none_is_a_local_extension_and_other_modes_fail(write):
    assert load_endpoint_spec(write("name: my-endpoint\nauth_mode: none\n")).auth_mode == "none"
    path = write(f"name: my-endpoint\nauth_mode: {SECRET}\n")
    assert error_of(load_endpoint_spec, path) == (
        f"{path}:2: key 'auth_mode' must be one of: key, none")


def test_endpoint_keys_azure_has_and_we_ignore_warn_once_each(write):
    path = write(f"""
        $schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json
        name: my-endpoint
        identity:
          type: system_assigned
        public_network_access: disabled
        kind: {SECRET}
        properties: {{a: b}}
        tags: {{team: risk, flag: true}}
        description: scores loans
        """)
    spec = load_endpoint_spec(path)
    assert spec.warnings == tuple(f"{path}:{line}: key '{key}' is recorded and ignored locally"
                                  for line, key in [(3, "identity"), (5, "public_network_access"),
                                                    (6, "kind"), (7, "properties")])
    assert spec.tags == {"team": "risk", "flag": "true"}  # the text written, not Python's True
    assert spec.description == "scores loans"


def test_an_unknown_endpoint_key_fails_at_its_line(write):
    path = write(f"name: my-endpoint\n\ncompute: {SECRET}\n")
    assert error_of(load_endpoint_spec, path) == (
        f"{path}:3: unknown key 'compute' for a managedOnlineEndpoint")


def test_endpoint_names_follow_azures_rule(write):
    for bad in ["ab", "1abc", "abc-", "a" * 33, "has_underscore", SECRET + "_"]:
        path = write(f"name: {bad}\n")
        assert error_of(load_endpoint_spec, path).startswith(
            f"{path}:1: key 'name' is not a valid endpoint name: use 3-32 letters")
    assert load_endpoint_spec(write("name: a" + "b" * 31 + "\n")).name == "a" + "b" * 31


def test_traffic_from_the_file_set_and_flags(write):
    path = write("name: my-endpoint\ntraffic:\n  blue: 90\n  green: 10\n")
    assert load_endpoint_spec(path).traffic == {"blue": 90, "green": 10}
    # --set changes one share and keeps the others; --traffic replaces the whole map
    assert load_endpoint_spec(path, set_values=["traffic.green=0", "traffic.red=5"]).traffic == {
        "blue": 90, "green": 0, "red": 5}
    assert load_endpoint_spec(path, traffic="green=100").traffic == {"green": 100}
    assert load_endpoint_spec(path, mirror_traffic="red=20").mirror_traffic == {"red": 20}


def test_traffic_shares_are_whole_percents(write):
    for bad in ["101", "-1", "true", "50.5", SECRET]:
        path = write(f"name: my-endpoint\ntraffic:\n  blue: 0\n  green: {bad}\n")
        assert error_of(load_endpoint_spec, path) == (
            f"{path}:4: key 'traffic.green' must be a whole number from 0 to 100")
    path = write("name: my-endpoint\ntraffic:\n  blue: 100\n")
    assert error_of(load_endpoint_spec, path, set_values=["traffic.blue=150"]) == (
        "--set: key 'traffic.blue' must be a whole number from 0 to 100")
    path = write("name: my-endpoint\ntraffic:\n  1blue: 100\n")
    assert error_of(load_endpoint_spec, path).startswith(
        f"{path}:3: a deployment name in key 'traffic' is not valid")


def test_mirror_traffic_is_at_most_half_and_never_on_a_live_deployment(write):
    path = write("name: my-endpoint\ntraffic: {blue: 100, green: 0}\nmirror_traffic:\n"
                 "  green: 30\n  red: 21\n")
    assert error_of(load_endpoint_spec, path) == (
        f"{path}:3: key 'mirror_traffic' must add up to 50 percent at most")
    assert load_endpoint_spec(path, set_values=["mirror_traffic.red=20"]).mirror_traffic == {
        "green": 30, "red": 20}
    path = write("name: my-endpoint\ntraffic: {blue: 90, green: 10}\nmirror_traffic:\n"
                 "  green: 10\n")
    assert error_of(load_endpoint_spec, path) == (
        f"{path}:4: a deployment in key 'mirror_traffic' also has live traffic in key 'traffic'")
    # a deployment with no live share may be mirrored: the flag moves green's live share to blue
    assert load_endpoint_spec(path, traffic="blue=100 green=0").mirror_traffic == {"green": 10}
    assert error_of(load_endpoint_spec, name="my-endpoint", traffic="blue=100",
                    mirror_traffic="blue=10").startswith("--mirror-traffic: ")


# ---- parse_share_map --------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["blue=90 green=10", "blue=90,green=10", " blue=90, green=10 ",
                                   '{"blue": 90, "green": 10}'])
def test_share_maps(value):
    assert parse_share_map(value, "--traffic") == {"blue": 90, "green": 10}


@pytest.mark.parametrize("value", ["", "blue", "blue=", "blue=50.5", "blue=101", "blue=-1",
                                   "blue=1 blue=2", "1blue=10", "{}", '{"blue": true}',
                                   '{"blue": 50.0}', '{"blue": "50"}', "{not json",
                                   f"{SECRET}=x", f"blue={SECRET}", '{"blue": 1, "blue": 2}'])
def test_bad_share_maps_name_the_flag(value):
    assert error_of(parse_share_map, value, "--mirror-traffic").startswith("--mirror-traffic: ")


def test_a_share_map_error_is_a_spec_error_and_an_invalid_parameter():
    with pytest.raises(InvalidParameter) as caught:
        parse_share_map("blue=200", "--traffic")
    assert isinstance(caught.value, SpecError) and caught.value.exit_code == 2
    assert str(caught.value) == "--traffic: each share must be a whole percent from 0 to 100"


# ---- deployments: implemented keys ------------------------------------------------------------

FULL = """
    $schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
    name: blue
    endpoint_name: my-endpoint
    description: the first one
    tags:
      owner: risk
      mlflow-deploy/validation: strict
      mlflow-deploy/env_manager: local
    model:
      path: ./model
      name: diabetes
      version: 3
      type: mlflow_model
      description: a regression
    code_configuration:
      code: src
      scoring_script: sub/score.py
    environment:
      conda_file: env/conda.yml
    instance_count: 2
    request_settings:
      request_timeout_ms: 180000
      max_concurrent_requests_per_instance: 4
      max_queue_wait_ms: 500
    liveness_probe:
      period: 5
    readiness_probe:
      initial_delay: 0
      period: 2
      timeout: 3
      failure_threshold: 10
      success_threshold: 2
    environment_variables:
      WORKER_COUNT: 4
      FLAG: true
      RATIO: 1.50
      EMPTY: ""
    """


def test_every_implemented_deployment_key(write, tmp_path):
    spec = load_deployment_spec(write(FULL))
    assert spec == DeploymentSpec(
        name="blue", endpoint_name="my-endpoint", description="the first one",
        tags={"owner": "risk", "mlflow-deploy/validation": "strict",
              "mlflow-deploy/env_manager": "local"},
        settings={"validation": "strict", "env_manager": "local"},
        model=str(tmp_path / "model"), code=str(tmp_path / "src"), scoring_script="sub/score.py",
        conda_file=str(tmp_path / "env" / "conda.yml"), image=None, instance_type=None,
        instance_count=2,
        request_settings=RequestSettings(180000, 4, 500),
        # a probe given in part keeps the local defaults for the rest
        liveness_probe=ProbeSettings(initial_delay=0, period=5, timeout=2, failure_threshold=3,
                                     success_threshold=1),
        readiness_probe=ProbeSettings(0, 2, 3, 10, 2),
        # values are the text written, not what YAML makes of it
        environment_variables={"WORKER_COUNT": "4", "FLAG": "true", "RATIO": "1.50", "EMPTY": ""},
        warnings=())
    assert spec.worker_count == 4


def test_a_deployment_from_flags_alone_has_the_local_defaults():
    spec = load_deployment_spec(name="blue", endpoint_name="my-endpoint")
    assert spec == DeploymentSpec(name="blue", endpoint_name="my-endpoint")
    assert (spec.model, spec.code, spec.conda_file, spec.instance_count) == (None, None, None, 1)
    assert spec.request_settings == RequestSettings(5000, 1, None)
    assert spec.readiness_probe == ProbeSettings(0, 1, 2, 30, 1)
    assert spec.liveness_probe == ProbeSettings(0, 1, 2, 3, 1)
    assert spec.worker_count == 1 and spec.warnings == ()
    assert error_of(load_deployment_spec, name="blue") == (
        "--endpoint-name: required when no YAML file is given")
    assert error_of(load_deployment_spec, endpoint_name="my-endpoint") == (
        "--name: required when no YAML file is given")


def test_flags_override_the_file(write):
    path = write("name: blue\nendpoint_name: my-endpoint\n")
    spec = load_deployment_spec(path, name="green", endpoint_name="other-endpoint",
                                set_values=["name=red"])
    assert (spec.name, spec.endpoint_name) == ("green", "other-endpoint")
    assert error_of(load_deployment_spec, path, name="x") == (
        "--name: key 'name' is not a valid deployment name: use 3-32 letters, digits or hyphens, "
        "starting with a letter and not ending with a hyphen")


@pytest.mark.parametrize("model", ["azureml:local-multimodel:3", "azureml:diabetes@latest",
                                   "azureml://registries/azureml-meta/models/m/versions/2",
                                   "models:/diabetes/1", "models:/diabetes@champion",
                                   "runs:/0123abc/model"])
def test_model_uris_are_kept_as_they_are(write, model):
    path = write(f"name: blue\nendpoint_name: my-endpoint\nmodel: {model}\n")
    assert load_deployment_spec(path).model == model
    path = write(f"name: blue\nendpoint_name: my-endpoint\nmodel:\n  path: {model}\n")
    assert load_deployment_spec(path).model == model


def test_local_paths_resolve_from_the_yaml_folder_and_set_paths_from_the_cwd(
        write, tmp_path, monkeypatch):
    (tmp_path / "specs").mkdir()
    path = write("name: blue\nendpoint_name: my-endpoint\nmodel: ../models/m\n"
                 "code_configuration: {code: ., scoring_script: score.py}\n", "specs/dep.yml")
    spec = load_deployment_spec(path)
    assert (spec.model, spec.code) == (str(tmp_path / "models" / "m"), str(tmp_path / "specs"))
    monkeypatch.chdir(tmp_path)
    spec = load_deployment_spec(path, set_values=["model=here", "environment.conda_file=c.yml"])
    assert (spec.model, spec.conda_file) == (str(tmp_path / "here"), str(tmp_path / "c.yml"))
    assert spec.code == str(tmp_path / "specs")  # still the file's
    # an absolute path stays itself
    assert load_deployment_spec(path, set_values=["model=/opt/m"]).model == "/opt/m"


def test_inline_model_keys(write):
    path = write("name: blue\nendpoint_name: my-endpoint\nmodel:\n  name: m\n  version: 1\n")
    assert error_of(load_deployment_spec, path) == f"{path}:3: key 'model.path' is missing"
    path = write(f"name: blue\nendpoint_name: my-endpoint\nmodel:\n  path: m\n  type: {SECRET}\n")
    assert error_of(load_deployment_spec, path) == (
        f"{path}:5: key 'model.type' must be one of: mlflow_model, custom_model")
    path = write(f"name: blue\nendpoint_name: my-endpoint\nmodel:\n  path: m\n  stage: {SECRET}\n")
    assert error_of(load_deployment_spec, path) == (
        f"{path}:5: unknown key 'model.stage' for a managedOnlineDeployment")
    path = write("name: blue\nendpoint_name: my-endpoint\nmodel: [a, b]\n")
    assert error_of(load_deployment_spec, path) == f"{path}:3: key 'model' must be a mapping"


def test_code_configuration_needs_both_keys_and_a_local_folder(write):
    path = write("name: blue\nendpoint_name: my-endpoint\ncode_configuration:\n  code: src\n")
    assert error_of(load_deployment_spec, path) == (
        f"{path}:3: key 'code_configuration.scoring_script' is missing")
    path = write("name: blue\nendpoint_name: my-endpoint\ncode_configuration:\n"
                 f"  code: azureml:{SECRET}:1\n  scoring_script: score.py\n")
    assert error_of(load_deployment_spec, path) == (
        f"{path}:4: key 'code_configuration.code' must be a local path: registered assets are "
        "not supported locally")


def test_environment_rules(write):
    head = "name: blue\nendpoint_name: my-endpoint\n"
    path = write(head + f"environment:\n  image: {SECRET}\n")
    assert error_of(load_deployment_spec, path) == (
        f"{path}:4: key 'environment': no Docker here: give environment.conda_file")
    path = write(head + "environment: {}\n")
    assert error_of(load_deployment_spec, path) == (
        f"{path}:3: key 'environment': no Docker here: give environment.conda_file")
    path = write(head + f"environment: azureml:{SECRET}:1\n")
    assert error_of(load_deployment_spec, path) == (
        f"{path}:3: key 'environment' names a registered environment: registered environments "
        "are not supported yet; give environment.conda_file")
    path = write(head + f"environment: {SECRET}\n")
    assert error_of(load_deployment_spec, path) == f"{path}:3: key 'environment' must be a mapping"
    path = write(head + f"environment:\n  conda_file: c.yml\n  build:\n    path: {SECRET}\n")
    assert error_of(load_deployment_spec, path) == (
        f"{path}:5: key 'environment.build' cannot be used locally: no Docker here: give "
        "environment.conda_file")
    path = write(head + "environment:\n  name: my-env\n  conda_file: c.yml\n  image: img\n")
    spec = load_deployment_spec(path)
    assert (spec.conda_file, spec.image) == (os.path.join(os.path.dirname(path), "c.yml"), "img")
    assert spec.warnings == (
        f"{path}:4: key 'environment.name' is recorded and ignored locally",
        f"{path}:6: key 'environment.image' is recorded and ignored locally: no Docker here, the "
        "environment is built from environment.conda_file")


@pytest.mark.parametrize("key, value, must", [
    ("instance_count", "0", "must be a whole number from 1 to 20"),
    ("instance_count", "21", "must be a whole number from 1 to 20"),
    ("instance_count", "true", "must be a whole number from 1 to 20"),
    ("instance_count", "2.0", "must be a whole number from 1 to 20"),
    ("instance_count", SECRET, "must be a whole number from 1 to 20"),
    ("request_settings", SECRET, "must be a mapping"),
    ("request_settings.request_timeout_ms", "180001", "must be a whole number from 1 to 180000"),
    ("request_settings.request_timeout_ms", "0", "must be a whole number from 1 to 180000"),
    ("request_settings.max_concurrent_requests_per_instance", "-3",
     "must be a whole number of at least 1"),
    ("request_settings.max_queue_wait_ms", f"'{SECRET}'", "must be a whole number of at least 1"),
    ("liveness_probe.initial_delay", "-1", "must be a whole number of at least 0"),
    ("readiness_probe.period", "0", "must be a whole number of at least 1"),
    ("readiness_probe.timeout", "0", "must be a whole number of at least 1"),
    ("liveness_probe.failure_threshold", "0", "must be a whole number of at least 1"),
    ("readiness_probe.success_threshold", "false", "must be a whole number of at least 1"),
    ("environment_variables", SECRET, "must be a mapping"),
    ("environment_variables.WORKER_COUNT", "0", "must be a whole number from 1 to 64"),
    ("environment_variables.WORKER_COUNT", "65", "must be a whole number from 1 to 64"),
    ("environment_variables.WORKER_COUNT", "'٣'", "must be a whole number from 1 to 64"),
    ("environment_variables.WORKER_COUNT", SECRET, "must be a whole number from 1 to 64"),
    ("environment_variables.OTHER", f"[{SECRET}]", "must be a single value"),
    ("tags.owner", f"{{a: {SECRET}}}", "must be a single value"),
    ("description", "12", "must be a string"),
    ("instance_type", "[a]", "must be a string"),
    ("endpoint_name", f"{SECRET}_", "is not a valid endpoint name"),
    ("name", "b", "is not a valid deployment name"),
])
def test_type_and_range_errors_name_the_key_and_line_in_the_file_and_in_set(
        write, key, value, must):
    *parents, leaf = key.split(".")
    flags = {k: v for k, v in (("name", "blue"), ("endpoint_name", "my-endpoint")) if k != key}
    text = "".join(f"{k}: {v}\n" for k, v in flags.items()) + "".join(
        f"{'  ' * depth}{part}:\n" for depth, part in enumerate(parents)) + (
        f"{'  ' * len(parents)}{leaf}: {value}\n")
    path = write(text)
    message = error_of(load_deployment_spec, path)
    assert message.startswith(f"{path}:{len(text.splitlines())}: key '{key}' {must}"), message
    message = error_of(load_deployment_spec, set_values=[f"{key}={value}"], **flags)
    assert message.startswith(f"--set: key '{key}' {must}"), message


def test_keys_azure_has_and_we_ignore_warn_once_each(write):
    ignored = ["app_insights_enabled: true", "scale_settings:\n  type: default\n  x: 1",
               "data_collector: {collections: {}}", "egress_public_network_access: disabled",
               "model_mount_path: /var/models", "private_network_connection: false",
               "properties: {a: b}", f"with_package: {SECRET}"]
    path = write("name: blue\nendpoint_name: my-endpoint\n" + "\n".join(ignored)
                 + "\ninstance_type: Standard_DS3_v2\n")
    lines = pathlib.Path(path).read_text().splitlines()
    line_of = {line.split(":")[0]: number for number, line in enumerate(lines, 1)}
    spec = load_deployment_spec(path)
    assert spec.warnings == tuple(
        f"{path}:{line_of[key]}: key '{key}' is recorded and ignored locally"
        for key in [item.split(":")[0] for item in ignored]) + (
        f"{path}:{line_of['instance_type']}: key 'instance_type' is recorded, not enforced "
        "locally",)
    assert spec.instance_type == "Standard_DS3_v2"


def test_unknown_keys_fail_at_their_line(write):
    path = write(f"name: blue\nendpoint_name: my-endpoint\n\nenviroment: {SECRET}\n")
    assert error_of(load_deployment_spec, path) == (
        f"{path}:4: unknown key 'enviroment' for a managedOnlineDeployment")
    path = write("name: blue\nendpoint_name: my-endpoint\nrequest_settings:\n"
                 f"  request_timeout_ms: 10\n  timeout: {SECRET}\n")
    assert error_of(load_deployment_spec, path) == (
        f"{path}:5: unknown key 'request_settings.timeout' for a managedOnlineDeployment")
    assert error_of(load_deployment_spec, path, set_values=["request_settings.timeout=1"]) == (
        "--set: unknown key 'request_settings.timeout' for a managedOnlineDeployment")
    # the schema comes from the function called, not from $schema
    path = write("$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint"
                 ".schema.json\nname: blue\nauth_mode: key\n")
    assert error_of(load_deployment_spec, path, endpoint_name="my-endpoint") == (
        f"{path}:3: unknown key 'auth_mode' for a managedOnlineDeployment")


def test_settings_come_from_mlflow_deploy_tags(write):
    path = write("name: blue\nendpoint_name: my-endpoint\ntags:\n  mlflow-deploy/validation: "
                 "compatible\n")
    spec = load_deployment_spec(path, set_values=["tags.mlflow-deploy/validation=strict",
                                                  "tags.mlflow-deploy/request_timeout_ms=300"])
    assert spec.settings == {"validation": "strict", "request_timeout_ms": "300"}
    assert spec.tags == {"mlflow-deploy/validation": "strict",
                         "mlflow-deploy/request_timeout_ms": "300"}
    path = write("name: blue\nendpoint_name: my-endpoint\ntags:\n  mlflow-deploy/: x\n")
    assert error_of(load_deployment_spec, path) == (
        f"{path}:4: key 'tags.mlflow-deploy/' names no setting")


# ---- --set ------------------------------------------------------------------------------------

def test_set_overrides_a_file_key_and_adds_nested_keys(write):
    path = write("name: blue\nendpoint_name: my-endpoint\nrequest_settings:\n"
                 "  request_timeout_ms: 9000\n  max_concurrent_requests_per_instance: 2\n"
                 "environment_variables:\n")
    spec = load_deployment_spec(path, set_values=[
        "request_settings.request_timeout_ms=3000", "environment_variables.WORKER_COUNT=2",
        "liveness_probe.period=7", "instance_count=3", "description=a b=c"])
    assert spec.request_settings == RequestSettings(3000, 2, None)
    assert spec.environment_variables == {"WORKER_COUNT": "2"} and spec.worker_count == 2
    assert spec.liveness_probe.period == 7 and spec.instance_count == 3
    assert spec.description == "a b=c"
    # an empty value is YAML's null: the default again
    assert load_deployment_spec(path, set_values=["request_settings="]).request_settings == \
        RequestSettings()


def test_set_replaces_a_mapping_whole(write):
    path = write("name: blue\nendpoint_name: my-endpoint\nrequest_settings:\n"
                 f"  request_timeout_ms: {SECRET}\n")
    spec = load_deployment_spec(path, set_values=["request_settings={max_queue_wait_ms: 50}"])
    assert spec.request_settings == RequestSettings(max_queue_wait_ms=50)
    # what the file said under the replaced key is gone: its text and its line
    assert error_of(load_deployment_spec, path, set_values=[
        f"request_settings={{request_timeout_ms: {SECRET}}}"]) == (
        "--set: key 'request_settings.request_timeout_ms' must be a whole number from 1 to 180000")
    path = write("name: blue\nendpoint_name: my-endpoint\nenvironment_variables:\n  A: file\n")
    spec = load_deployment_spec(path, set_values=["environment_variables={A: 2, B: 3}"])
    assert spec.environment_variables == {"A": "2", "B": "3"}


@pytest.mark.parametrize("item, message", [
    ("instance_count", "--set item 1: expected key=value, the key a dotted path"),
    ("=3", "--set item 1: expected key=value, the key a dotted path"),
    ("request_settings..x=3", "--set item 1: expected key=value, the key a dotted path"),
    (f"description=[{SECRET}", "--set: the value of key 'description' is not valid YAML"),
    ("name.first=x", None),
    (f"instance_count={SECRET}", "--set: key 'instance_count' must be a whole number from 1 to 20"),
    (f"nope.deeper={SECRET}", "--set: unknown key 'nope' for a managedOnlineDeployment"),
])
def test_bad_set_items(write, item, message):
    path = write("name: blue\nendpoint_name: my-endpoint\n")
    if message is None:  # a scalar in the file cannot take a nested key
        message = (f"{path}:1: key 'name' is not a mapping, so --set cannot set key "
                   "'name.first'")
    assert error_of(load_deployment_spec, path, set_values=[item]) == message


# ---- the file itself --------------------------------------------------------------------------

def test_yaml_syntax_errors_give_the_line_but_not_the_text(write):
    path = write(f"name: blue\nendpoint_name: my-endpoint\nmodel: {SECRET}: x\n")
    assert error_of(load_deployment_spec, path) == (
        f"{path}:3: not valid YAML (mapping values are not allowed here)")
    path = write(f"name: blue\nmodel: *{SECRET}\n")
    assert error_of(load_deployment_spec, path) == (
        f"{path}:2: not valid YAML (found undefined alias)")
    path = write(f"name: blue\nmodel: !{SECRET} x\n")
    assert error_of(load_deployment_spec, path).startswith(f"{path}:2: not valid YAML (could not ")
    path = write(f"name: blue\n\t{SECRET}: 1\n")
    assert error_of(load_deployment_spec, path).startswith(f"{path}:2: not valid YAML (found ")
    path = write(f"name: blue\n---\nname: {SECRET}\n")
    assert error_of(load_deployment_spec, path).startswith(f"{path}:2: not valid YAML")


@pytest.mark.parametrize("text, what", [
    ("", "the file is empty"),
    ("# only a comment\n", "the file is empty"),
    (f"- {SECRET}\n", "the top level must be a mapping"),
    (f"{SECRET}\n", "the top level must be a mapping"),
])
def test_a_file_that_is_no_mapping(write, text, what):
    path = write(text)
    message = error_of(load_endpoint_spec, path)
    assert message.startswith(path) and message.endswith(what)


def test_a_missing_or_unreadable_file(tmp_path):
    missing = str(tmp_path / "nope.yml")
    assert error_of(load_endpoint_spec, missing) == f"{missing}: no such file"
    binary = tmp_path / "bin.yml"
    binary.write_bytes(b"name: \xff\xfe\n")
    assert error_of(load_endpoint_spec, str(binary)) == f"{binary}: cannot be read as UTF-8 text"


def test_duplicate_and_non_scalar_keys(write):
    path = write(f"name: my-endpoint\ndescription: a\nname: {SECRET}\n")
    assert error_of(load_endpoint_spec, path) == f"{path}:3: key 'name' is given twice"
    path = write("name: my-endpoint\ntags:\n  ? [a, b]\n  : c\n")
    assert error_of(load_endpoint_spec, path) == (
        f"{path}:3: a key under 'tags' is not a single value")


def test_anchors_and_merge_keys(write):
    path = write("name: blue\nendpoint_name: my-endpoint\nliveness_probe: &probe\n  period: 4\n"
                 "readiness_probe:\n  <<: *probe\n  timeout: 5\n")
    spec = load_deployment_spec(path)
    assert spec.liveness_probe.period == 4
    assert (spec.readiness_probe.period, spec.readiness_probe.timeout) == (4, 5)


def test_keys_are_their_text_not_yaml_booleans(write):
    path = write("name: blue\nendpoint_name: my-endpoint\nenvironment_variables:\n"
                 "  on: yes\n  1: 2\n")
    assert load_deployment_spec(path).environment_variables == {"on": "yes", "1": "2"}


def test_the_name_rule_is_the_control_planes():
    from mlflow_deploy.online.names import check_name

    for name in ["abc", "a-b", "ab-", "a", "ab", "Abc9", "9abc", "a" * 32, "a" * 33, "a_b",
                 "a--b", "-ab", "blue"]:
        try:
            check_name(name, "--name")
            accepted = True
        except InvalidParameter:
            accepted = False
        try:
            load_endpoint_spec(name=name)
            parsed = True
        except SpecError:
            parsed = False
        assert accepted == parsed, name
