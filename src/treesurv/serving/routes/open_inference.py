"""The Open Inference Protocol (KServe/MLServer/Triton "V2") over the same model.

One input tensor per feature, as MLServer's pandas codec sends a table: BYTES for
the categorical features, FP64 (or another numeric type) for the numbers, shape [N]
or [N, 1]. A missing EMF (AMF species) is a JSON null, a left-out EMF tensor, or NaN
in the tensor; NaN anywhere else is refused. Outputs: `death_probability` and
`survival_probability` (FP64) and `predicted_event` (INT64), shape [N].

The body is read as the protocol defines it whatever its `Content-Type` says
(`tritonclient` sends none). Triton's binary tensor data extension is supported
(`treesurv.serving.binary_tensors`): inputs sent as raw bytes after the JSON object,
outputs answered that way when asked. Errors follow the protocol: a non-200 status
with `{"error": "..."}`; the message names the tensor, the row, the value and what
is allowed, from the same schema and rules as the v1 API.

Two or more rows that are all valid for the full model are checked as columns
(`treesurv.core.instances.checked_columns`) and scored as columns, with no object
per row; any other request is checked row by row by the v1 API's `Instance` model,
which names every problem.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import orjson
from fastapi import APIRouter, Request, Response
from fastapi.exception_handlers import http_exception_handler
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from treesurv import __version__
from treesurv.core import schema
from treesurv.core.encoding import Coded
from treesurv.core.errors import InputError
from treesurv.core.instances import ColumnRows, checked_columns
from treesurv.serving import binary_tensors as binary
from treesurv.serving import errors
from treesurv.serving.deps import model_state, settings_of
from treesurv.serving.http import JSON, json_response
from treesurv.serving.model_choice import FULL
from treesurv.serving.schemas import ErrorResponse, Instance
from treesurv.serving.scoring import THREADPOOL_MIN_BYTES, account, score
from treesurv.serving.state import Served

PLATFORM = "treesurv-compiled"
NUMERIC_TYPES = frozenset(
    {
        "FP64",
        "FP32",
        "FP16",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
    }
)
OUTPUTS = {
    "death_probability": "FP64",
    "survival_probability": "FP64",
    "predicted_event": "INT64",
}
EXTENSIONS = [binary.EXTENSION]
# Parameters of extensions this server does not implement: refused, never ignored.
SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
MAX_LISTED_ROWS = 5  # rows named in one error message


def datatype(feature: schema.Feature) -> str:
    return "BYTES" if feature.kind == "categorical" else "FP64"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class RequestInput(_Open):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(
        None, description="The values, row major; absent when sent as binary (binary_data_size)."
    )


class RequestOutput(_Open):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(_Open):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(..., min_length=1)
    outputs: list[RequestOutput] | None = None


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[ResponseOutput]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ProtocolError(InputError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def error_response(message: str, status: int = 400) -> Response:
    return json_response({"error": message}, status)


def _under_v2(path: str) -> bool:
    return path == router.prefix or path.startswith(router.prefix + "/")


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """HTTP errors raised before an endpoint runs (an unknown path, a wrong method):
    the protocol's `{"error": ...}` under /v2, FastAPI's usual answer elsewhere. The
    path decides, not the route: an unknown path has none."""
    assert isinstance(exc, StarletteHTTPException)
    if not _under_v2(request.url.path):
        return await http_exception_handler(request, exc)
    message = str(exc.detail)
    if exc.status_code == 404 and request.scope.get("route") is None:
        message = (
            f"no such path {request.url.path!r}; the protocol's paths are /v2, "
            "/v2/health/live, /v2/health/ready and /v2/models/{name}[/versions/{version}]"
            "[/ready | /infer]"
        )
    return json_response({"error": message}, exc.status_code)


class ErrorBody(BaseModel):
    """The protocol's error answer."""

    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Invalid request: {'error': message}"},
    404: {"model": ErrorBody, "description": "Unknown model or version"},
    503: {"model": ErrorBody, "description": "No verified model loaded"},
}
# The body limit is enforced before the protocol sees the request (service error format).
INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The outputs; with binary outputs asked for (binary tensor data "
        "extension), the JSON object followed by their raw data",
        "content": {binary.MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            binary.HEADER: {
                "description": "Length of the JSON object (only with binary outputs)",
                "schema": {"type": "integer"},
            }
        },
    },
    **ERRORS,
    413: {"model": ErrorResponse, "description": "Request body above the size limit"},
}
router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])


