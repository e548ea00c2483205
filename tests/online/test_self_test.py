"""Before a revision is Succeeded it answers one real request through a real forked worker: the
model's input example (must be 200) or a payload made from its signature (must not be 5xx).
What fails only in a forked worker fails the create, or leaves the previous revision serving."""
import os
import textwrap

import pandas as pd
import pytest
import requests

from example_models.build import shared_requirements
from mlflow_deploy import online
from mlflow_deploy.errors import ServerFailed
from tests.testing.models import FORK_SHY

pytestmark = pytest.mark.slow

PICKY = textwrap.dedent('''
    import mlflow.models
    import mlflow.pyfunc


    class Picky(mlflow.pyfunc.PythonModel):
        """Rejects every value it did not expect (as a model may reject made-up ones)."""

        def predict(self, context, model_input, params=None):
            if (model_input["x"] != 42.0).any():
                raise ValueError("x must be 42")
            return [1.0] * len(model_input)


    mlflow.models.set_model(Picky())
''')


def save(root, name, code, example=True):
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    path = root / (name + ".py")
    path.write_text(code)
    frame = pd.DataFrame({"x": [42.0]})
    mlflow.pyfunc.save_model(str(root / name), python_model=str(path),
                             signature=infer_signature(frame, [1.0]),
                             input_example=frame if example else None,
                             pip_requirements=shared_requirements())
    return str(root / name)


def test_a_model_that_fails_only_in_a_forked_worker_fails_the_create(deploy_home, tmp_path):
    model = save(tmp_path, "forkshy", FORK_SHY)
    with pytest.raises(ServerFailed) as info:
        online.create_deployment("shy", model)
    message = str(info.value)
    assert message.startswith("The start-up self-test failed: the model, sent its input "
                              "example, answered 500")
    failed = online.get_deployment("shy")
    assert failed["provisioning_state"] == "Failed" and failed["error"] == message
    assert failed["log_path"] in message and "this library does not work after a fork" in \
        open(failed["log_path"]).read()
    assert failed["pid"] is None  # its server and its port are released


def test_an_update_that_fails_its_self_test_leaves_the_old_revision_serving(deploy_home,
                                                                            tmp_path):
    good = save(tmp_path, "picky", PICKY)
    created = online.create_deployment("keep", good)
    assert created["self_test"]["kind"] == "input_example"
    assert created["self_test"]["status"] == 200
    with pytest.raises(ServerFailed, match="^The start-up self-test failed"):
        online.update_deployment("keep", model_uri=save(tmp_path, "forkshy", FORK_SHY))
    after = online.get_deployment("keep")
    assert after["revision"] == 1 and after["state"] == "Running"
    answer = requests.post(after["scoring_uri"], timeout=10,
                           json={"input_data": {"columns": ["x"], "data": [[42.0]]}})
    assert answer.status_code == 200 and answer.json() == [1.0]


def test_without_an_input_example_a_payload_from_the_signature_may_be_rejected(deploy_home,
                                                                               tmp_path):
    created = online.create_deployment("generated", save(tmp_path, "picky", PICKY,
                                                         example=False))
    assert created["provisioning_state"] == "Succeeded"
    assert created["self_test"] == {"kind": "generated", "status": 400,
                                    "ms": created["self_test"]["ms"]}


def test_a_scoring_script_is_not_self_tested_and_says_so(deploy_home, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text("def init():\n    pass\n\n\ndef run(raw_data):\n"
                                   "    return {'ok': True}\n")
    (tmp_path / "model.txt").write_text("weights")
    created = online.create_deployment("script", str(tmp_path / "model.txt"), config={
        "code": str(code), "scoring_script": "score.py", "env_manager": "local"})
    assert created["self_test"]["kind"] == "skipped"
    assert "scoring script" in created["self_test"]["reason"]
    assert os.path.exists(created["log_path"])


def test_an_added_instance_is_tried_with_the_test_kept_at_create(deploy_home, tmp_path):
    """A scale-up tries its new instance with the test the create made, kept in the
    deployment's model folder: the command does not import mlflow to read the model again."""
    import json
    from pathlib import Path

    from mlflow_deploy.online.selftest import KEPT_TEST
    from tests.imports import modules_after

    created = online.create_deployment("scaled", save(tmp_path, "picky", PICKY))
    config = json.loads(Path(deploy_home.get_deployment("scaled").server_config_path).read_text())
    assert json.loads(Path(config["model_dir"], KEPT_TEST).read_text())["kind"] == \
        "input_example"
    done, loaded = modules_after(
        "from mlflow_deploy.cli import main\n"
        "main(['online-deployment', 'update', '--name', 'scaled', '--endpoint-name', 'scaled',"
        " '--set', 'instance_count=2'])", ["mlflow"])
    assert done.returncode == 0, done.stderr
    assert loaded == [], loaded
    scaled = online.get_deployment("scaled")
    assert scaled["revision"] == created["revision"] and len(scaled["instances"]) == 2
    tried = [line for index, line in online.deployment_logs("scaled") if index == 1
             and "self-test-{}".format(created["revision"]) in line]
    assert tried, online.deployment_logs("scaled")
