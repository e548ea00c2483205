"""`mlflow-deploy batch-endpoint invoke|list-jobs` and `mlflow-deploy job ...` as an `az ml`
user drives them, through the real command line (in-process): the job's name on stdout, progress
on stderr, JSON from show and list, one `Error:` line and a non-zero exit when a job the command
waited for failed or a command cannot be done."""
import json

import pytest
from click.testing import CliRunner

from mlflow_deploy.cli import cli
from mlflow_deploy.store import HOME_ENV
from tests.batch.job_fixtures import ENDPOINT, jobs_home, write_inputs  # noqa: F401


@pytest.fixture
def home(jobs_home, monkeypatch):
    monkeypatch.setenv(HOME_ENV, str(jobs_home.home))
    return jobs_home


def run(*args, code=0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result


def error_line(result):
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: "), result.stderr
    return lines[-1]


def test_invoke_waits_streams_and_the_job_is_shown_and_listed(home, tmp_path):
    data = write_inputs(tmp_path / "data", ["a.csv", "b.csv", "c.csv"])
    (data / "nested").mkdir()
    (data / "nested" / "x.csv").write_text("skipped\n")
    result = run("batch-endpoint", "invoke", "--name", ENDPOINT, "--input", data,
                 "--input-type", "uri_folder", "--deployment-name", "script",
                 "--mini-batch-size", 2, "--max-retries", 0, "--timeout", 20,
                 "--output-path", tmp_path / "out", "--set", "output_file_name=scores.csv",
                 "--set", "environment_variables.JOB_TEST_TAG=cli", "--wait")
    name = result.stdout.strip()
    assert name.startswith("batchjob-") and "\n" not in name
    err = result.stderr
    assert "1 file in nested folders of the input was skipped" in err
    assert "mini-batch 2/2 done" in err
    assert "2/2 mini-batches, files 3/3 (0 failed), 9 rows" in err  # a progress line
    assert "job {}: Completed".format(name) in err
    lines = (tmp_path / "out" / "scores.csv").read_text().splitlines()
    assert len(lines) == 9 and all(line.endswith(" cli") for line in lines)

    shown = json.loads(run("job", "show", "--name", name).stdout)
    assert shown["status"] == "Completed" and shown["counts"]["rows"] == 9
    assert shown["settings"]["retry_settings"] == {"max_retries": 0, "timeout": 20}
    assert shown["output_file"] == str(tmp_path / "out" / "scores.csv")
    assert name in [j["name"] for j in json.loads(run("job", "list").stdout)]
    listed = json.loads(run("job", "list", "--endpoint-name", ENDPOINT).stdout)
    assert json.loads(run("batch-endpoint", "list-jobs", "--name", ENDPOINT).stdout) == listed
    streamed = run("job", "stream", "--name", name)
    assert "job {}: Completed".format(name) in streamed.stderr

    assert "ended already" in error_line(run("job", "cancel", "--name", name, code=5))
    assert "nothing to resume" in error_line(run("job", "resume", "--name", name, code=5))
    again = run("batch-endpoint", "invoke", "--name", ENDPOINT, "--input", data,
                "--output-path", tmp_path / "out", "--set", "output_file_name=scores.csv",
                code=5)
    assert "output file already exists" in error_line(again)


def test_a_failed_job_fails_the_command_that_waited(home, tmp_path):
    data = write_inputs(tmp_path / "data", ["a.csv", "hang-b.csv"])
    result = run("batch-endpoint", "invoke", "--name", ENDPOINT, "--input", data,
                 "--deployment-name", "script", "--timeout", 1, "--max-retries", 0,
                 "--error-threshold", 0, "--wait", code=1)
    name = result.stdout.strip()
    assert error_line(result).startswith("Error: The job {} ended Failed: More input files "
                                         "failed than error_threshold".format(name))
    assert "timeout of 1 s" in result.stderr


def test_bad_arguments_are_one_line_errors(home, tmp_path):
    data = write_inputs(tmp_path / "data", ["a.csv"])
    for args, code, words in [
        (["--set", "mini_batch_size=0"], 2, "mini_batch_size"),
        (["--set", "colour=red"], 2, "unknown key 'colour'"),
        (["--deployment-name", "absent"], 3, "--deployment-name"),
        # a flag's error names the flag, not the config key it sets
        (["--mini-batch-size", "0"], 2, "Error: --mini-batch-size must be between 1 and"),
        (["--max-retries", "-1"], 2, "Error: --max-retries must be between 0 and"),
    ]:
        result = run("batch-endpoint", "invoke", "--name", ENDPOINT, "--input", data, *args,
                     code=code)
        assert words in error_line(result)
    assert "--name" in error_line(run("job", "show", "--name", "batchjob-absent", code=3))
    assert "--name" in error_line(run("batch-endpoint", "list-jobs", "--name", "absent",
                                      code=3))
