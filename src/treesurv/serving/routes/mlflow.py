"""MLflow's scoring server protocol on the same model: `POST /invocations` with
`dataframe_split`, `dataframe_records`, `instances` or `inputs` (JSON), or CSV text
(`text/csv`), and `GET /ping`, `/health` and `/version`.

Payloads are what pandas writes (`to_json(orient="split")`, `orient="records"`,
`to_csv`), missing EMF as null, NaN or an empty cell; the answer is
`{"predictions": [...]}`, one /v1/predictions item per row, in order.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, RootModel

from treesurv import __version__
from treesurv.core import schema
from treesurv.serving.deps import model_state
from treesurv.serving.http import INVALID, RequestRoute, json_response
from treesurv.serving.routes.kserve_v1 import V1Response
from treesurv.serving.schemas import ONE_MODEL, PredictionInstance
from treesurv.serving.tabular import (
    invalid,
    one_layout,
    parse_json,
    rows_from_csv,
    rows_from_split,
    rows_from_table,
    score_rows,
)

router = APIRouter(route_class=RequestRoute, tags=["mlflow scoring"])
LAYOUTS = ("dataframe_split", "dataframe_records", "instances", "inputs")
NOT_READY_TEXT: dict[int | str, dict[str, Any]] = {
    503: {"description": "No verified model loaded (the reason, as text)"}
}
ALLOWED = "a JSON object with one of " + ", ".join(LAYOUTS) + ", or CSV text (text/csv)"


class DataFrameSplit(BaseModel):
    """pandas' `to_json(orient="split")`: column names and rows of values."""

    columns: list[str] = Field(..., min_length=1)
    data: list[list[Any]] = Field(..., min_length=1)
    index: list[Any] | None = None


class SplitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataframe_split: DataFrameSplit


class RecordsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataframe_records: list[PredictionInstance] = Field(
        ..., min_length=1, json_schema_extra=ONE_MODEL
    )


class InstancesBody(BaseModel):
    """Records; rows of the ten features in order, or columns, are taken too."""

    model_config = ConfigDict(extra="forbid")
    instances: list[PredictionInstance] = Field(..., min_length=1, json_schema_extra=ONE_MODEL)


class InputsBody(BaseModel):
    """Records; rows of the ten features in order, or columns, are taken too."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[PredictionInstance] = Field(..., min_length=1, json_schema_extra=ONE_MODEL)


class InvocationRequest(RootModel[SplitBody | RecordsBody | InstancesBody | InputsBody]):
    """Exactly one of the layouts MLflow's scoring server reads."""


EXAMPLE_SPLIT = {
    "columns": list(schema.FEATURE_NAMES),
    "data": [[schema.EXAMPLE[f] for f in schema.FEATURE_NAMES]],
}


@router.post(
    "/invocations",
    response_model=V1Response,
    responses=INVALID,
    summary="Probability that each seedling dies (MLflow scoring protocol)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/InvocationRequest"},
                    "examples": {
                        "dataframe_split": {"value": {"dataframe_split": EXAMPLE_SPLIT}},
                        "dataframe_records": {"value": {"dataframe_records": [schema.EXAMPLE]}},
                    },
                },
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
)
async def invocations(request: Request) -> Response:
    """Score the rows of a table, in order; CSV when the content type says so."""
    body = await request.body()
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == "text/csv":
        try:
            rows, locate = rows_from_csv(body.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise invalid(("csv",), "CSV must be UTF-8 text", None, "UTF-8 CSV") from None
    else:
        payload = parse_json(body)
        layout, value = one_layout(payload, LAYOUTS, ALLOWED)
        if layout == "dataframe_split":
            rows, locate = rows_from_split(value, (layout,))
        else:
            rows, locate = rows_from_table(value, (layout,))
    items = await score_rows(request, rows, locate, "mlflow")
    return json_response({"predictions": items})


async def health(request: Request) -> Response:
    """200 once a verified model is loaded; 503 with the reason before."""
    if model_state(request).current is None:
        return PlainTextResponse(f"not ready: {model_state(request).not_ready_reason}\n", 503)
    return PlainTextResponse("\n")


# MLflow's scoring server answers both paths the same way.
for path in ("/ping", "/health"):
    router.add_api_route(
        path,
        health,
        methods=["GET"],
        summary="200 once the model is loaded (MLflow)",
        response_class=PlainTextResponse,
        responses=NOT_READY_TEXT,
        operation_id=f"mlflow_{path.strip('/')}",
    )


@router.get("/version", summary="The server's version (MLflow)", response_class=PlainTextResponse)
async def version(request: Request) -> Response:
    return PlainTextResponse(__version__)


BODY_MODELS = (InvocationRequest,)
