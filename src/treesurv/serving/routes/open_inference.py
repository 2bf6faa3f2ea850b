"""The Open Inference Protocol (KServe/MLServer/Triton "V2") over the same model.

One input tensor per feature, as MLServer's pandas codec sends a table: BYTES for
the categorical features, FP64 for the numbers (EMF may hold nulls), shape [N] or
[N, 1]. Outputs: `death_probability` and `survival_probability` (FP64) and
`predicted_event` (INT64), shape [N]. Errors follow the protocol: a non-200
status with `{"error": "..."}`; the message names the tensor, the row, the value
and what is allowed, from the same schema and rules as the v1 API.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exception_handlers import http_exception_handler
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from treesurv import __version__
from treesurv.core import schema
from treesurv.core.errors import InputError
from treesurv.monitoring.service import remember
from treesurv.serving import errors
from treesurv.serving.deps import model_state, settings_of
from treesurv.serving.http import json_response
from treesurv.serving.schemas import ErrorResponse, Instance
from treesurv.serving.scoring import score
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


def datatype(feature: schema.Feature) -> str:
    return "BYTES" if feature.kind == "categorical" else "FP64"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class RequestInput(_Open):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


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
    data: list[Any]


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


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """HTTP errors raised before an endpoint runs (e.g. a body FastAPI cannot parse):
    the protocol's `{"error": ...}` under /v2, FastAPI's usual answer elsewhere."""
    assert isinstance(exc, StarletteHTTPException)
    route = getattr(request.scope.get("route"), "path", "")
    if route.startswith(router.prefix):
        return error_response(str(exc.detail), exc.status_code)
    return await http_exception_handler(request, exc)


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
    **ERRORS,
    413: {"model": ErrorResponse, "description": "Request body above the size limit"},
}
router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    for v in data:
        out.extend(_flatten(v) if isinstance(v, list) else [v])
    return out


def rows_from_tensors(inputs: list[RequestInput], max_batch: int) -> list[dict[str, Any]]:
    """The instances a V2 request carries; ProtocolError says what is wrong."""
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
    columns: dict[str, list[Any]] = {}
    rows_n: int | None = None
    for name, tensor in by_name.items():
        feature = schema.FEATURES_BY_NAME[name]
        expected = datatype(feature)
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
        values = _flatten(tensor.data)
        if len(values) != math.prod(shape):
            raise ProtocolError(
                f"input {name!r}: shape {shape} needs {math.prod(shape)} values, got {len(values)}"
            )
        if rows_n is None:
            rows_n = shape[0]
        elif shape[0] != rows_n:
            raise ProtocolError(
                f"input {name!r} has {shape[0]} rows but others have {rows_n}; "
                "every input needs the same number of rows"
            )
        columns[name] = values
    n = rows_n or 0
    if n < 1 or n > max_batch:
        raise ProtocolError(f"got {n} rows; a request holds 1 to {max_batch} rows")
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


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
    return json_response({"name": "treesurv", "version": __version__, "extensions": []})


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


@router.get("/models/{model_name}/ready", responses=ERRORS)
async def model_ready(model_name: str, request: Request) -> Response:
    try:
        served = _served(request, model_name)
    except ProtocolError as exc:
        return error_response(str(exc), exc.status)
    return json_response({"name": served.name, "ready": True})


async def _infer(
    body: InferenceRequest, request: Request, model_name: str, version: str | None
) -> Response:
    try:
        served = _served(request, model_name, version)
        rows = rows_from_tensors(body.inputs, settings_of(request).max_batch)
        wanted = [o.name for o in body.outputs] if body.outputs else list(OUTPUTS)
        unknown = [n for n in wanted if n not in OUTPUTS]
        if unknown:
            raise ProtocolError(
                f"unknown output(s) {', '.join(map(repr, unknown))}; "
                f"the outputs are {', '.join(OUTPUTS)}"
            )
        instances = validate_rows(rows)
    except ProtocolError as exc:
        return error_response(str(exc), exc.status)
    probabilities = await score(served.predictor, [i.__dict__ for i in instances])
    request.app.state.metrics.observe_predictions("v2", probabilities)
    remember(request.scope, served.version, instances, probabilities)
    threshold = served.bundle.threshold
    data = {
        "death_probability": probabilities,
        "survival_probability": [1.0 - p for p in probabilities],
        "predicted_event": [1 if p >= threshold else 0 for p in probabilities],
    }
    answer: dict[str, Any] = {
        "model_name": served.name,
        "model_version": served.version,
        "outputs": [
            {"name": n, "shape": [len(probabilities)], "datatype": OUTPUTS[n], "data": data[n]}
            for n in wanted
        ],
    }
    if body.id is not None:
        answer["id"] = body.id
    return json_response(answer)


@router.post("/models/{model_name}/infer", response_model=InferenceResponse, responses=INFER_ERRORS)
async def infer(model_name: str, body: InferenceRequest, request: Request) -> Response:
    """Score seedlings sent as V2 tensors (one tensor per feature)."""
    return await _infer(body, request, model_name, None)


@router.post(
    "/models/{model_name}/versions/{model_version}/infer",
    response_model=InferenceResponse,
    responses=INFER_ERRORS,
)
async def infer_version(
    model_name: str, model_version: str, body: InferenceRequest, request: Request
) -> Response:
    return await _infer(body, request, model_name, model_version)
