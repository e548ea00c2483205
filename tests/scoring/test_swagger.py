"""GET /swagger.json documents built from real MLflow signatures (mlflow_deploy.scoring.swagger)."""
import ast
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.types import ParamSchema, ParamSpec, Schema
import mlflow.types.schema

if not hasattr(mlflow.types.schema, "AnyType"):  # the old-stack run (mlflow 2.7)
    pytest.skip("these cases use the column types of mlflow >= 2.10; /swagger.json itself is "
                "covered on the old stack by test_server.py", allow_module_level=True)
from mlflow.types.schema import AnyType, Array, ColSpec, Map, Object, Property, TensorSpec  # noqa: E402

from mlflow_deploy.scoring import swagger
from mlflow_deploy.scoring.errors import NotFound
from mlflow_deploy.scoring.swagger import SUPPORTED_VERSIONS, build_swagger

try:
    from openapi_spec_validator import (
        OpenAPIV2SpecValidator,
        OpenAPIV30SpecValidator,
        OpenAPIV31SpecValidator,
    )

    VALIDATORS = {
        "2": OpenAPIV2SpecValidator,
        "3": OpenAPIV30SpecValidator,
        "3.1": OpenAPIV31SpecValidator,
    }
except ImportError:  # pragma: no cover - depends on the dev environment
    VALIDATORS = None

needs_validator = pytest.mark.skipif(
    VALIDATORS is None, reason="openapi-spec-validator is not installed"
)

# -- signatures ------------------------------------------------------------------------------------

COLUMN_INPUT = Schema(
    [
        ColSpec("double", "d"),
        ColSpec("float", "f"),
        ColSpec("long", "l"),
        ColSpec("integer", "i"),
        ColSpec("boolean", "b"),
        ColSpec("string", "s"),
        ColSpec("binary", "bin"),
        ColSpec("datetime", "ts"),
        ColSpec(Array("long"), "arr"),
        ColSpec(Object([Property("x", "string"), Property("y", "double", required=False)]), "obj"),
        ColSpec(Map(Array("double")), "map"),
        ColSpec(AnyType(), "any"),
        ColSpec("double", "opt_num", required=False),
        ColSpec("string", "opt_str", required=False),
    ]
)
COLUMN_NAMES = [c.name for c in COLUMN_INPUT.inputs]
REQUIRED_COLUMNS = COLUMN_NAMES[:-2]
COLUMN_OUTPUT = Schema([ColSpec("double", "score"), ColSpec("string", "label")])
COLUMN_EXAMPLE = {
    "input_data": {
        "columns": REQUIRED_COLUMNS,
        "index": [0],
        "data": [
            [
                1.5,
                2.5,
                3,
                4,
                True,
                "x",
                "aGVsbG8=",
                "2024-01-02T03:04:05Z",
                [1, 2],
                {"x": "a"},
                {"k": [1.0]},
                None,
            ]
        ],
    },
    "params": {"temperature": 0.2},
}

TENSOR_INPUT = Schema([TensorSpec(np.dtype("float32"), (-1, 4))])
TENSOR_OUTPUT = Schema([TensorSpec(np.dtype("int64"), (-1,))])
TENSOR_EXAMPLE = {"input_data": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]}

NAMED_INPUT = Schema(
    [
        TensorSpec(np.dtype("int64"), (-1, 12), "tokens"),
        TensorSpec(np.dtype("int64"), (-1, 12), "mask"),
    ]
)
NAMED_OUTPUT = Schema([TensorSpec(np.dtype("float32"), (-1, 2), "logits")])
NAMED_EXAMPLE = {"input_data": {"tokens": [list(range(12))], "mask": [[1] * 12]}}

PARAMS = ParamSchema(
    [
        ParamSpec("temperature", "double", 0.7),
        ParamSpec("max_tokens", "long", 16),
        ParamSpec("greedy", "boolean", False),
        ParamSpec("prefix", "string", "hi"),
        ParamSpec("stop_ids", "long", [1, 2], (-1,)),
        ParamSpec("as_of", "datetime", datetime.datetime(2024, 1, 2, 3, 4, 5)),
        ParamSpec("nothing", "string", None),
    ]
)

