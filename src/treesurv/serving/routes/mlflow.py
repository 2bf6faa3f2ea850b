"""MLflow's scoring server protocol on the same model: `POST /invocations` with
`dataframe_split`, `dataframe_records`, `instances` or `inputs` (JSON), or CSV text
(`text/csv`), and `GET /ping`, `/health` and `/version`.

Payloads are what pandas writes (`to_json(orient="split")`, `orient="records"`,
`to_csv`), missing EMF as null, NaN or an empty cell; the answer is
`{"predictions": [...]}`, one /v1/predictions item per row, in order.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from treesurv import __version__
from treesurv.core import schema
from treesurv.serving.deps import model_state
from treesurv.serving.http import INVALID, RequestRoute, json_response
from treesurv.serving.routes.kserve_v1 import V1Response
from treesurv.serving.tabular import (
    invalid,
    one_layout,
    rows_from_csv,
    rows_from_split,
    rows_from_table,
    score_rows,
)

router = APIRouter(route_class=RequestRoute, tags=["mlflow scoring"])
LAYOUTS = ("dataframe_split", "dataframe_records", "instances", "inputs")
ALLOWED = "a JSON object with one of " + ", ".join(LAYOUTS) + ", or CSV text (text/csv)"


class DataFrameSplit(BaseModel):
    model_config = ConfigDict(extra="allow")
    columns: list[str]
    data: list[list[Any]]
    index: list[Any] | None = None


class InvocationRequest(BaseModel):
    """Exactly one of the four layouts MLflow's scoring server reads."""

    model_config = ConfigDict(extra="forbid")
    dataframe_split: DataFrameSplit | None = Field(None, description='pandas orient="split"')
    dataframe_records: list[dict[str, Any]] | None = Field(
        None, description='pandas orient="records"'
    )
    instances: list[Any] | dict[str, list[Any]] | None = Field(
        None, description="records, rows of the ten features in order, or columns"
    )
    inputs: list[Any] | dict[str, list[Any]] | None = Field(
        None, description="records, rows of the ten features in order, or columns"
    )


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
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise invalid(
                (), f"malformed JSON: {exc}", None, "a valid JSON document", "json_invalid"
            ) from None
        layout, value = one_layout(payload, LAYOUTS, ALLOWED)
        if layout == "dataframe_split":
            rows, locate = rows_from_split(value, (layout,))
        else:
            rows, locate = rows_from_table(value, (layout,))
    items = await score_rows(request, rows, locate, "mlflow")
    return json_response({"predictions": items})


def _health(request: Request) -> Response:
    if model_state(request).current is None:
        return json_response({"detail": model_state(request).not_ready_reason}, 503)
    return Response("\n", media_type="application/json")


@router.get("/ping", summary="200 once the model is loaded (MLflow)")
async def ping(request: Request) -> Response:
    return _health(request)


@router.get("/health", summary="200 once the model is loaded (MLflow)")
async def health(request: Request) -> Response:
    return _health(request)


@router.get("/version", summary="The server's version (MLflow)", response_class=Response)
async def version(request: Request) -> Response:
    return Response(__version__, media_type="text/plain")


BODY_MODELS = (InvocationRequest,)
