"""The document served at ``GET /swagger.json?version=2|3|3.1``, as Azure's server serves it.

azureml-inference-server-http builds it from a scoring script's inference-schema decorators; we
build it from the MLflow model's signature: the ``POST /score`` request body (``input_data`` in the
form the signature expects, optional ``params``), the 200 response from the output schema, the
error responses, ``GET /`` and ``GET /swagger.json`` itself.

Runs inside the model's own environment (Python 3.8-3.13, mlflow 2.x and 3.x), so it imports only
the standard library and ``mlflow.types``, and looks up every newer MLflow type defensively.
"""
import base64
import copy
import datetime
import json
import re
from typing import Any, Dict, List, Optional

from mlflow_deploy.scoring.errors import NotFound

try:  # mlflow >= 2.10 or so; absent in older releases
    from mlflow.types.schema import Array as _Array
except ImportError:  # pragma: no cover - old mlflow
    _Array = None
try:
    from mlflow.types.schema import Object as _Object
except ImportError:  # pragma: no cover - old mlflow
    _Object = None
try:
    from mlflow.types.schema import Map as _Map
except ImportError:  # pragma: no cover - old mlflow
    _Map = None
try:
    from mlflow.types.schema import AnyType as _AnyType
except ImportError:  # pragma: no cover - old mlflow
    _AnyType = None
try:
    from mlflow.types.schema import SparkMLVector as _SparkMLVector
except ImportError:  # pragma: no cover - old mlflow
    _SparkMLVector = None
try:
    from mlflow.types.schema import TensorSpec as _TensorSpec
except ImportError:  # pragma: no cover - every mlflow 2.x/3.x has it
    _TensorSpec = None

SUPPORTED_VERSIONS = ("2", "3", "3.1")
_OPENAPI_VERSIONS = {"3": "3.0.3", "3.1": "3.1.0"}
_DOC_VERSION = "1.0"

# MLflow DataType name -> JSON schema (type and format), as MLflow's own JSON conventions send them.
_SCALARS = {
    "boolean": {"type": "boolean"},
    "integer": {"type": "integer", "format": "int32"},
    "long": {"type": "integer", "format": "int64"},
    "float": {"type": "number", "format": "float"},
    "double": {"type": "number", "format": "double"},
    "string": {"type": "string"},
    "binary": {"type": "string", "format": "byte", "description": "base64-encoded bytes"},
    "datetime": {"type": "string", "format": "date-time", "description": "ISO 8601 timestamp"},
}

_NAN_NOTE = "NaN and infinities are returned as null."


def build_swagger(
    version: str,
    *,
    input_schema: Any,
    output_schema: Any,
    params_schema: Any,
    example: Optional[Dict[str, Any]],
    title: str = "mlflow-deploy"
) -> Dict[str, Any]:
    """The Swagger 2.0 / OpenAPI 3.0 / OpenAPI 3.1 document for the model with this signature.

    ``input_schema``/``output_schema`` are ``mlflow.types.Schema`` or None, ``params_schema`` a
    ``mlflow.types.ParamSchema`` or None, ``example`` the Azure request body to show (or None).
    Raises ``NotFound`` with Azure's text for any version outside ``SUPPORTED_VERSIONS``.
    """
    version = version if isinstance(version, str) else str(version)
    if version not in SUPPORTED_VERSIONS:
        raise NotFound(
            "Swagger version [" + version + "] is not valid. Supported versions: [2, 3, 3.1]."
        )
    builder = _Builder(version)
    schemas = {
        "ServiceInput": builder.request_body(input_schema, params_schema),
        "ServiceOutput": builder.output(output_schema),
        "ErrorResponse": {
            "type": "object",
            "required": ["message"],
            "properties": {"message": {"type": "string", "description": "What went wrong."}},
        },
    }
    record = builder.input_record(input_schema)
    if record is not None:
        schemas["InputRecord"] = record
    if example is not None:
        example = copy.deepcopy(example)
    info = {
        "title": title,
        "description": "API specification for the scoring server of an MLflow model "
        "(Azure ML online endpoint contract).",
        "version": _DOC_VERSION,
    }
    if version == "2":
        return builder.swagger2(info, schemas, example)
    return builder.openapi3(info, schemas, example)