CASES = {
    "columns": dict(
        input_schema=COLUMN_INPUT, output_schema=COLUMN_OUTPUT, params_schema=PARAMS,
        example=COLUMN_EXAMPLE,
    ),
    "tensor": dict(
        input_schema=TENSOR_INPUT, output_schema=TENSOR_OUTPUT, params_schema=None,
        example=TENSOR_EXAMPLE,
    ),
    "named_tensors": dict(
        input_schema=NAMED_INPUT, output_schema=NAMED_OUTPUT, params_schema=PARAMS,
        example=NAMED_EXAMPLE,
    ),
    "no_signature": dict(input_schema=None, output_schema=None, params_schema=None, example=None),
}


def build(version, case):
    return build_swagger(version, **CASES[case])


def schemas_of(doc):
    return doc["definitions"] if "swagger" in doc else doc["components"]["schemas"]


def request_schema(doc):
    return schemas_of(doc)["ServiceInput"]


def input_data_schema(doc):
    return request_schema(doc)["properties"]["input_data"]


def types_of(schema):
    t = schema.get("type", [])
    return set(t) if isinstance(t, list) else {t}


def is_nullable(schema, version):
    if version == "2":
        return schema.get("x-nullable") is True
    if version == "3":
        return schema.get("nullable") is True
    return "null" in types_of(schema)


# -- the whole document ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_top_level_fields(version, case):
    doc = build(version, case)
    json.dumps(doc, allow_nan=False)  # servable as-is
    if version == "2":
        assert doc["swagger"] == "2.0"
        assert "openapi" not in doc and "components" not in doc
        assert set(doc["definitions"]) >= {"ServiceInput", "ServiceOutput", "ErrorResponse"}
    else:
        assert doc["openapi"] == {"3": "3.0.3", "3.1": "3.1.0"}[version]
        assert "swagger" not in doc and "definitions" not in doc
        assert set(doc["components"]["schemas"]) >= {
            "ServiceInput", "ServiceOutput", "ErrorResponse"
        }
    assert doc["info"]["title"] == "mlflow-deploy"
    assert doc["info"]["version"]
    assert set(doc["paths"]) == {"/", "/score", "/swagger.json"}
    assert set(doc["paths"]["/score"]) == {"post"}
    assert set(doc["paths"]["/"]) == {"get"}
    assert set(doc["paths"]["/swagger.json"]) == {"get"}


@needs_validator
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_valid_against_official_schema(version, case):
    errors = [str(e) for e in VALIDATORS[version](build(version, case)).iter_errors()]
    assert errors == []


def test_title_is_used():
    for version in SUPPORTED_VERSIONS:
        doc = build_swagger(version, input_schema=None, output_schema=None, params_schema=None,
                            example=None, title="iris-blue")
        assert doc["info"]["title"] == "iris-blue"


# -- unknown versions ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["4", "3.0", "2.0", "", "v3", " 3", "31"])
def test_unknown_version_is_not_found_with_azure_text(bad):
    with pytest.raises(NotFound) as info:
        build(bad, "columns")
    assert info.value.status == 404
    assert info.value.message == (
        "Swagger version [" + bad + "] is not valid. Supported versions: [2, 3, 3.1]."
    )
    assert str(info.value) == info.value.message


def test_unknown_version_message_matches_design_example():
    with pytest.raises(NotFound, match=r"^Swagger version \[4\] is not valid\. "
                                       r"Supported versions: \[2, 3, 3\.1\]\.$"):
        build_swagger("4", input_schema=None, output_schema=None, params_schema=None, example=None)


