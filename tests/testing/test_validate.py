"""`validate` over one file (the old behaviour), a folder or a glob, with JUnit XML for CI."""
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from mlflow_deploy.testing.validate import validate_command

PAYLOADS = Path(__file__).resolve().parents[2] / "example_models" / "payloads"


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