class _Builder:
    def __init__(self, version: str):
        self.version = version
        self.ref_root = "#/definitions/" if version == "2" else "#/components/schemas/"

    # -- schema pieces -----------------------------------------------------------------------------

    def ref(self, name: str) -> Dict[str, Any]:
        return {"$ref": self.ref_root + name}

    def nullable(self, schema: Dict[str, Any]) -> Dict[str, Any]:
        """The schema, also accepting null: x-nullable (2), nullable (3.0), type list (3.1)."""
        schema = dict(schema)
        if "type" not in schema:
            return schema  # typeless schemas accept null already
        if self.version == "2":
            schema["x-nullable"] = True
        elif self.version == "3":
            schema["nullable"] = True
        else:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if "null" not in types:
                types = types + ["null"]
            schema["type"] = types
        return schema

    def any_of(self, schemas: List[Dict[str, Any]], description: str) -> Dict[str, Any]:
        """One of several schemas; Swagger 2 has no anyOf, so there it is free-form."""
        unique = _dedupe(schemas)
        if len(unique) == 1:
            return unique[0]
        if self.version == "2":
            return {"description": description}
        return {"anyOf": unique, "description": description}

    def dtype(self, dtype: Any) -> Dict[str, Any]:
        """A ColSpec / Property / ParamSpec type (DataType, Array, Object, Map, AnyType)."""
        if _Array is not None and isinstance(dtype, _Array):
            return {"type": "array", "items": self.dtype(dtype.dtype)}
        if _Object is not None and isinstance(dtype, _Object):
            properties = {}  # type: Dict[str, Any]
            required = []
            for prop in dtype.properties:
                properties[prop.name] = self.dtype(prop.dtype)
                if _is_required(prop):
                    required.append(prop.name)
            schema = {"type": "object", "properties": properties}  # type: Dict[str, Any]
            if required:
                schema["required"] = required
            return schema
        if _Map is not None and isinstance(dtype, _Map):
            return {"type": "object", "additionalProperties": self.dtype(dtype.value_type)}
        if _AnyType is not None and isinstance(dtype, _AnyType):
            return {"description": "Any JSON value."}
        if _SparkMLVector is not None and isinstance(dtype, _SparkMLVector):
            return {"type": "array", "items": {"type": "number", "format": "double"}}
        name = getattr(dtype, "name", dtype)
        if isinstance(name, str) and name in _SCALARS:
            return dict(_SCALARS[name])
        return {"description": "Any JSON value."}

    def numpy_dtype(self, dtype: Any) -> Dict[str, Any]:
        """A TensorSpec's numpy dtype, read by duck typing (no numpy import)."""
        kind = getattr(dtype, "kind", None)
        name = str(getattr(dtype, "name", dtype))
        if kind == "b":
            return {"type": "boolean"}
        if kind in ("i", "u"):
            return {"type": "integer", "format": name}
        if kind == "f":
            fmt = {"float32": "float", "float64": "double"}.get(name, name)
            return {"type": "number", "format": fmt}
        if kind == "U":
            return {"type": "string"}
        if kind == "S":
            return {"type": "string", "format": "byte", "description": "base64-encoded bytes"}
        if kind == "M":
            return {"type": "string", "format": "date-time"}
        return {"description": "Any JSON value (numpy dtype " + name + ")."}

    def tensor(self, spec: Any, output: bool = False) -> Dict[str, Any]:
        """Nested arrays to the tensor's rank; fixed dimensions fix the array length."""
        schema = self.numpy_dtype(spec.type)
        if output and schema.get("type") == "number":
            schema = self.nullable(schema)
            schema["description"] = _NAN_NOTE
        shape = tuple(spec.shape) if spec.shape is not None else ()
        for dim in reversed(shape):
            schema = {"type": "array", "items": schema}
            if isinstance(dim, int) and dim >= 0:
                schema["minItems"] = dim
                schema["maxItems"] = dim
        return schema

    def column(self, spec: Any, output: bool = False) -> Dict[str, Any]:
        schema = self.dtype(spec.type)
        if output and schema.get("type") == "number":
            schema = self.nullable(schema)
            schema["description"] = _NAN_NOTE
        elif not output and not _is_required(spec):
            schema = self.nullable(schema)
        return schema

    def record(self, specs: List[Any], output: bool = False) -> Dict[str, Any]:
        properties = {}  # type: Dict[str, Any]
        required = []
        for spec in specs:
            properties[spec.name] = self.column(spec, output)
            if _is_required(spec):
                required.append(spec.name)
        schema = {"type": "object", "properties": properties}  # type: Dict[str, Any]
        if required:
            schema["required"] = required
        return schema

    # -- request ---------------------------------------------------------------------------------

    def input_data(self, input_schema: Any) -> Dict[str, Any]:
        kind = _signature_kind(input_schema)
        if kind == "none":
            return {
                "description": "The model has no signature: a list is read as an array, an object "
                "with columns/index/data as a DataFrame, any other object as a dict of arrays."
            }
        specs = list(input_schema.inputs)
        if kind == "tensor":
            schema = self.tensor(specs[0])
            schema["description"] = "A tensor of shape " + _shape_text(specs[0].shape) + "."
            return schema
        if kind == "named_tensors":
            properties = {}  # type: Dict[str, Any]
            for spec in specs:
                properties[spec.name] = self.tensor(spec)
                properties[spec.name]["description"] = (
                    "Tensor '" + spec.name + "' of shape " + _shape_text(spec.shape) + "."
                )
            return {
                "type": "object",
                "description": "One nested array per named tensor.",
                "required": [spec.name for spec in specs],
                "properties": properties,
            }
        # columns: pandas split orientation
        named = all(spec.name is not None for spec in specs)
        row_item = self.any_of(
            [self.column(spec) for spec in specs],
            "One value per column, in the order of 'columns'.",
        )
        columns = {"type": "array", "items": {"type": "string"}}  # type: Dict[str, Any]
        # the server takes a row of exactly one value per name in 'columns': the widest and
        # narrowest rows are those of the widest and narrowest 'columns'
        widest = narrowest = len(specs)
        if named:
            columns["items"]["enum"] = [spec.name for spec in specs]
            columns["uniqueItems"] = True
            optional = [spec.name for spec in specs if not _is_required(spec)]
            columns["description"] = "The column names, in any order; extra columns are dropped."
            if optional:
                columns["description"] += " Optional columns: " + ", ".join(optional) + "."
            narrowest = len(specs) - len(optional)
            columns["minItems"] = narrowest
            columns["maxItems"] = widest
        row = {
            "type": "array",
            "description": "One row: a value for each name in 'columns', in that order.",
            "minItems": narrowest,
            "maxItems": widest,
            "items": row_item,
        }  # type: Dict[str, Any]
        schema = {
            "type": "object",
            "description": "A DataFrame in pandas split orientation.",
            "required": ["columns", "data"] if named else ["data"],
            "properties": {
                "columns": columns,
                "index": {"type": "array", "items": {"type": "integer"}},
                "data": {"type": "array", "minItems": 1, "items": row},
            },
        }  # type: Dict[str, Any]
        return schema

    def input_record(self, input_schema: Any) -> Optional[Dict[str, Any]]:
        """For a named column signature: one row as an object (column types, required columns)."""
        if _signature_kind(input_schema) != "columns":
            return None
        specs = list(input_schema.inputs)
        if not all(spec.name is not None for spec in specs):
            return None
        schema = self.record(specs)
        schema["description"] = (
            "One row of input_data, column by column. Columns not in 'required' may be left out "
            "of 'columns'."
        )
        return schema

    def params(self, params_schema: Any) -> Dict[str, Any]:
        if params_schema is None or not list(getattr(params_schema, "params", None) or []):
            return {
                "type": "object",
                "description": "The model declares no params.",
            }
        properties = {}  # type: Dict[str, Any]
        for spec in params_schema.params:
            schema = self.dtype(spec.dtype)
            shape = getattr(spec, "shape", None)
            if shape is not None and tuple(shape) == (-1,):
                schema = {"type": "array", "items": schema}
            default = _jsonable(getattr(spec, "default", None))
            if default is not None:
                schema["default"] = default
                _drop_naive_date_time_format(schema, default)
            properties[spec.name] = schema
        return {
            "type": "object",
            "description": "Inference params; absent ones take their defaults.",
            "properties": properties,
        }

    def request_body(self, input_schema: Any, params_schema: Any) -> Dict[str, Any]:
        return {
            "type": "object",
            "required": ["input_data"],
            "properties": {
                "input_data": self.input_data(input_schema),
                "params": self.params(params_schema),
            },
        }

    # -- response --------------------------------------------------------------------------------

    def output(self, output_schema: Any) -> Dict[str, Any]:
        kind = _signature_kind(output_schema)
        if kind == "none":
            return {"description": "The model's prediction. " + _NAN_NOTE}
        specs = list(output_schema.inputs)
        if kind == "tensor":
            return self.tensor(specs[0], output=True)
        if kind == "named_tensors":
            return {
                "type": "object",
                "required": [spec.name for spec in specs],
                "properties": {spec.name: self.tensor(spec, output=True) for spec in specs},
            }
        named = all(spec.name is not None for spec in specs)
        if not named:
            if len(specs) == 1:
                return {"type": "array", "items": self.column(specs[0], output=True)}
            return {
                "type": "array",
                "items": {
                    "type": "array",
                    "items": self.any_of(
                        [self.column(spec, output=True) for spec in specs],
                        "One value per output column.",
                    ),
                },
            }
        records = {"type": "array", "items": self.record(specs, output=True)}
        if len(specs) == 1:
            # A one-column prediction comes back as a list (ndarray) or as records (DataFrame).
            return self.any_of(
                [{"type": "array", "items": self.column(specs[0], output=True)}, records],
                "A list of predictions, or a list of records.",
            )
        return records

    # -- documents -------------------------------------------------------------------------------

    def _error(self, description: str) -> Dict[str, Any]:
        if self.version == "2":
            return {"description": description, "schema": self.ref("ErrorResponse")}
        return {
            "description": description,
            "content": {"application/json": {"schema": self.ref("ErrorResponse")}},
        }

    def _score_headers(self) -> Dict[str, Any]:
        names = {
            "x-ms-request-id": "The request id: the client's x-request-id, else a new uuid4.",
            "x-request-id": "Same as x-ms-request-id.",
            "x-ms-run-function-failed": "True when scoring failed, else False.",
        }
        if self.version == "2":
            return {k: {"type": "string", "description": v} for k, v in names.items()}
        return {k: {"description": v, "schema": {"type": "string"}} for k, v in names.items()}

    def _score_errors(self) -> Dict[str, Any]:
        return {
            "400": self._error("The input does not match the model's signature, or the model "
                               "rejected it."),
            "413": self._error("The request body is over the size limit."),
            "415": self._error("Content-Type is not application/json, or the body has a "
                               "Content-Encoding."),
            "431": self._error("x-request-id, x-ms-request-id or x-ms-client-request-id is "
                               "longer than 100 characters."),
            "500": self._error("The model failed; the body carries the request id."),
            "504": self._error("Scoring ran past the deployment's request timeout."),
        }

    def swagger2(self, info: Dict[str, Any], schemas: Dict[str, Any],
                 example: Any) -> Dict[str, Any]:
        body = {
            "name": "serviceInputPayload",
            "in": "body",
            "required": True,
            "description": "The input payload for the model.",
            "schema": self.ref("ServiceInput"),
        }  # type: Dict[str, Any]
        if example is not None:
            body["x-examples"] = {"application/json": example}
            schemas["ServiceInput"]["example"] = example
        ok = {
            "description": "The model's prediction.",
            "schema": self.ref("ServiceOutput"),
            "headers": self._score_headers(),
        }
        score_responses = {"200": ok}
        score_responses.update(self._score_errors())
        return {
            "swagger": "2.0",
            "info": info,
            "consumes": ["application/json"],
            "produces": ["application/json"],
            "paths": {
                "/": {
                    "get": {
                        "operationId": "ServiceHealthCheck",
                        "description": "Liveness: 'Healthy' once the model is loaded.",
                        "produces": ["text/plain"],
                        "responses": {
                            "200": {
                                "description": "The model is loaded.",
                                "schema": {"type": "string"},
                                "examples": {"text/plain": "Healthy"},
                            },
                            "503": {"description": "The model is still loading."},
                        },
                    }
                },
                "/score": {
                    "post": {
                        "operationId": "RunMLService",
                        "description": "Run the model and return its prediction.",
                        "consumes": ["application/json"],
                        "produces": ["application/json"],
                        "parameters": [body],
                        "responses": score_responses,
                    }
                },
                "/swagger.json": {
                    "get": {
                        "operationId": "GetSwaggerSpec",
                        "description": "This document.",
                        "produces": ["application/json"],
                        "parameters": [
                            {
                                "name": "version",
                                "in": "query",
                                "required": False,
                                "type": "string",
                                "enum": list(SUPPORTED_VERSIONS),
                            }
                        ],
                        "responses": {
                            "200": {"description": "The document.", "schema": {"type": "object"}},
                            "400": self._error("The version is not a short plain token."),
                            "404": self._error("Unsupported version."),
                        },
                    }
                },
            },
            "definitions": schemas,
        }

    def openapi3(self, info: Dict[str, Any], schemas: Dict[str, Any],
                 example: Any) -> Dict[str, Any]:
        media = {"schema": self.ref("ServiceInput")}  # type: Dict[str, Any]
        if example is not None:
            media["example"] = example
        ok = {
            "description": "The model's prediction.",
            "headers": self._score_headers(),
            "content": {"application/json": {"schema": self.ref("ServiceOutput")}},
        }
        score_responses = {"200": ok}
        score_responses.update(self._score_errors())
        return {
            "openapi": _OPENAPI_VERSIONS[self.version],
            "info": info,
            "paths": {
                "/": {
                    "get": {
                        "operationId": "ServiceHealthCheck",
                        "description": "Liveness: 'Healthy' once the model is loaded.",
                        "responses": {
                            "200": {
                                "description": "The model is loaded.",
                                "content": {
                                    "text/plain": {
                                        "schema": {"type": "string"},
                                        "example": "Healthy",
                                    }
                                },
                            },
                            "503": {"description": "The model is still loading."},
                        },
                    }
                },
                "/score": {
                    "post": {
                        "operationId": "RunMLService",
                        "description": "Run the model and return its prediction.",
                        "requestBody": {
                            "description": "The input payload for the model.",
                            "required": True,
                            "content": {"application/json": media},
                        },
                        "responses": score_responses,
                    }
                },
                "/swagger.json": {
                    "get": {
                        "operationId": "GetSwaggerSpec",
                        "description": "This document.",
                        "parameters": [
                            {
                                "name": "version",
                                "in": "query",
                                "required": False,
                                "schema": {"type": "string", "enum": list(SUPPORTED_VERSIONS)},
                            }
                        ],
                        "responses": {
                            "200": {
                                "description": "The document.",
                                "content": {"application/json": {"schema": {"type": "object"}}},
                            },
                            "400": self._error("The version is not a short plain token."),
                            "404": self._error("Unsupported version."),
                        },
                    }
                },
            },
            "components": {"schemas": schemas},
        }