# -- paths and responses ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_score_responses_and_error_schema(version):
    doc = build(version, "columns")
    responses = doc["paths"]["/score"]["post"]["responses"]
    assert {"200", "400", "415", "500", "504"} <= set(responses)
    prefix = "#/definitions/" if version == "2" else "#/components/schemas/"
    for code in ("400", "415", "500", "504"):
        if version == "2":
            ref = responses[code]["schema"]["$ref"]
        else:
            ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
        assert ref == prefix + "ErrorResponse"
    error = schemas_of(doc)["ErrorResponse"]
    assert error["type"] == "object"
    assert error["properties"]["message"]["type"] == "string"
    assert error["required"] == ["message"]
    ok = responses["200"] if version == "2" else responses["200"]["content"]["application/json"]
    assert ok["schema"]["$ref"] == prefix + "ServiceOutput"


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_liveness_and_swagger_routes(version):
    doc = build(version, "tensor")
    live = doc["paths"]["/"]["get"]["responses"]["200"]
    swag = doc["paths"]["/swagger.json"]["get"]
    (param,) = swag["parameters"]
    assert param["name"] == "version" and param["in"] == "query"
    if version == "2":
        assert doc["paths"]["/"]["get"]["produces"] == ["text/plain"]
        assert live["schema"] == {"type": "string"}
        assert param["enum"] == ["2", "3", "3.1"]
    else:
        assert live["content"]["text/plain"]["schema"] == {"type": "string"}
        assert live["content"]["text/plain"]["example"] == "Healthy"
        assert param["schema"]["enum"] == ["2", "3", "3.1"]
    assert "404" in swag["responses"]


# -- the example -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["columns", "tensor", "named_tensors"])
@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_example_is_embedded(version, case):
    doc = build(version, case)
    example = CASES[case]["example"]
    post = doc["paths"]["/score"]["post"]
    if version == "2":
        (body,) = post["parameters"]
        assert body["in"] == "body" and body["required"] is True
        assert body["schema"] == {"$ref": "#/definitions/ServiceInput"}
        assert body["x-examples"] == {"application/json": example}
        assert doc["definitions"]["ServiceInput"]["example"] == example
    else:
        media = post["requestBody"]["content"]["application/json"]
        assert post["requestBody"]["required"] is True
        assert media["example"] == example
        assert media["schema"] == {"$ref": "#/components/schemas/ServiceInput"}


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_no_example_no_example_keys(version):
    doc = build(version, "no_signature")
    post = doc["paths"]["/score"]["post"]
    if version == "2":
        assert "x-examples" not in post["parameters"][0]
        assert "example" not in doc["definitions"]["ServiceInput"]
    else:
        assert "example" not in post["requestBody"]["content"]["application/json"]


def test_example_is_copied_not_shared():
    example = json.loads(json.dumps(TENSOR_EXAMPLE))
    doc = build_swagger("3", input_schema=TENSOR_INPUT, output_schema=None, params_schema=None,
                        example=example)
    doc["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["example"][
        "input_data"
    ].append([0, 0, 0, 0])
    assert example == TENSOR_EXAMPLE