# ------------------------------------------------------------------ the request


def _inline(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON Schema with its definitions written in place (the document's
    components hold only the models `create_app` adds)."""
    doc = model.model_json_schema()
    defs = doc.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(doc)


def _example() -> dict[str, Any]:
    return {
        "inputs": [
            {"name": f.name, "shape": [1], "datatype": datatype(f), "data": [f.example]}
            for f in schema.FEATURES
        ]
    }


INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An inference request. The body is read as JSON whatever the "
        f"Content-Type says; with the {binary.HEADER} header, that many bytes of JSON "
        "are followed by the binary data of the inputs that give binary_data_size "
        "(Triton's binary tensor data extension).",
        "content": {JSON: {"schema": _inline(InferenceRequest), "example": _example()}},
    }
}


def parse_request(body: bytes, framed: bool = False) -> InferenceRequest:
    """The JSON part of an infer request, validated; ProtocolError says what is wrong
    (`framed`: the request said where its JSON ends)."""
    try:
        return InferenceRequest.model_validate_json(body)
    except ValidationError as exc:
        problems = exc.errors(include_url=False)
        items = errors.describe_all(
            [{**e, "loc": ("body", *e["loc"])} for e in problems],
            container_fields=("inputs",),
            instance_fields=schema.FEATURE_NAMES,
        )
        message = "; ".join(i["msg"] for i in items)
        if not framed and any("trailing characters" in str(e.get("ctx")) for e in problems):
            message += f" (binary data after the JSON object needs the {binary.HEADER} header)"
        raise ProtocolError(message) from None


def _flatten(data: list[Any]) -> list[Any]:
    if list not in set(map(type, data)):  # flat (JSON gives plain lists): in C
        return data
    out: list[Any] = []
    for v in data:
        out.extend(_flatten(v) if isinstance(v, list) else [v])
    return out


def _refuse_shared_memory(kind: str, name: str, parameters: dict[str, Any] | None) -> None:
    used = [p for p in SHARED_MEMORY if p in (parameters or {})]
    if used:
        raise ProtocolError(
            f"{kind} {name!r}: {used[0]} asks for the shared memory extension, which this "
            "server does not have; send the data in the request"
        )


def _checked(
    inputs: list[RequestInput], max_batch: int
) -> tuple[dict[str, RequestInput], dict[str, list[Any]]]:
    """The tensors by name, their names, datatypes, shapes and row counts checked, and
    the values of those sent as JSON, flattened and counted."""
    by_name: dict[str, RequestInput] = {}
    for tensor in inputs:
        if tensor.name in by_name:
            raise ProtocolError(f"input {tensor.name!r} is given twice")
        by_name[tensor.name] = tensor
    unknown = [n for n in by_name if n not in schema.FEATURES_BY_NAME]
    if unknown:
        raise ProtocolError(
            f"unknown input(s) {', '.join(map(repr, unknown))}; "
            f"the inputs are {', '.join(schema.FEATURE_NAMES)}"
        )
    missing = [f.name for f in schema.FEATURES if f.name not in by_name and not f.nullable]
    if missing:
        raise ProtocolError(
            f"missing input(s) {', '.join(missing)}; every feature is one tensor "
            "(EMF may be left out when every row is an AMF species)"
        )
    rows_n: int | None = None
    flat: dict[str, list[Any]] = {}
    for name, tensor in by_name.items():
        expected = datatype(schema.FEATURES_BY_NAME[name])
        if expected == "BYTES" and tensor.datatype != "BYTES":
            raise ProtocolError(f"input {name!r}: datatype must be BYTES, got {tensor.datatype!r}")
        if expected == "FP64" and tensor.datatype not in NUMERIC_TYPES:
            raise ProtocolError(
                f"input {name!r}: datatype must be FP64 (or another numeric type), "
                f"got {tensor.datatype!r}"
            )
        shape = tensor.shape
        if not shape or len(shape) > 2 or (len(shape) == 2 and shape[1] != 1) or shape[0] < 0:
            raise ProtocolError(f"input {name!r}: shape must be [N] or [N, 1], got {shape}")
        _refuse_shared_memory("input", name, tensor.parameters)
        if tensor.data is not None:
            values = _flatten(tensor.data)
            if len(values) != math.prod(shape):
                raise ProtocolError(
                    f"input {name!r}: shape {shape} needs {math.prod(shape)} values, "
                    f"got {len(values)}"
                )
            flat[name] = values
        if rows_n is None:
            rows_n = shape[0]
        elif shape[0] != rows_n:
            raise ProtocolError(
                f"input {name!r} has {shape[0]} rows but others have {rows_n}; "
                "every input needs the same number of rows"
            )
    n = rows_n or 0
    if n < 1 or n > max_batch:
        raise ProtocolError(f"got {n} rows; a request holds 1 to {max_batch} rows")
    return by_name, flat


def _binary_shares(inputs: list[RequestInput], data: bytes, framed: bool) -> dict[str, bytes]:
    """Each binary input's bytes (binary_data_size, in the order the inputs are listed)."""
    sizes: dict[str, int] = {}
    for tensor in inputs:
        size = (tensor.parameters or {}).get(binary.SIZE)
        if size is None:
            if tensor.data is None:
                raise ProtocolError(
                    f"input {tensor.name!r} has no data: give `data`, or binary_data_size "
                    f"and its bytes after the JSON object ({binary.HEADER})"
                )
            continue
        if tensor.data is not None:
            raise ProtocolError(
                f"input {tensor.name!r} gives both `data` and binary_data_size; give one"
            )
        try:
            sizes[tensor.name] = binary.data_size(size)
        except binary.BinaryDataError as exc:
            raise ProtocolError(f"input {tensor.name!r}: {exc}") from None
    if sizes and not framed:
        first = next(iter(sizes))
        raise ProtocolError(
            f"input {first!r} is sent as binary data (binary_data_size) but the request "
            f"has no {binary.HEADER} header saying where the JSON object ends"
        )
    try:
        shares = binary.split_data(data, list(sizes.values()))
    except binary.BinaryDataError as exc:
        raise ProtocolError(str(exc)) from None
    return dict(zip(sizes, shares, strict=True))


def _decoded(tensor: RequestInput, raw: bytes) -> list[Any] | np.ndarray:
    """A binary input's values: text for BYTES, float64 for the numeric types."""
    count = math.prod(tensor.shape)
    try:
        if tensor.datatype == "BYTES":
            return binary.decode_text(raw, count)
        return binary.decode_fixed(raw, tensor.datatype, count).astype(np.float64)
    except binary.BinaryDataError as exc:
        raise ProtocolError(f"input {tensor.name!r} (binary data): {exc}") from None


def _nan_rows(values: list[Any] | np.ndarray) -> np.ndarray:
    """Indices of the NaN values of a numeric column."""
    if isinstance(values, np.ndarray):
        return np.flatnonzero(np.isnan(values))
    # Only NaN differs from itself (JSON values: numbers, strings, None, lists).
    return np.asarray([i for i, v in enumerate(values) if v != v], dtype=np.intp)


def _missing_as_none(feature: schema.Feature, values: list[Any] | np.ndarray) -> list[Any]:
    """A column as Python values: in a numeric one NaN is None (missing) where the schema
    allows a missing value, and refused, naming the rows, where it does not."""
    nan = _nan_rows(values) if feature.kind != "categorical" else np.empty(0, dtype=np.intp)
    out = values.tolist() if isinstance(values, np.ndarray) else list(values)
    if nan.size and not feature.nullable:
        shown = ", ".join(str(i) for i in nan[:MAX_LISTED_ROWS])
        more = f" and {nan.size - MAX_LISTED_ROWS} more" if nan.size > MAX_LISTED_ROWS else ""
        may = ", ".join(f"{f.name} ({f.null_means})" for f in schema.FEATURES if f.nullable)
        raise ProtocolError(
            f"row[{nan[0]}].{feature.name}: NaN (a missing value) is not allowed; must be "
            f"{feature.allowed()} (input {feature.name!r}, NaN in rows {shown}{more}; "
            f"only {may} may be missing)"
        )
    for i in nan.tolist():
        out[i] = None
    return out


# A tensor's values as read: a list (None where missing), or as a binary tensor is
# read, float64 (NaN where missing) or category codes.
TensorValues = list[Any] | np.ndarray | Coded


def tensor_values(
    inputs: list[RequestInput], max_batch: int, data: bytes = b"", framed: bool = False
) -> dict[str, TensorValues]:
    """The values a V2 request carries, by input name (`data`: the binary part after
    the JSON object, `framed`: the request said where the JSON ends); ProtocolError
    says what is wrong. `as_lists` turns them into lists."""
    by_name, flat = _checked(inputs, max_batch)
    shares = _binary_shares(inputs, data, framed)
    columns: dict[str, TensorValues] = {}
    for name, tensor in by_name.items():
        feature = schema.FEATURES_BY_NAME[name]
        if name in flat:
            columns[name] = _missing_as_none(feature, flat[name])
            continue
        raw = shares[name]
        if feature.kind == "categorical":  # BYTES: `_checked` says so
            codes = binary.category_codes(raw, math.prod(tensor.shape), feature.categories)
            if codes is not None:
                columns[name] = Coded(codes)
                continue
        columns[name] = _decoded(tensor, raw)  # text (not NaN), or floats
    return columns


def as_lists(values: Mapping[str, TensorValues]) -> dict[str, list[Any]]:
    """The tensors' values as lists, None where missing; ProtocolError names the rows
    of a NaN where the feature may not be missing."""
    out: dict[str, list[Any]] = {}
    for name, column in values.items():
        feature = schema.FEATURES_BY_NAME[name]
        if isinstance(column, Coded):
            out[name] = list(map(feature.categories.__getitem__, column.codes.tolist()))
        elif isinstance(column, np.ndarray):
            out[name] = _missing_as_none(feature, column)
        else:
            out[name] = column
    return out


def rows_of(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The columns as row dicts, for `validate_rows`."""
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def full_model_tensors(columns: Mapping[str, TensorValues]) -> dict[str, Any] | None:
    """The columns checked as a whole (`treesurv.core.instances`) when a request holds
    two or more rows, all valid for the full model; else None, and `validate_rows`
    checks each row and names every problem (one row is scored by the single-row
    kernel). An input left out (EMF, when every row is an AMF species) is missing in
    every row, as in the row dicts."""
    n = len(next(iter(columns.values())))
    if n < 2:
        return None
    return checked_columns({f.name: columns.get(f.name, [None] * n) for f in schema.FEATURES})


def validate_rows(rows: list[dict[str, Any]]) -> list[Instance]:
    """Each row through the same `Instance` model as the v1 API."""
    out: list[Instance] = []
    problems: list[str] = []
    for i, row in enumerate(rows):
        try:
            out.append(Instance.model_validate(row))
        except ValidationError as exc:
            for e in exc.errors(include_url=False):
                item = errors.describe(
                    {**e, "loc": ("row", i, *e["loc"])},
                    strip=0,
                    instance_fields=schema.FEATURE_NAMES,
                )
                problems.append(item["msg"])
        if len(problems) >= 20:
            break
    if problems:
        raise ProtocolError("; ".join(problems))
    return out


def requested_outputs(body: InferenceRequest) -> list[tuple[str, bool]]:
    """The outputs to answer, each with whether it goes as binary data: the output's
    `binary_data` parameter, else the request's `binary_data_output`, else JSON."""
    default = _flag((body.parameters or {}).get(binary.ALL_OUTPUTS, False), binary.ALL_OUTPUTS)
    if not body.outputs:
        return [(name, default) for name in OUTPUTS]
    unknown = [o.name for o in body.outputs if o.name not in OUTPUTS]
    if unknown:
        raise ProtocolError(
            f"unknown output(s) {', '.join(map(repr, unknown))}; "
            f"the outputs are {', '.join(OUTPUTS)}"
        )
    wanted: list[tuple[str, bool]] = []
    for output in body.outputs:
        parameters = output.parameters or {}
        if any(name == output.name for name, _ in wanted):
            raise ProtocolError(f"output {output.name!r} is asked for twice")
        if parameters.get("classification"):
            raise ProtocolError(
                f"output {output.name!r}: classification asks for the classification "
                "extension, which this server does not have (predicted_event is the class)"
            )
        _refuse_shared_memory("output", output.name, parameters)
        wanted.append((output.name, _flag(parameters.get(binary.OUTPUT, default), binary.OUTPUT)))
    return wanted


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"parameter {name} must be true or false, got {value!r}")
    return value


def _served(request: Request, model_name: str, version: str | None = None) -> Served:
    state = model_state(request)
    served = state.current
    if served is None:
        raise ProtocolError(f"model not ready: {state.not_ready_reason}", 503)
    if model_name != served.name:
        raise ProtocolError(f"unknown model {model_name!r}; this server has {served.name!r}", 404)
    if version is not None and version != served.version:
        raise ProtocolError(
            f"model {model_name!r} has no version {version!r}; serving {served.version!r}", 404
        )
    return served


# ----------------------------------------------------------------------- health


@router.get("/health/live", responses={200: {"description": "The server is live"}})
async def live() -> Response:
    return json_response({"live": True})


@router.get("/health/ready", responses={503: {"description": "No model loaded"}})
async def ready(request: Request) -> Response:
    is_ready = model_state(request).current is not None
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


@router.get("", response_model=ServerMetadata)
async def server_metadata() -> Response:
    return json_response({"name": "treesurv", "version": __version__, "extensions": EXTENSIONS})


# ------------------------------------------------------------------------ model


def _metadata(served: Served) -> dict[str, Any]:
    return {
        "name": served.name,
        "versions": [served.version],
        "platform": PLATFORM,
        "inputs": [
            {"name": f.name, "datatype": datatype(f), "shape": [-1, 1]} for f in schema.FEATURES
        ],
        "outputs": [{"name": n, "datatype": t, "shape": [-1]} for n, t in OUTPUTS.items()],
    }


@router.get("/models/{model_name}", response_model=ModelMetadata, responses=ERRORS)
async def model_metadata(model_name: str, request: Request) -> Response:
    try:
        return json_response(_metadata(_served(request, model_name)))
    except ProtocolError as exc:
        return error_response(str(exc), exc.status)


@router.get(
    "/models/{model_name}/versions/{model_version}",
    response_model=ModelMetadata,
    responses=ERRORS,
)
async def model_version_metadata(model_name: str, model_version: str, request: Request) -> Response:
    try:
        return json_response(_metadata(_served(request, model_name, model_version)))
    except ProtocolError as exc:
        return error_response(str(exc), exc.status)


def _ready(request: Request, model_name: str, version: str | None) -> Response:
    try:
        served = _served(request, model_name, version)
    except ProtocolError as exc:
        return error_response(str(exc), exc.status)
    return json_response({"name": served.name, "ready": True})


@router.get("/models/{model_name}/ready", responses=ERRORS)
async def model_ready(model_name: str, request: Request) -> Response:
    return _ready(request, model_name, None)


@router.get("/models/{model_name}/versions/{model_version}/ready", responses=ERRORS)
async def model_version_ready(model_name: str, model_version: str, request: Request) -> Response:
    return _ready(request, model_name, model_version)


@dataclass(frozen=True)
class _Read:
    """An infer request read: its JSON part, the values of its tensors and, when every
    row is valid for the full model (checked as columns), their probabilities."""

    body: InferenceRequest
    values: Mapping[str, TensorValues]  # as read; `as_lists` makes them lists
    probabilities: np.ndarray | None


class _PlainInput(msgspec.Struct, gc=False):
    """An input tensor sent as JSON, without parameters (unknown fields ignored, as
    the request models allow them)."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: None = None


class _PlainRequest(msgspec.Struct):
    """The common infer request: JSON tensors, no parameters, every output."""

    inputs: list[_PlainInput]
    id: str | None = None
    parameters: None = None
    outputs: None = None


_PLAIN = msgspec.json.Decoder(_PlainRequest)


def _plain_json(
    head: bytes, max_batch: int
) -> tuple[InferenceRequest, dict[str, list[Any]]] | None:
    """The JSON part and the tensors' values of a common infer request, read without
    the request models: msgspec decodes it in C and `_checked` checks its tensors as
    for any request. None for anything else or anything wrong: the request models then
    read the request and name the problem."""
    try:
        plain = _PLAIN.decode(head)
        _, flat = _checked(plain.inputs, max_batch)  # type: ignore[arg-type]  # same fields
    except (msgspec.DecodeError, ProtocolError):
        return None
    # Missing values are already None: msgspec refuses a NaN in JSON (the request
    # models read it, and that request takes their path, which makes it None).
    body = InferenceRequest.model_construct(id=plain.id, parameters=None, inputs=[], outputs=None)
    return body, flat


def _parsed(
    head: bytes, framed: bool, max_batch: int
) -> tuple[InferenceRequest, Mapping[str, TensorValues] | None]:
    """The JSON part of an infer request, and the tensors' values when the common
    plain-JSON reader took it (else None): a malformed body is a ProtocolError (400)."""
    plain = None if framed else _plain_json(head, max_batch)
    return plain or (parse_request(head, framed), None)


def _read(head: bytes, data: bytes, framed: bool, max_batch: int, served: Served) -> _Read:
    """Parse, check and (all rows valid for the full model) score an infer request."""
    body, values = _parsed(head, framed, max_batch)
    if values is None:
        values = tensor_values(body.inputs, max_batch, data, framed)
    columns = full_model_tensors(values)
    proba = None if columns is None else served.predictor.compiled.proba_columns(columns)
    return _Read(body, values, proba)


async def _infer(request: Request, model_name: str, version: str | None) -> Response:
    try:
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise ProtocolError(
                f"Content-Encoding {encoding!r} is not supported; send the body uncompressed"
            )
        header = request.headers.get(binary.HEADER)
        raw = await request.body()
        try:
            head, data = binary.split_body(raw, header)
        except binary.BinaryDataError as exc:
            raise ProtocolError(str(exc)) from None
        framed, max_batch = header is not None, settings_of(request).max_batch
        # A large request is parsed, checked and scored in a worker thread, as on /v1:
        # the event loop goes on reading requests and answering probes meanwhile.
        inline = len(raw) < THREADPOOL_MIN_BYTES
        try:
            served = _served(request, model_name, version)
        except ProtocolError:
            # The protocol's order: a malformed body is a 400 whatever the model's name,
            # so the body is parsed before the 404 or 503 is answered.
            if inline:
                _parsed(head, framed, max_batch)
            else:
                await run_in_threadpool(_parsed, head, framed, max_batch)
            raise
        read_args = (head, data, framed, max_batch, served)
        read = _read(*read_args) if inline else await run_in_threadpool(_read, *read_args)
        body, values = read.body, read.values
        wanted = requested_outputs(body)
        if read.probabilities is None:
            instances = validate_rows(rows_of(as_lists(values)))
    except ProtocolError as exc:
        return error_response(str(exc), exc.status)
    if read.probabilities is not None:  # every row valid for the full model: scored as columns
        probabilities = read.probabilities.tolist()
        # As lists only if the log asks, once the answer has gone.
        logged: Callable[[], Sequence[Any]] = lambda: ColumnRows(as_lists(values))  # noqa: E731
    else:
        probabilities = await score(served.predictor, [i.__dict__ for i in instances])
        logged = lambda: instances  # noqa: E731
    account(request, served.version, "v2", FULL, probabilities, logged)
    return _answer(served, body.id, wanted, probabilities)


def _answer(
    served: Served,
    request_id: str | None,
    wanted: list[tuple[str, bool]],
    probabilities: list[float],
) -> Response:
    """The outputs asked for: JSON data, or binary data after the JSON object."""
    threshold = served.bundle.threshold
    data: dict[str, list[float] | list[int]] = {
        "death_probability": probabilities,
        "survival_probability": [1.0 - p for p in probabilities],
        "predicted_event": [1 if p >= threshold else 0 for p in probabilities],
    }
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, as_binary in wanted:
        output: dict[str, Any] = {"name": name, "shape": [len(probabilities)]}
        output["datatype"] = OUTPUTS[name]
        if as_binary:
            chunks.append(binary.encode_fixed(data[name], OUTPUTS[name]))
            output["parameters"] = {binary.SIZE: len(chunks[-1])}
        else:
            output["data"] = data[name]
        outputs.append(output)
    answer: dict[str, Any] = {
        "model_name": served.name,
        "model_version": served.version,
        "outputs": outputs,
    }
    if request_id is not None:
        answer["id"] = request_id
    if not chunks:
        return json_response(answer)
    head = orjson.dumps(answer)
    return Response(
        b"".join([head, *chunks]),
        media_type=binary.MEDIA_TYPE,
        headers={binary.HEADER: str(len(head))},
    )


@router.post(
    "/models/{model_name}/infer",
    response_model=InferenceResponse,
    responses=INFER_ERRORS,
    openapi_extra=INFER_BODY,
)
async def infer(model_name: str, request: Request) -> Response:
    """Score seedlings sent as V2 tensors (one tensor per feature)."""
    return await _infer(request, model_name, None)


@router.post(
    "/models/{model_name}/versions/{model_version}/infer",
    response_model=InferenceResponse,
    responses=INFER_ERRORS,
    openapi_extra=INFER_BODY,
)
async def infer_version(model_name: str, model_version: str, request: Request) -> Response:
    """Score seedlings on the named version of the model."""
    return await _infer(request, model_name, model_version)
