"""KServe's V1 protocol on the same model: `GET /v1/models/{name}` (readiness) and
`POST /v1/models/{name}:predict` with `{"instances": [...]}` -> `{"predictions": [...]}`.

Instances are records with the /v1/predictions fields, or rows of the ten features
in schema order; each prediction is the /v1/predictions item for its instance.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from treesurv.core import schema
from treesurv.core.config import MODEL_NAME
from treesurv.serving.deps import model_state
from treesurv.serving.http import INVALID, RequestRoute, json_response
from treesurv.serving.schemas import ONE_MODEL, ErrorResponse, Prediction, PredictionInstance
from treesurv.serving.tabular import one_layout, parse_json, rows_from_table, score_rows

router = APIRouter(route_class=RequestRoute, tags=["kserve v1"])
PREDICT = "/v1/models/{model_name}:predict"
UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No model of that name is served here"}
}


class ModelStatus(BaseModel):
    name: str
    ready: bool


class V1Request(BaseModel):
    """Instances as records, as for /v1/predictions. Rows of the ten features in the
    schema's order (Species, Light_ISF, Soil, Sterile, Conspecific, AMF, EMF,
    Phenolics, Lignin, NSC) are taken too."""

    model_config = ConfigDict(extra="forbid")
    instances: list[PredictionInstance] = Field(..., min_length=1, json_schema_extra=ONE_MODEL)


class V1Response(BaseModel):
    predictions: list[Prediction]


def _check_name(request: Request) -> None:
    name = request.path_params["model_name"]
    served = model_state(request).current
    known = served.name if served is not None else MODEL_NAME
    if name != known:
        raise HTTPException(404, f"model {name!r} does not exist; this server serves {known!r}")


@router.get(
    "/v1/models/{model_name}",
    response_model=ModelStatus,
    responses={503: {"model": ModelStatus, "description": "No verified model loaded"}, **UNKNOWN},
    summary="Whether the model is ready (KServe V1)",
)
async def model_status(request: Request) -> Response:
    """200 with `ready: true` once a verified model is loaded; 503 until then."""
    _check_name(request)
    ready = model_state(request).current is not None
    name = request.path_params["model_name"]
    return json_response({"name": name, "ready": ready}, 200 if ready else 503)


@router.post(
    PREDICT,
    response_model=V1Response,
    responses={**INVALID, **UNKNOWN},
    summary="Probability that each seedling dies (KServe V1)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/V1Request"},
                    "examples": {
                        "records": {"value": {"instances": [schema.EXAMPLE]}},
                        "rows in feature order": {
                            "value": {
                                "instances": [[schema.EXAMPLE[f] for f in schema.FEATURE_NAMES]]
                            }
                        },
                    },
                }
            },
        }
    },
)
async def predict(request: Request) -> Response:
    """Score 1 to `max_batch` seedlings; the predictions come in the order of `instances`."""
    _check_name(request)
    payload = parse_json(await request.body())
    _, instances = one_layout(payload, ("instances",), '{"instances": [...]}')
    rows, locate = rows_from_table(instances, ("instances",))
    items = await score_rows(request, rows, locate, "kserve_v1")
    return json_response({"predictions": items})


BODY_MODELS = (V1Request,)