@pytest.mark.parametrize("case", ["columns", "tensor", "named_tensors"])
def test_example_validates_against_request_schema(case):
    """In 3.1 the schemas are JSON Schema 2020-12: the example must satisfy its own schema."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = request_schema(build("3.1", case))
    jsonschema.Draft202012Validator(schema).validate(CASES[case]["example"])


def test_request_schema_rejects_bad_bodies():
    jsonschema = pytest.importorskip("jsonschema")
    check = jsonschema.Draft202012Validator

    def ok(case, body):
        return check(request_schema(build("3.1", case))).is_valid(body)

    assert not ok("columns", {"params": {}})  # no input_data
    assert not ok("columns", {"input_data": {"columns": ["nope"], "data": [[1]]}})
    assert not ok("columns", {"input_data": {"data": [[1.0]]}})  # columns are named
    assert not ok("tensor", {"input_data": [[1.0, 2.0, 3.0]]})  # 3 is not 4
    assert not ok("tensor", {"input_data": [1.0, 2.0, 3.0, 4.0]})  # rank 1, not 2
    assert ok("tensor", {"input_data": [[1, 2, 3, 4]]})
    assert not ok("named_tensors", {"input_data": {"tokens": [list(range(12))]}})  # no mask
    assert not ok("named_tensors", {"input_data": {"tokens": [[0.5] * 12], "mask": [[1] * 12]}})
    assert not ok("named_tensors", {"input_data": {"tokens": [[1] * 12], "mask": [[1]]}})
    assert not ok("columns", {"input_data": {"columns": ["d"], "data": [[1.0]]},
                              "params": {"max_tokens": "many"}})
    example = CASES["columns"]["example"]["input_data"]
    assert ok("columns", {"input_data": example})
    assert not ok("columns", {"input_data": dict(example, data=[])})  # no rows
    short = [example["data"][0][:-1]]
    assert not ok("columns", {"input_data": dict(example, data=short)})  # a row too narrow
    wide = [example["data"][0] + [1.0, "x", None]]
    assert not ok("columns", {"input_data": dict(example, data=wide)})  # wider than any columns
    assert ok("no_signature", {"input_data": [[1, 2]]})
    assert ok("no_signature", {"input_data": {"a": [1]}, "params": {"x": 1}})
    assert not ok("no_signature", {"data": [[1, 2]]})


# -- request schema by signature kind --------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_body_requires_input_data_only(version, case):
    body = request_schema(build(version, case))
    assert body["type"] == "object"
    assert body["required"] == ["input_data"]
    assert set(body["properties"]) == {"input_data", "params"}
    assert body["properties"]["params"]["type"] == "object"


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_column_signature_is_split_orientation(version):
    doc = build(version, "columns")
    data = input_data_schema(doc)
    assert data["type"] == "object"
    assert data["required"] == ["columns", "data"]  # index is optional
    props = data["properties"]
    assert props["columns"]["type"] == "array"
    assert props["columns"]["items"]["type"] == "string"
    assert props["columns"]["items"]["enum"] == COLUMN_NAMES
    assert props["columns"]["minItems"] == len(REQUIRED_COLUMNS)
    assert props["columns"]["maxItems"] == len(COLUMN_NAMES)
    assert props["index"] == {"type": "array", "items": {"type": "integer"}}
    assert props["data"]["type"] == "array"
    assert props["data"]["minItems"] == 1  # the server rejects an empty 'data'
    assert props["data"]["items"]["type"] == "array"
    # a row holds one value per name in 'columns': as wide as the widest and narrowest 'columns'
    assert props["data"]["items"]["minItems"] == len(REQUIRED_COLUMNS)
    assert props["data"]["items"]["maxItems"] == len(COLUMN_NAMES)
    row_item = props["data"]["items"]["items"]
    if version == "2":
        assert "type" not in row_item and "anyOf" not in row_item  # Swagger 2 has no anyOf
    else:
        assert len(row_item["anyOf"]) == len(COLUMN_NAMES)  # every column type is distinct


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_column_types_and_required(version):
    record = schemas_of(build(version, "columns"))["InputRecord"]
    assert record["type"] == "object"
    assert record["required"] == REQUIRED_COLUMNS
    props = record["properties"]
    assert list(props) == COLUMN_NAMES
    expected = {
        "d": ("number", "double"),
        "f": ("number", "float"),
        "l": ("integer", "int64"),
        "i": ("integer", "int32"),
        "b": ("boolean", None),
        "s": ("string", None),
        "bin": ("string", "byte"),
        "ts": ("string", "date-time"),
        "opt_num": ("number", "double"),
        "opt_str": ("string", None),
    }
    for name, (type_, fmt) in expected.items():
        assert type_ in types_of(props[name]), name
        assert props[name].get("format") == fmt, name
    assert props["arr"] == {"type": "array", "items": {"type": "integer", "format": "int64"}}
    assert props["obj"]["type"] == "object"
    assert props["obj"]["required"] == ["x"]
    assert props["obj"]["properties"]["x"] == {"type": "string"}
    assert props["obj"]["properties"]["y"]["type"] == "number"
    assert props["map"]["type"] == "object"
    assert props["map"]["additionalProperties"]["type"] == "array"
    assert props["map"]["additionalProperties"]["items"]["type"] == "number"
    assert "type" not in props["any"]
    for name in REQUIRED_COLUMNS:
        assert not is_nullable(props[name], version), name
    for name in ("opt_num", "opt_str"):
        assert is_nullable(props[name], version), name


def test_nullable_spelling_per_version():
    def opt(version):
        return schemas_of(build(version, "columns"))["InputRecord"]["properties"]["opt_num"]

    assert opt("2") == {"type": "number", "format": "double", "x-nullable": True}
    assert opt("3") == {"type": "number", "format": "double", "nullable": True}
    assert opt("3.1") == {"type": ["number", "null"], "format": "double"}
    assert "nullable" not in json.dumps(build("3.1", "columns"))


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_tensor_signature_is_nested_arrays(version):
    data = input_data_schema(build(version, "tensor"))
    assert data["type"] == "array"
    assert "minItems" not in data  # -1: any batch size
    inner = data["items"]
    assert inner["type"] == "array"
    assert inner["minItems"] == inner["maxItems"] == 4
    assert inner["items"] == {"type": "number", "format": "float"}


@pytest.mark.parametrize(
    "dtype, expected",
    [
        ("float64", {"type": "number", "format": "double"}),
        ("float32", {"type": "number", "format": "float"}),
        ("float16", {"type": "number", "format": "float16"}),
        ("int64", {"type": "integer", "format": "int64"}),
        ("int32", {"type": "integer", "format": "int32"}),
        ("uint8", {"type": "integer", "format": "uint8"}),
        ("bool", {"type": "boolean"}),
        ("str", {"type": "string"}),
    ],
)
def test_tensor_dtypes(dtype, expected):
    schema = Schema([TensorSpec(np.dtype(dtype), (-1, 2, 3))])
    for version in SUPPORTED_VERSIONS:
        data = build_swagger(version, input_schema=schema, output_schema=None, params_schema=None,
                             example=None)
        data = input_data_schema(data)
        assert data["items"]["minItems"] == 2
        assert data["items"]["items"]["minItems"] == 3
        assert data["items"]["items"]["items"] == expected


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_named_tensors_are_required_properties(version):
    data = input_data_schema(build(version, "named_tensors"))
    assert data["type"] == "object"
    assert data["required"] == ["tokens", "mask"]
    assert set(data["properties"]) == {"tokens", "mask"}
    for name in ("tokens", "mask"):
        tensor = data["properties"][name]
        assert tensor["type"] == "array"
        assert tensor["items"]["type"] == "array"
        assert tensor["items"]["minItems"] == tensor["items"]["maxItems"] == 12
        assert tensor["items"]["items"] == {"type": "integer", "format": "int64"}


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_no_signature_is_free_form(version):
    doc = build(version, "no_signature")
    data = input_data_schema(doc)
    assert "type" not in data and "properties" not in data
    assert "InputRecord" not in schemas_of(doc)
    assert "type" not in schemas_of(doc)["ServiceOutput"]
    params = request_schema(doc)["properties"]["params"]
    assert params["type"] == "object" and "properties" not in params


# -- params ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_params_schema(version):
    params = request_schema(build(version, "columns"))["properties"]["params"]
    assert params["type"] == "object"
    assert "required" not in params  # every param has a default
    props = params["properties"]
    assert list(props) == [p.name for p in PARAMS.params]
    assert props["temperature"] == {"type": "number", "format": "double", "default": 0.7}
    assert props["max_tokens"] == {"type": "integer", "format": "int64", "default": 16}
    assert props["greedy"] == {"type": "boolean", "default": False}
    assert props["prefix"] == {"type": "string", "default": "hi"}
    assert props["stop_ids"] == {
        "type": "array",
        "items": {"type": "integer", "format": "int64"},
        "default": [1, 2],
    }
    assert props["as_of"]["type"] == "string"
    assert props["as_of"]["default"] == "2024-01-02T03:04:05"
    assert props["nothing"] == {"type": "string"}


def test_param_defaults_are_json():
    params = ParamSchema(
        [
            ParamSpec("when", "datetime", np.datetime64("2024-01-02T00:00:00")),
            ParamSpec("opts", Object([Property("k", "long")]), {"k": np.int64(3)}),
            ParamSpec("scale", "float", np.float32(0.5)),
            ParamSpec("ids", "integer", np.array([1, 2], dtype=np.int32), (-1,)),
        ]
    )
    for version in SUPPORTED_VERSIONS:
        doc = build_swagger(version, input_schema=None, output_schema=None, params_schema=params,
                            example=None)
        json.dumps(doc, allow_nan=False)
        props = request_schema(doc)["properties"]["params"]["properties"]
        # MLflow stores datetime defaults naive: not RFC 3339, so the default stays and the
        # date-time format goes (else the document fails validation).
        assert props["when"]["default"] == "2024-01-02T00:00:00"
        assert props["when"]["type"] == "string" and "format" not in props["when"]
        assert props["opts"]["type"] == "object"
        assert props["opts"]["required"] == ["k"]
        assert props["opts"]["default"] == {"k": 3}
        assert props["scale"]["default"] == 0.5
        assert props["ids"]["default"] == [1, 2]
        if VALIDATORS is not None:
            assert [str(e) for e in VALIDATORS[version](doc).iter_errors()] == []


# -- responses from the output schema --------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_output_schemas(version):
    out = schemas_of(build(version, "columns"))["ServiceOutput"]
    assert out["type"] == "array"
    assert out["items"]["type"] == "object"
    assert out["items"]["required"] == ["score", "label"]
    assert "number" in types_of(out["items"]["properties"]["score"])
    assert is_nullable(out["items"]["properties"]["score"], version)  # NaN -> null
    assert out["items"]["properties"]["label"] == {"type": "string"}

    out = schemas_of(build(version, "tensor"))["ServiceOutput"]
    assert out == {"type": "array", "items": {"type": "integer", "format": "int64"}}

    out = schemas_of(build(version, "named_tensors"))["ServiceOutput"]
    assert out["type"] == "object" and out["required"] == ["logits"]
    logits = out["properties"]["logits"]
    assert logits["items"]["minItems"] == 2
    assert is_nullable(logits["items"]["items"], version)


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_single_column_outputs(version):
    unnamed = Schema([ColSpec("long")])
    out = schemas_of(build_swagger(version, input_schema=None, output_schema=unnamed,
                                   params_schema=None, example=None))["ServiceOutput"]
    assert out == {"type": "array", "items": {"type": "integer", "format": "int64"}}

    named = Schema([ColSpec("string", "label")])
    out = schemas_of(build_swagger(version, input_schema=None, output_schema=named,
                                   params_schema=None, example=None))["ServiceOutput"]
    if version == "2":
        assert "type" not in out
    else:  # a list (ndarray) or records (DataFrame)
        assert [o["items"]["type"] for o in out["anyOf"]] == ["string", "object"]


# -- other signatures, checked against the official schemas ----------------------------------------

SCALARS = ["boolean", "integer", "long", "float", "double", "string", "binary", "datetime"]
_names = st.lists(
    st.text(alphabet="abcdefgh_", min_size=1, max_size=6), min_size=1, max_size=6, unique=True
)


@needs_validator
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=_names,
    types=st.lists(st.sampled_from(SCALARS), min_size=6, max_size=6),
    required=st.lists(st.booleans(), min_size=6, max_size=6),
    version=st.sampled_from(SUPPORTED_VERSIONS),
    unnamed=st.booleans(),
)
def test_random_column_signatures_are_valid(names, types, required, version, unnamed):
    specs = [
        ColSpec(types[i], None if unnamed else name, required=required[i] or unnamed)
        for i, name in enumerate(names)
    ]
    schema = Schema(specs)
    doc = build_swagger(version, input_schema=schema, output_schema=schema, params_schema=None,
                        example=None)
    assert [str(e) for e in VALIDATORS[version](doc).iter_errors()] == []
    data = input_data_schema(doc)
    assert data["required"] == (["data"] if unnamed else ["columns", "data"])
    if not unnamed:
        record = schemas_of(doc)["InputRecord"]
        assert record.get("required", []) == [n for n, r in zip(names, required) if r]


# -- runs inside models' environments --------------------------------------------------------------


def test_module_imports_only_stdlib_and_mlflow_types():
    tree = ast.parse(Path(swagger.__file__).read_text())
    allowed_prefixes = ("mlflow.types", "mlflow_deploy.scoring.errors")
    stdlib = getattr(sys, "stdlib_module_names", None)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module]
        else:
            continue
        for module in modules:
            if module.startswith(allowed_prefixes):
                continue
            if stdlib is not None:
                assert module.split(".")[0] in stdlib, module


def test_module_parses_as_python_38():
    source = Path(swagger.__file__).read_text()
    ast.parse(source, feature_version=(3, 8))
    tree = ast.parse(source)
    for node in ast.walk(tree):
        assert not isinstance(node, ast.BinOp) or not isinstance(node.op, ast.BitOr) or not (
            isinstance(node.left, ast.Dict) or isinstance(node.right, ast.Dict)
        )
        if isinstance(node, ast.FormattedValue):
            pytest.fail("no f-strings needed here")
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            assert node.value.id not in ("dict", "list", "tuple", "type"), "PEP 585 generics"
