"""Azure ML CLI v2 YAML specs, online and batch: Azure's own examples parse, each class of key
(implemented, recorded and ignored, unknown) behaves as documented, ``--set`` and the flags
override the file, and every error names the file and line (or the flag) of the key at fault,
never its value."""
import dataclasses
import os
import pathlib
import shutil
import textwrap

import pytest

from mlflow_deploy.errors import InvalidParameter
from mlflow_deploy.specs import (
    BatchDeploymentSpec,
    BatchEndpointSpec,
    BatchSettings,
    DeploymentSpec,
    EndpointSpec,
    ProbeSettings,
    RequestSettings,
    RetrySettings,
    SpecError,
    load_batch_deployment_spec,
    load_batch_endpoint_spec,
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
    ("liveness_probe.initial_delay", "-1", "must be a whole number from 0 to 3600"),
    ("readiness_probe.period", "0", "must be a whole number from 1 to 3600"),
    ("readiness_probe.timeout", "0", "must be a whole number from 1 to 3600"),
    ("liveness_probe.failure_threshold", "0", "must be a whole number from 1 to 1000"),
    ("readiness_probe.success_threshold", "false", "must be a whole number from 1 to 1000"),
    ("liveness_probe.period", "3601", "must be a whole number from 1 to 3600"),
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
    from mlflow_deploy.names import check_name

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


# ---- batch: Azure's examples ------------------------------------------------------------------

BATCH = DATA / "batch"
IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"
# endpoint.yml, deployment-torch.yml and deployment-keras.yml are the YAML examples of Azure ML's
# article "Deploy models for scoring in batch endpoints", copied verbatim. The others are written
# in their shape: an MLflow model deployed with no code (an `azureml:` model, its settings in a
# `settings:` block), and the older `batchDeployment` schema, its settings at the top level.
SEED_BATCH = ["endpoint.yml", "deployment-torch.yml", "deployment-keras.yml"]


@pytest.fixture
def batch_copy(tmp_path):
    """The batch examples copied into the test's folder, next to the folders they point at."""
    root = tmp_path / "batch"
    shutil.copytree(BATCH, root)
    for folder in ["model", "code", "environment", "mnist/model", "mnist/code",
                   "mnist/environment"]:
        (root / folder).mkdir(parents=True)
    (root / "environment" / "conda.yaml").write_text("name: mnist-env\n", encoding="utf-8")
    (root / "mnist" / "environment" / "conda.yml").write_text("name: mnist-env\n",
                                                              encoding="utf-8")
    return root


def batch_examples(root):
    """Each example file: what it parses into (before its warnings), and its warnings as
    (line, key, what) triples."""
    ignored = "is recorded and ignored locally"
    no_docker = f"{ignored}: no Docker here, the environment is built from environment.conda_file"
    mnist = dict(endpoint_name="mnist-batch", model=str(root / "model"), code=str(root / "code"),
                 scoring_script="batch_driver.py",
                 conda_file=str(root / "environment" / "conda.yaml"), image=IMAGE,
                 compute="batch-cluster", instance_count=1,
                 batch_settings=BatchSettings(max_concurrency_per_instance=2))
    return {
        "endpoint.yml": (BatchEndpointSpec(
            name="mnist-batch", tags={"type": "deep-learning"},
            description="A batch endpoint for scoring images from the MNIST dataset."), []),
        "endpoint-defaults.yml": (BatchEndpointSpec(
            name="heart-classifier-batch", default_deployment="classifier-xgboost-mlflow",
            description="A heart condition classifier for batch inference"),
            [(4, "auth_mode", ignored)]),
        "deployment-torch.yml": (BatchDeploymentSpec(
            name="mnist-torch-dpl", **mnist,
            description="A deployment using Torch to solve the MNIST classification dataset."),
            [(13, "environment.name", ignored), (14, "environment.image", no_docker)]),
        "deployment-keras.yml": (BatchDeploymentSpec(
            name="mnist-keras-dpl", **mnist, description="A deployment using Keras with "
            "TensorFlow to solve the MNIST classification dataset."),
            [(13, "environment.name", ignored), (14, "environment.image", no_docker)]),
        "deployment-mlflow-settings.yml": (BatchDeploymentSpec(
            name="classifier-xgboost-mlflow", endpoint_name="heart-classifier-batch",
            model="azureml:heart-classifier:1", compute="batch-cluster", instance_count=2,
            batch_settings=BatchSettings(
                mini_batch_size=2, max_concurrency_per_instance=2, output_action="append_row",
                output_file_name="predictions.csv", retry_settings=RetrySettings(3, 300),
                error_threshold=-1, logging_level="info",
                environment_variables={"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}),
            tags={"mlflow-deploy/env_manager": "uv"}, settings={"env_manager": "uv"},
            description="A heart condition classifier based on XGBoost"), []),
        "deployment-top-level-settings.yml": (BatchDeploymentSpec(
            name="nonmlflowdp", endpoint_name="mnist-batch",
            model=str(root / "mnist" / "model"), code=str(root / "mnist" / "code"),
            scoring_script="digit_identification.py",
            conda_file=str(root / "mnist" / "environment" / "conda.yml"),
            image="mcr.microsoft.com/azureml/openmpi3.1.2-ubuntu18.04:latest",
            compute="cpu-cluster", instance_count=2,
            batch_settings=BatchSettings(
                mini_batch_size=5, max_concurrency_per_instance=4,
                output_action="summary_only", output_file_name="scores.csv",
                retry_settings=RetrySettings(2, 60), error_threshold=10,
                logging_level="warning", environment_variables={"LABELS": "digits"}),
            description="A deployment in the older batchDeployment schema, its settings at the "
                        "top level."),
            [(12, "environment.image", no_docker)]),
    }


def test_every_batch_example_file_is_tested():
    names = sorted(p.name for p in BATCH.glob("*.yml"))
    assert names == sorted(batch_examples(BATCH)) and set(SEED_BATCH) <= set(names)


@pytest.mark.parametrize("name", sorted(batch_examples(BATCH)))
def test_azure_batch_examples_parse(batch_copy, name):
    expected, warnings = batch_examples(batch_copy)[name]
    path = str(batch_copy / name)
    load = load_batch_endpoint_spec if name.startswith("endpoint") else load_batch_deployment_spec
    spec = load(path)
    assert spec == dataclasses.replace(expected, warnings=tuple(
        f"{path}:{line}: key '{key}' {what}" for line, key, what in warnings))
    # relative paths resolve from the YAML file's folder, here to the folders the test made
    for local in [getattr(spec, key, None) for key in ("model", "code", "conda_file")]:
        assert local is None or local.startswith("azureml:") or os.path.exists(local), local


# ---- batch endpoints --------------------------------------------------------------------------

def test_a_batch_endpoint_from_flags_alone():
    spec = load_batch_endpoint_spec(name="mnist-batch")
    assert spec == BatchEndpointSpec(name="mnist-batch", description=None, tags={},
                                     default_deployment=None, warnings=())
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    assert error_of(load_batch_endpoint_spec) == "--name: required when no YAML file is given"
    assert error_of(load_batch_endpoint_spec, set_values=["description=x"]).startswith("--name:")


def test_a_batch_endpoint_name_and_default_deployment_from_set_and_flags(batch_copy):
    path = str(batch_copy / "endpoint.yml")
    spec = load_batch_endpoint_spec(path, name="other-batch", set_values=[
        "defaults.deployment_name=mnist-torch-dpl", "name=ignored-by-the-flag"])
    assert (spec.name, spec.default_deployment) == ("other-batch", "mnist-torch-dpl")
    path = str(batch_copy / "endpoint-defaults.yml")
    assert load_batch_endpoint_spec(path, set_values=[
        "defaults.deployment_name=mnist-keras-dpl"]).default_deployment == "mnist-keras-dpl"
    assert load_batch_endpoint_spec(path, set_values=["defaults="]).default_deployment is None


def test_batch_endpoint_keys_azure_has_and_we_ignore_warn_once_each(write):
    path = write(f"""
        $schema: https://azuremlschemas.azureedge.net/latest/batchEndpoint.schema.json
        name: mnist-batch
        auth_mode: aad_token
        identity:
          type: user_assigned
          user_assigned_identities: [{SECRET}]
        properties: {{a: b}}
        tags: {{team: vision, gpu: true}}
        """)
    spec = load_batch_endpoint_spec(path)
    assert spec.warnings == tuple(f"{path}:{line}: key '{key}' is recorded and ignored locally"
                                  for line, key in [(3, "auth_mode"), (4, "identity"),
                                                    (7, "properties")])
    assert spec.tags == {"team": "vision", "gpu": "true"}


@pytest.mark.parametrize("text, message", [
    ("auth_mode: key\n", ":2: key 'auth_mode' must be one of: aad_token"),
    (f"auth_mode: {SECRET}\n", ":2: key 'auth_mode' must be one of: aad_token"),
    (f"defaults:\n  deployment_name: {SECRET}_\n",
     ":3: key 'defaults.deployment_name' is not a valid deployment name: use 3-32 letters"),
    (f"defaults: {SECRET}\n", ":2: key 'defaults' must be a mapping"),
    (f"defaults:\n  deployment: {SECRET}\n",
     ":3: unknown key 'defaults.deployment' for a batchEndpoint"),
    (f"traffic:\n  blue: {SECRET}\n", ":2: unknown key 'traffic' for a batchEndpoint"),
    ("description: [a]\n", ":2: key 'description' must be a string"),
])
def test_batch_endpoint_errors_name_the_key_and_line(write, text, message):
    path = write("name: mnist-batch\n" + text)
    assert error_of(load_batch_endpoint_spec, path).startswith(path + message)


# ---- batch deployments ------------------------------------------------------------------------

HEAD = "name: blue\nendpoint_name: my-endpoint\n"


def nested_yaml(key, value, head=HEAD):
    """``head`` then one dotted ``key`` written as nested YAML mappings; and its line."""
    *parents, leaf = key.split(".")
    text = head + "".join(f"{'  ' * depth}{part}:\n" for depth, part in enumerate(parents)) + (
        f"{'  ' * len(parents)}{leaf}: {value}\n")
    return text, len(text.splitlines())


def test_a_batch_deployment_from_flags_alone_has_azures_defaults():
    spec = load_batch_deployment_spec(name="blue", endpoint_name="my-endpoint")
    assert spec == BatchDeploymentSpec(name="blue", endpoint_name="my-endpoint")
    assert (spec.model, spec.code, spec.conda_file, spec.compute, spec.instance_count) == (
        None, None, None, None, 1)
    assert (spec.settings, spec.tags, spec.warnings) == ({}, {}, ())
    assert spec.batch_settings == BatchSettings(
        mini_batch_size=10, max_concurrency_per_instance=1, output_action="append_row",
        output_file_name="predictions.csv",
        retry_settings=RetrySettings(max_retries=3, timeout=30), error_threshold=-1,
        logging_level="info", environment_variables={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.batch_settings.mini_batch_size = 1  # type: ignore[misc]
    assert error_of(load_batch_deployment_spec, name="blue") == (
        "--endpoint-name: required when no YAML file is given")
    assert error_of(load_batch_deployment_spec, endpoint_name="my-endpoint") == (
        "--name: required when no YAML file is given")


def test_a_setting_given_in_part_keeps_azures_defaults_for_the_rest(write):
    path = write(HEAD + "settings:\n  retry_settings:\n    timeout: 60\n  logging_level:\n")
    assert load_batch_deployment_spec(path).batch_settings == BatchSettings(
        retry_settings=RetrySettings(max_retries=3, timeout=60))


SETTINGS = """\
mini_batch_size: 5
max_concurrency_per_instance: 3
output_action: summary_only
output_file_name: scores.csv
retry_settings:
  max_retries: 0
  timeout: 120
error_threshold: 0
logging_level: debug
environment_variables:
  A: 1
"""
ALL_SET = BatchSettings(5, 3, "summary_only", "scores.csv", RetrySettings(0, 120), 0, "debug",
                        {"A": "1"})


def test_settings_in_a_settings_block_or_at_the_top_level(write):
    block = load_batch_deployment_spec(write(HEAD + "type: model\nsettings:\n"
                                             + textwrap.indent(SETTINGS, "  ")))
    top = load_batch_deployment_spec(write(HEAD + SETTINGS))
    assert block.batch_settings == top.batch_settings == ALL_SET
    assert block.warnings == top.warnings == ()
    # some here, some there
    lines = SETTINGS.splitlines(keepends=True)
    mixed = write(HEAD + "".join(lines[:4]) + "settings:\n" + textwrap.indent("".join(lines[4:]),
                                                                             "  "))
    assert load_batch_deployment_spec(mixed).batch_settings == ALL_SET


def test_a_setting_in_both_places_is_an_error_naming_it(write):
    path = write(HEAD + "mini_batch_size: 5\nsettings:\n  mini_batch_size: 6\n")
    assert error_of(load_batch_deployment_spec, path) == (
        f"{path}:5: key 'settings.mini_batch_size' is also given at the top level as key "
        "'mini_batch_size': give it in one place")
    path = write(HEAD + "retry_settings:\n  timeout: 60\nsettings:\n  retry_settings:\n"
                 "    max_retries: 1\n")
    assert error_of(load_batch_deployment_spec, path).startswith(
        f"{path}:6: key 'settings.retry_settings' is also given at the top level")


def test_settings_instance_count_is_azures_other_spelling_of_resources_instance_count(write):
    path = write(HEAD + "settings:\n  instance_count: 3\n")
    assert load_batch_deployment_spec(path).instance_count == 3
    path = write(HEAD + "resources:\n  instance_count: 2\nsettings:\n  instance_count: 3\n")
    assert error_of(load_batch_deployment_spec, path) == (
        f"{path}:6: key 'settings.instance_count' is also given as key "
        "'resources.instance_count': give it in one place")


def test_set_overrides_batch_settings_where_the_file_has_them(batch_copy):
    torch = str(batch_copy / "deployment-torch.yml")
    spec = load_batch_deployment_spec(torch, set_values=[
        "settings.mini_batch_size=5", "settings.retry_settings.timeout=60",
        "resources.instance_count=3", "compute=azureml:gpu-cluster",
        "settings.environment_variables.A=1"])
    assert spec.batch_settings == BatchSettings(
        mini_batch_size=5, max_concurrency_per_instance=2,
        retry_settings=RetrySettings(max_retries=3, timeout=60), environment_variables={"A": "1"})
    assert (spec.instance_count, spec.compute) == (3, "gpu-cluster")
    old = str(batch_copy / "deployment-top-level-settings.yml")
    spec = load_batch_deployment_spec(old, set_values=[
        "retry_settings.timeout=90", "mini_batch_size=1", "output_action=AppendRow"])
    assert (spec.batch_settings.retry_settings, spec.batch_settings.mini_batch_size,
            spec.batch_settings.output_action) == (RetrySettings(2, 90), 1, "append_row")
    # --set takes the path it is given: a top-level key next to the file's settings block
    assert error_of(load_batch_deployment_spec, torch, set_values=[
        "retry_settings.timeout=60"]) == (
        f"{torch}:24: key 'settings.retry_settings' is also given at the top level as key "
        "'retry_settings': give it in one place")
    assert error_of(load_batch_deployment_spec, torch, set_values=[
        f"settings.mini_batch_size={SECRET}"]) == (
        "--set: key 'settings.mini_batch_size' must be a whole number of at least 1")
    # without a file, either place
    spec = load_batch_deployment_spec(name="blue", endpoint_name="my-endpoint", set_values=[
        "settings.mini_batch_size=5", "retry_settings.timeout=60"])
    assert spec.batch_settings == BatchSettings(mini_batch_size=5,
                                                retry_settings=RetrySettings(3, 60))


@pytest.mark.parametrize("value, action", [
    ("append_row", "append_row"), ("AppendRow", "append_row"), ("APPEND_ROW", "append_row"),
    ("summary_only", "summary_only"), ("SummaryOnly", "summary_only")])
def test_output_action_takes_both_spellings_and_keeps_snake_case(write, value, action):
    spec = load_batch_deployment_spec(write(HEAD + f"settings:\n  output_action: {value}\n"))
    assert spec.batch_settings.output_action == action


@pytest.mark.parametrize("value, level", [
    ("DEBUG", "debug"), ("Info", "info"), ("WARNING", "warning"), ("error", "error"),
    ("Critical", "critical")])
def test_logging_level_in_any_case(write, value, level):
    spec = load_batch_deployment_spec(write(HEAD + f"logging_level: {value}\n"))
    assert spec.batch_settings.logging_level == level


@pytest.mark.parametrize("text, compute", [
    ("compute: azureml:batch-cluster\n", "batch-cluster"),
    ("compute: batch-cluster\n", "batch-cluster"),
    ("compute: cpu_cluster2\n", "cpu_cluster2"),
    ("compute:\n", None),
    ("", None),
])
def test_compute_forms(write, text, compute):
    assert load_batch_deployment_spec(write(HEAD + text)).compute == compute


def test_type_model_is_accepted_and_pipeline_deployments_refused(write):
    assert load_batch_deployment_spec(write(HEAD + "type: model\n")).warnings == ()
    path = write(HEAD + "type: pipeline\ncomponent: azureml:hello-batch@latest\n"
                 "settings:\n  default_compute: batch-cluster\n")
    assert error_of(load_batch_deployment_spec, path) == (
        f"{path}:3: key 'type' must be model: pipeline component deployments are not "
        "supported locally")
    path = write(HEAD + f"component: azureml:{SECRET}@latest\n")
    assert error_of(load_batch_deployment_spec, path) == (
        f"{path}:3: key 'component' cannot be used locally: only model deployments are "
        "supported")


def test_output_file_name_is_a_plain_file_name(write):
    assert load_batch_deployment_spec(write(HEAD + "output_file_name: out.v2.csv\n")) \
        .batch_settings.output_file_name == "out.v2.csv"
    path = write(HEAD + f"settings:\n  output_file_name: results/{SECRET}.csv\n")
    assert error_of(load_batch_deployment_spec, path) == (
        f"{path}:4: key 'settings.output_file_name' must be a plain file name, with no folder")


SETTING_ERRORS = [
    ("mini_batch_size", "0", "must be a whole number of at least 1"),
    ("mini_batch_size", "2.5", "must be a whole number of at least 1"),
    ("mini_batch_size", "true", "must be a whole number of at least 1"),
    ("mini_batch_size", SECRET, "must be a whole number of at least 1"),
    ("max_concurrency_per_instance", "0", "must be a whole number of at least 1"),
    ("output_action", SECRET, "must be one of: append_row, summary_only"),
    ("output_action", "append-row", "must be one of: append_row, summary_only"),
    ("output_action", "1", "must be one of: append_row, summary_only"),
    ("output_file_name", f"out/{SECRET}.csv", "must be a plain file name, with no folder"),
    ("output_file_name", f"'..\\{SECRET}'", "must be a plain file name, with no folder"),
    ("output_file_name", "''", "must be a plain file name, with no folder"),
    ("output_file_name", "..", "must be a plain file name, with no folder"),
    ("output_file_name", "12", "must be a string"),
    ("retry_settings", SECRET, "must be a mapping"),
    ("retry_settings.max_retries", "-1", "must be a whole number of at least 0"),
    ("retry_settings.max_retries", f"'{SECRET}'", "must be a whole number of at least 0"),
    ("retry_settings.timeout", "0", "must be a whole number of at least 1"),
    ("retry_settings.timeout", "30.5", "must be a whole number of at least 1"),
    ("error_threshold", "-2", "must be a whole number of at least -1"),
    ("error_threshold", "1.0", "must be a whole number of at least -1"),
    ("logging_level", SECRET, "must be one of: debug, info, warning, error, critical"),
    ("logging_level", "verbose", "must be one of: debug, info, warning, error, critical"),
    ("environment_variables", SECRET, "must be a mapping"),
    ("environment_variables.OTHER", f"[{SECRET}]", "must be a single value"),
]


@pytest.mark.parametrize("place", ["", "settings."])
@pytest.mark.parametrize("key, value, must", SETTING_ERRORS)
def test_bad_settings_name_the_key_and_line_in_either_place_and_in_set(
        write, place, key, value, must):
    text, line = nested_yaml(place + key, value)
    path = write(text)
    message = error_of(load_batch_deployment_spec, path)
    assert message == f"{path}:{line}: key '{place + key}' {must}", message
    message = error_of(load_batch_deployment_spec, name="blue", endpoint_name="my-endpoint",
                       set_values=[f"{place + key}={value}"])
    assert message == f"--set: key '{place + key}' {must}", message


@pytest.mark.parametrize("key, value, must", [
    ("type", "pipeline", "must be model: pipeline component deployments are not supported "
                         "locally"),
    ("type", SECRET, "must be model: pipeline component deployments are not supported locally"),
    ("compute", f"azureml:/subscriptions/{SECRET}/computes/c",
     "must be azureml:NAME or NAME, the name letters, digits, hyphens or underscores"),
    ("compute", "'azureml:'",
     "must be azureml:NAME or NAME, the name letters, digits, hyphens or underscores"),
    ("compute", f"azureml:{SECRET}:1",
     "must be azureml:NAME or NAME, the name letters, digits, hyphens or underscores"),
    ("compute", f"{SECRET}.x",
     "must be azureml:NAME or NAME, the name letters, digits, hyphens or underscores"),
    ("compute", "12", "must be a string"),
    ("compute", f"{{name: {SECRET}}}", "must be a string"),
    ("resources", SECRET, "must be a mapping"),
    ("resources.instance_count", "0", "must be a whole number of at least 1"),
    ("resources.instance_count", "true", "must be a whole number of at least 1"),
    ("resources.instance_count", SECRET, "must be a whole number of at least 1"),
    ("settings", SECRET, "must be a mapping"),
    ("settings.instance_count", "0", "must be a whole number of at least 1"),
    ("job_definition", SECRET, "cannot be used locally: only model deployments are supported"),
    ("model", "[a, b]", "must be a mapping"),
    ("model.path", f"[{SECRET}]", "must be a string"),
    ("code_configuration.code", f"azureml:{SECRET}:1",
     "must be a local path: registered assets are not supported locally"),
    ("description", "12", "must be a string"),
    ("tags.owner", f"{{a: {SECRET}}}", "must be a single value"),
    ("endpoint_name", f"{SECRET}_", "is not a valid endpoint name"),
    ("name", "b", "is not a valid deployment name"),
])
def test_bad_batch_deployment_keys_name_the_key_and_line_in_the_file_and_in_set(
        write, key, value, must):
    flags = {k: v for k, v in (("name", "blue"), ("endpoint_name", "my-endpoint")) if k != key}
    text, line = nested_yaml(key, value, "".join(f"{k}: {v}\n" for k, v in flags.items()))
    path = write(text)
    message = error_of(load_batch_deployment_spec, path)
    assert message.startswith(f"{path}:{line}: key '{key}' {must}"), message
    message = error_of(load_batch_deployment_spec, set_values=[f"{key}={value}"], **flags)
    assert message.startswith(f"--set: key '{key}' {must}"), message


def test_batch_deployment_keys_azure_has_and_we_ignore_warn_once_each(write):
    path = write(f"""
        name: blue
        endpoint_name: my-endpoint
        properties: {{a: b}}
        resources:
          instance_count: 2
          instance_type: Standard_DS3_v2
          properties: {{{SECRET}: x}}
          shm_size: 2g
          docker_args: --ipc=host
          locations: [westeurope]
          max_instance_count: 4
        environment:
          name: my-env
          conda_file: conda.yml
        """)
    spec = load_batch_deployment_spec(path)
    assert spec.warnings == tuple(f"{path}:{line}: key '{key}' is recorded and ignored locally"
                                  for line, key in [
                                      (3, "properties"), (6, "resources.instance_type"),
                                      (7, "resources.properties"), (8, "resources.shm_size"),
                                      (9, "resources.docker_args"), (10, "resources.locations"),
                                      (11, "resources.max_instance_count"),
                                      (13, "environment.name")])
    assert spec.instance_count == 2


@pytest.mark.parametrize("key", [
    "instance_count", "app_insights_enabled", "request_settings", "settings.mini_batch_sizes",
    "settings.retry_settings.timeout_ms", "retry_settings.retries", "resources.gpu_count"])
def test_unknown_batch_deployment_keys_fail_at_their_line(write, key):
    text, line = nested_yaml(key, SECRET)
    path = write(text)
    assert error_of(load_batch_deployment_spec, path) == (
        f"{path}:{line}: unknown key '{key}' for a modelBatchDeployment")


def test_batch_models_and_environments_take_the_online_forms(write, tmp_path):
    for model in ["azureml:heart-classifier:1", "azureml:heart-classifier@latest",
                  "models:/heart/1", "runs:/0123abc/model"]:
        assert load_batch_deployment_spec(write(HEAD + f"model: {model}\n")).model == model
        assert load_batch_deployment_spec(
            write(HEAD + f"model:\n  path: {model}\n")).model == model
    (tmp_path / "specs").mkdir()
    path = write(HEAD + "model:\n  path: ../model\n  type: mlflow_model\n", "specs/dep.yml")
    assert load_batch_deployment_spec(path).model == str(tmp_path / "model")
    path = write(HEAD + "model:\n  name: heart\n")
    assert error_of(load_batch_deployment_spec, path) == f"{path}:3: key 'model.path' is missing"
    path = write(HEAD + f"environment: azureml:{SECRET}:1\n")
    assert error_of(load_batch_deployment_spec, path) == (
        f"{path}:3: key 'environment' names a registered environment: registered environments "
        "are not supported yet; give environment.conda_file")
    path = write(HEAD + f"environment:\n  image: {SECRET}\n")
    assert error_of(load_batch_deployment_spec, path) == (
        f"{path}:4: key 'environment': no Docker here: give environment.conda_file")
    path = write(HEAD + "code_configuration:\n  code: src\n")
    assert error_of(load_batch_deployment_spec, path) == (
        f"{path}:3: key 'code_configuration.scoring_script' is missing")


def test_batch_settings_come_from_mlflow_deploy_tags(write):
    path = write(HEAD + "tags:\n  owner: vision\n  mlflow-deploy/env_manager: local\n")
    spec = load_batch_deployment_spec(path, set_values=["tags.mlflow-deploy/validation=strict"])
    assert spec.settings == {"env_manager": "local", "validation": "strict"}
    assert spec.tags == {"owner": "vision", "mlflow-deploy/env_manager": "local",
                         "mlflow-deploy/validation": "strict"}
    path = write(HEAD + "tags:\n  mlflow-deploy/: x\n")
    assert error_of(load_batch_deployment_spec, path) == (
        f"{path}:4: key 'tags.mlflow-deploy/' names no setting")


def test_the_schema_comes_from_the_function_called(write):
    path = write("$schema: https://azuremlschemas.azureedge.net/latest/modelBatchDeployment"
                 ".schema.json\nname: blue\nendpoint_name: my-endpoint\nmini_batch_size: 3\n")
    assert error_of(load_deployment_spec, path) == (
        f"{path}:4: unknown key 'mini_batch_size' for a managedOnlineDeployment")
    assert error_of(load_batch_endpoint_spec, path) == (
        f"{path}:3: unknown key 'endpoint_name' for a batchEndpoint")
    path = write("name: mnist-batch\ntraffic: {blue: 100}\n")
    assert load_endpoint_spec(path).traffic == {"blue": 100}
    assert error_of(load_batch_endpoint_spec, path) == (
        f"{path}:2: unknown key 'traffic' for a batchEndpoint")
