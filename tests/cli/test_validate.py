"""`mlflow-deploy validate` over one file (the server's message, in one line), a folder or a glob,
with JUnit XML for CI."""
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_deploy.cli import cli
from mlflow_deploy.cli.validate import validate_command

PAYLOADS = Path(__file__).resolve().parents[2] / "example_models" / "payloads"
COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
ROW = [0.038, 0.05, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017]
SPLIT = {"input_data": {"columns": COLUMNS, "data": [ROW]}}


def run(*args):
    return CliRunner().invoke(validate_command, [str(a) for a in args])


def test_one_file_keeps_the_old_behaviour(example_models):
    ok = run(example_models["diabetes"], PAYLOADS / "diabetes-split.json")
    assert ok.exit_code == 0 and ok.output == "OK: split payload, 2 row(s); params: none\n"
    bad = run(example_models["diabetes"], PAYLOADS / "diabetes-bad.json")
    assert bad.exit_code == 1
    assert bad.output.strip() == "Error: 400: missing required column 'age'"


def test_folder_with_junit_xml(example_models, tmp_path):
    folder = tmp_path / "payloads"
    folder.mkdir()
    for name in ("diabetes-split.json", "diabetes-bad.json", "heart-split.json"):
        shutil.copy(PAYLOADS / name, folder / name)
    (folder / "broken.json").write_text("{")
    report = tmp_path / "junit.xml"
    result = run(example_models["diabetes"], folder, "--junit-xml", report)
    assert result.exit_code == 1
    assert "4 payload(s): 1 accepted, 3 rejected" in result.output
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite.get("tests") == "4" and suite.get("failures") == "3"
    cases = {Path(c.get("name")).name: c for c in suite.iter("testcase")}
    assert cases["diabetes-split.json"].find("failure") is None
    failure = cases["diabetes-bad.json"].find("failure")
    assert failure.get("type") == "HTTP 400"
    assert failure.get("message") == "missing required column 'age'"
    assert "could not be decoded as JSON" in cases["broken.json"].find("failure").get("message")


def test_glob_and_predict(example_models, tmp_path):
    result = run(example_models["diabetes"], str(PAYLOADS / "diabetes-s*.json"), "--predict",
                 "--junit-xml", tmp_path / "j.xml")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok   ") and "1 accepted, 0 rejected" in result.output


def test_no_match_is_a_usage_error(example_models, tmp_path):
    result = run(example_models["diabetes"], str(tmp_path / "*.json"))
    assert result.exit_code == 2 and "No payload file found" in result.output


def test_validate_accepts_a_good_payload(example_model_dirs, tmp_path):
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(SPLIT))
    result = CliRunner().invoke(cli, ["validate", example_model_dirs["diabetes"], str(payload)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: ") and len(result.output.splitlines()) == 1


@pytest.mark.parametrize("validation", ["compatible", "strict"])
def test_validate_gives_the_servers_message(example_model_dirs, tmp_path, validation):
    from mlflow_deploy.scoring.pipeline import score
    from mlflow_deploy.scoring.predictor import Predictor

    bad = {"input_data": {"columns": COLUMNS, "data": [["5.1"] + ROW[1:]]}}
    raw = json.dumps(bad).encode()
    expected = score(
        raw,
        "application/json",
        Predictor.load(example_model_dirs["diabetes"]),
        validation=validation,
    )
    payload = tmp_path / "payload.json"
    payload.write_bytes(raw)
    result = CliRunner().invoke(
        cli, ["validate", example_model_dirs["diabetes"], str(payload), "--validation", validation]
    )
    if expected.status == 200:
        assert result.exit_code == 0 and "coercion" in result.output
    else:
        message = json.loads(expected.body)["message"]
        assert result.exit_code == 1
        assert result.output == f"Error: {expected.status}: {message}\n"


def test_validate_errors_are_one_line(example_model_dirs, tmp_path):
    payload = tmp_path / "payload.json"
    payload.write_text("{not json")
    result = CliRunner().invoke(cli, ["validate", example_model_dirs["diabetes"], str(payload)])
    assert result.exit_code == 1 and result.output.startswith("Error: 400: POST body could not")
    result = CliRunner().invoke(cli, ["validate", "gopher://x/y", str(payload)])
    assert result.exit_code == 2
    assert result.output == (
        "Error: Unsupported model URI scheme 'gopher': use a local path, "
        "file:, runs:/, models:/ or azureml: URI.\n"
    )
    result = CliRunner().invoke(cli, ["validate", str(tmp_path), str(payload)])
    assert result.exit_code == 2 and "no MLmodel file" in result.output
    assert len(result.output.splitlines()) == 1


def test_server_answers_as_in_process_prediction_does(example_models, tmp_path, monkeypatch):
    """--server posts each payload to a real server: the same lines and JUnit cases as --predict
    for a model that scores anywhere; the server is gone when the command returns."""
    import tempfile

    from tests.testing.leftovers import left_running

    folder = tmp_path / "payloads"
    folder.mkdir()
    for name in ("diabetes-split.json", "diabetes-bad.json"):
        shutil.copy(PAYLOADS / name, folder / name)
    (folder / "broken.json").write_text("{")
    servers = tmp_path / "tmp"
    servers.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(servers))  # where the command's server lives
    in_process = run(example_models["diabetes"], folder, "--predict", "--junit-xml",
                     tmp_path / "predict.xml")
    served = run(example_models["diabetes"], folder, "--server", "--junit-xml",
                 tmp_path / "server.xml")
    assert served.exit_code == in_process.exit_code == 1
    assert served.output == in_process.output
    assert "3 payload(s): 1 accepted, 2 rejected" in served.output
    failures = {Path(c.get("name")).name: c.find("failure")
                for c in ET.parse(tmp_path / "server.xml").getroot().iter("testcase")}
    assert failures["diabetes-bad.json"].get("type") == "HTTP 400"
    assert left_running(servers) == [] and not list(servers.glob("mlflow-deploy-server-*"))


def test_server_shows_a_model_that_fails_only_in_a_forked_worker(tmp_path):
    from tests.testing.models import save_fork_shy

    model = save_fork_shy(tmp_path)
    payload = tmp_path / "x.json"
    payload.write_text(json.dumps({"input_data": {"columns": ["x"], "data": [[42.0]]}}))
    assert run(model, payload, "--predict").output == "OK: scored: 5 byte(s) of predictions\n"
    served = run(model, payload, "--server")
    assert served.exit_code == 1
    assert served.output.startswith("Error: 500: The model failed while scoring; the deployment "
                                    "log has the traceback for request id ")
