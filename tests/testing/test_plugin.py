"""The pytest plugin, used the way a user's project uses it: a separate pytest run, no conftest."""
import shutil
import textwrap

import pytest

pytest_plugins = ["pytester"]
ROOT_PAYLOADS = __import__("pathlib").Path(__file__).resolve().parents[2] / "example_models" / \
    "payloads"


@pytest.fixture
def project(pytester, example_models):
    """A temp project with the repository's example payload files next to its tests."""
    folder = pytester.path / "payloads"
    shutil.copytree(ROOT_PAYLOADS, folder)
    return example_models


def test_payloads_marker_and_scoring_client(pytester, project):
    pytester.makepyfile(test_user=textwrap.dedent("""
        import pytest
        from mlflow_deploy.testing import PayloadFile

        @pytest.mark.payloads("payloads/diabetes-*.json", model={diabetes!r})
        def test_diabetes_payloads(payload):
            assert isinstance(payload, PayloadFile)
            if "bad" in payload.name:
                payload.assert_rejected(match="column 'age'")
            else:
                payload.assert_valid()

        def test_client(scoring_client):
            client = scoring_client({iris!r})
            assert client.signature.inputs.is_tensor_spec()
            assert client.swagger()["swagger"] == "2.0"
            assert client.score([[5.1, 3.5, 1.4, 0.2]]).body == [0]
    """).format(diabetes=project["diabetes"], iris=project["iris-tensor"]))
    result = pytester.runpytest("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_diabetes_payloads?payloads/diabetes-bad.json? PASSED*",
                                 "*test_diabetes_payloads?payloads/diabetes-split.json? PASSED*"])


def test_failure_shows_what_the_server_would_answer(pytester, project):
    pytester.makepyfile(test_user=textwrap.dedent("""
        import pytest

        @pytest.mark.payloads("payloads/diabetes-bad.json", model={diabetes!r})
        def test_bad_payload_scores(payload):
            payload.assert_valid()
    """).format(diabetes=project["diabetes"]))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*would not score this payload (validation: compatible)*",
                                 "*HTTP 400 {\"message\":\"missing required column 'age'\"}*"])


def test_validation_option_sets_the_suite_default(pytester, project):
    pytester.makepyfile(test_user=textwrap.dedent("""
        from mlflow_deploy.testing import score

        BODY = {{"input_data": {{"columns": ["count", "price", "label"],
                                 "data": [["2", 9.99, "pen"]]}}}}

        def test_default():
            assert score({mixed!r}, BODY).status == 400

        def test_explicit_wins(scoring_client):
            assert score({mixed!r}, BODY, validation="compatible").status == 200
            assert scoring_client({mixed!r}, validation="compatible").score(BODY).status == 200
    """).format(mixed=project["mixed-params"]))
    result = pytester.runpytest("-p", "no:cacheprovider", "--mlflow-deploy-validation", "strict")
    result.assert_outcomes(passed=2)
    from mlflow_deploy.testing.settings import default_validation

    assert default_validation() == "compatible"  # the outer run keeps its own mode


def test_marker_without_matching_files_is_an_error(pytester, project):
    pytester.makepyfile(test_user="""
        import pytest

        @pytest.mark.payloads("nothing/*.json", model="models:/diabetes/1")
        def test_none(payload):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*no payload file matches*"])


def test_entry_point_loads_in_a_fresh_interpreter(pytester, project):
    """No conftest, no -p: the installed pytest11 entry point brings the plugin."""
    pytester.makepyfile(test_user="""
        def test_fixture_exists(scoring_client):
            assert callable(scoring_client)
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--markers")
    result.stdout.fnmatch_lines(["*@pytest.mark.payloads(*globs, model=None)*"])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
