"""Scoring through a real server (served.py): gunicorn with the project's config, the model loaded
in its master and predicted in a forked worker. It answers what in-process scoring answers, and
shows what in-process scoring cannot (a model that fails only after a fork, a worker that dies);
the servers are stopped afterwards with no process left."""
import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest

from mlflow_deploy import testing
from mlflow_deploy.errors import ServerFailed
from mlflow_deploy.testing import served
from mlflow_deploy.testing.served import Server
from tests.testing import models
from tests.testing.leftovers import left_running

pytest_plugins = ["pytester"]
PAYLOADS = Path(__file__).resolve().parents[2] / "example_models" / "payloads"
DIABETES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
DIABETES_BODY = {"input_data": {"columns": DIABETES, "data": [[0.03] * 10, [-0.01] * 10]}}
X_BODY = {"input_data": {"columns": ["x"], "data": [[42.0]]}}


def session_servers(model_dir):
    """The session's servers started for a local model folder (one per validation mode)."""
    key = ("path", os.path.realpath(model_dir))
    return [s for k, s in served._session.items() if k[0] == key and isinstance(s, Server)]


def test_a_model_that_fails_only_in_a_forked_worker(fork_shy_dir):
    assert testing.assert_valid(fork_shy_dir, X_BODY).body == [1.0]  # in process: fine
    with pytest.raises(AssertionError) as caught:
        testing.assert_valid(fork_shy_dir, X_BODY, server=True)
    text = str(caught.value)
    assert "would not score this payload (validation: compatible, a real server); the server " \
           "answered:" in text
    assert 'HTTP 500 {"message":"The model failed while scoring' in text
    assert "RuntimeError: " + models.FORK_SHY_ERROR in text  # the server's log, traceback and all
    response = testing.assert_rejected(fork_shy_dir, X_BODY, status=500, server=True,
                                       match="^The model failed while scoring")
    assert response.served and response.headers["x-ms-run-function-failed"] == "True"
    [server] = session_servers(fork_shy_dir)  # started once, kept for the session
    testing.clear_cache()
    assert session_servers(fork_shy_dir) == []
    assert left_running(server.dir) == [] and not server.dir.exists()


def test_a_real_server_answers_what_in_process_scoring_answers(example_model_dirs,
                                                               scoring_client):
    folder = example_model_dirs["diabetes"]
    here, there = testing.score(folder, DIABETES_BODY), testing.score(folder, DIABETES_BODY,
                                                                       server=True)
    assert there.served and not here.served
    assert there.status == 200 and there.body == here.body and there.raw == here.raw
    assert there.headers["x-ms-run-function-failed"] == "False"
    coerced = {"input_data": {"columns": DIABETES, "data": [["0.03"] + [0.01] * 9]}}
    assert testing.assert_valid(folder, coerced, server=True).coercions == \
        testing.score(folder, coerced).coercions != ()
    strict = testing.assert_rejected(folder, coerced, validation="strict", server=True,
                                     match="column 'age'")
    assert strict.message == testing.score(folder, coerced, validation="strict").message
    client = scoring_client(folder, server=True)
    missing = {"input_data": {"columns": DIABETES[1:], "data": [[0.1] * 9]}}
    assert client.assert_rejected(missing).message == "missing required column 'age'"
    assert client.score(missing, server=False).served is False
    servers = session_servers(folder)
    assert sorted(s.options.validation.value for s in servers) == ["compatible", "strict"]
    testing.score(folder, DIABETES_BODY, server=True)
    assert session_servers(folder) == servers  # one server per model and mode, reused
    testing.clear_cache()
    for server in servers:
        assert left_running(server.dir) == []


def test_a_worker_that_dies_is_no_answer(tmp_path):
    crasher = models.save_from_code(tmp_path, "crasher", models.CRASHER)
    testing.assert_valid(crasher, X_BODY, server=True)
    with pytest.raises(AssertionError, match="gave no answer to this payload through a real "
                                             r"server: The scoring server gave no answer \("):
        testing.assert_valid(crasher, {"input_data": {"columns": ["x"], "data": [[13.0]]}},
                         server=True)
    testing.assert_valid(crasher, X_BODY, server=True)  # gunicorn forked a new worker
    [server] = session_servers(crasher)
    testing.clear_cache()
    assert left_running(server.dir) == []


def test_a_server_that_cannot_start_names_its_log_and_is_not_retried(example_model_dirs,
                                                                    tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(example_model_dirs["diabetes"], broken)
    [weights] = broken.glob("model.*")  # the scikit-learn flavor's file, whatever its format
    weights.write_bytes(b"not a model")
    with pytest.raises(ServerFailed) as first:
        testing.score(str(broken), DIABETES_BODY, server=True)
    message = first.value.message
    assert message.startswith("The scoring server failed to start: the model could not be "
                              "loaded: ")
    log = message.rsplit("(log: ", 1)[1].rstrip(")")
    assert os.path.isfile(log)  # kept, to be read
    with pytest.raises(ServerFailed) as again:
        testing.score(str(broken), DIABETES_BODY, server=True)
    assert again.value.message == message  # the same failure, without another start
    assert left_running(os.path.dirname(log)) == []
    testing.clear_cache()
    shutil.rmtree(os.path.dirname(log))


def test_server_stops_its_whole_process_group(example_model_dirs, tmp_path):
    with Server(example_model_dirs["iris-tensor"], directory=tmp_path / "server") as server:
        assert len(left_running(tmp_path, timeout=0)) == 2  # the master and its one worker
        answer = server.post(json.dumps({"input_data": [[5.1, 3.5, 1.4, 0.2]]}).encode())
        assert answer.status == 200 and json.loads(answer.body) == [0]
    assert left_running(tmp_path) == []
    assert (tmp_path / "server" / "server.log").exists()  # a folder of the caller's stays


def test_the_suite_option_scores_through_servers_stopped_at_exit(pytester, fork_shy_dir,
                                                                 example_model_dirs):
    """--mlflow-deploy-server makes it the default of a whole run, in its own interpreter; its
    servers are stopped when that interpreter exits."""
    shutil.copytree(PAYLOADS, pytester.path / "payloads")
    record = pytester.path / "servers.json"
    pytester.makepyfile(test_user=textwrap.dedent("""
        import json

        import pytest
        from mlflow_deploy.testing import score, served

        BODY = {body!r}

        def test_served_by_default():
            response = score({shy!r}, BODY)
            assert response.served and response.status == 500
            assert score({shy!r}, BODY, server=False).status == 200

        @pytest.mark.payloads("payloads/diabetes-split.json", model={diabetes!r})
        def test_payload(payload):
            assert payload.assert_valid().served

        def test_zz_record_the_servers():
            with open({record!r}, "w") as f:
                json.dump([str(s.dir) for s in served._session.values()], f)
    """).format(body=X_BODY, shy=fork_shy_dir, diabetes=example_model_dirs["diabetes"],
                record=str(record)))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mlflow-deploy-server")
    result.assert_outcomes(passed=3)
    folders = json.loads(record.read_text())
    assert len(folders) == 2
    for folder in folders:
        assert left_running(folder) == [] and not os.path.exists(folder)