def _signature_kind(schema: Any) -> str:
    """none | tensor (one unnamed TensorSpec) | named_tensors | columns."""
    if schema is None or not list(getattr(schema, "inputs", None) or []):
        return "none"
    specs = list(schema.inputs)
    is_tensor = schema.is_tensor_spec() if hasattr(schema, "is_tensor_spec") else (
        _TensorSpec is not None and isinstance(specs[0], _TensorSpec)
    )
    if not is_tensor:
        return "columns"
    if len(specs) == 1 and specs[0].name is None:
        return "tensor"
    return "named_tensors"


def _is_required(spec: Any) -> bool:
    """ColSpec/Property.required (newer mlflow), or not .optional (mlflow 2.6-2.9), else True."""
    required = getattr(spec, "required", None)
    if required is not None:
        return bool(required)
    return not bool(getattr(spec, "optional", False))


def _shape_text(shape: Any) -> str:
    dims = [str(d) for d in (shape or ())]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


_RFC3339_OFFSET = re.compile(r"(Z|z|[+-][0-9]{2}:[0-9]{2})$")


def _drop_naive_date_time_format(schema: Dict[str, Any], default: Any) -> None:
    """A naive datetime default is not an RFC 3339 date-time: keep the default, drop the format."""
    target = schema["items"] if schema.get("type") == "array" else schema
    values = default if isinstance(default, list) else [default]
    if target.get("format") == "date-time" and not all(
        isinstance(v, str) and _RFC3339_OFFSET.search(v) for v in values
    ):
        del target["format"]
        target["description"] = "ISO 8601 timestamp (time zone optional)"


def _dedupe(schemas: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    seen = set()
    out = []
    for schema in schemas:
        key = json.dumps(schema, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(schema)
    return out


def _jsonable(value: Any) -> Any:
    """A param default as JSON: numpy values via tolist(), bytes as base64, datetimes ISO 8601."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):  # pandas / numpy timestamps
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _jsonable(value.tolist())
    return str(value)
