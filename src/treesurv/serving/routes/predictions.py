"""`POST /v1/predictions`: the probability that each seedling dies (classifier,
or the survival model by a given day), in the order of the instances.

The hot path: the served model is read once (`state.current`), the validated
instances are encoded straight into arrays and the answer is written with orjson,
without pandas or response re-validation.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from treesurv.core import schema
from treesurv.serving import model_choice
from treesurv.serving.deps import served_model, settings_of
from treesurv.serving.http import INVALID, RequestRoute, body_schema, json_response, parse
from treesurv.serving.schemas import DESIGN_EXAMPLE, PredictionRequest, PredictionResponse
from treesurv.serving.scoring import (
    THREADPOOL_MIN_ROWS,
    account,
    check_batch,
    prediction_items,
    score,
    score_batch,
)
from treesurv.serving.state import Served

router = APIRouter(route_class=RequestRoute)

EXAMPLE_REQUEST = {
    "one seedling": {
        "summary": "One Quercus rubra seedling",
        "value": {"instances": [schema.EXAMPLE]},
    },
    "planning (no traits)": {
        "summary": "Before planting: the design fields only; the planning model answers",
        "value": {"instances": [DESIGN_EXAMPLE]},
    },
    "death by day 60": {
        "summary": "P(dead by day 60) from the survival model",
        "value": {"instances": [schema.EXAMPLE], "horizon_days": 60},
    },
    "AMF species (EMF omitted)": {
        "summary": "An Acer saccharum seedling: EMF is empty for AMF species",
        "value": {
            "instances": [
                {
                    **{k: v for k, v in schema.EXAMPLE.items() if k != "EMF"},
                    "Species": "Acer saccharum",
                }
            ]
        },
    },
}


@router.post(
    "/v1/predictions",
    response_model=PredictionResponse,
    responses=INVALID,
    tags=["predictions"],
    summary="Probability that each seedling dies",
    openapi_extra=body_schema(PredictionRequest, EXAMPLE_REQUEST),
)
async def predictions(request: Request) -> Response:
    """Score 1 to `max_batch` seedlings; the answers come in the order of `instances`."""
    served = served_model(request)  # read once: a reload cannot change it under us
    predictor = model_choice.classifier(served, model_choice.FULL)
    found = await score_batch(predictor, await request.body(), settings_of(request).max_batch)
    if found is not None:  # every instance valid for the full model: scored as columns
        model, horizon_days = model_choice.FULL, None
        probabilities = found.tolist()
    else:
        model, horizon_days, probabilities = await _by_instance(request, served)
    payload: dict[str, Any] = {"model_version": served.version, "model": model}
    if horizon_days is not None:
        payload["horizon_days"] = horizon_days
    # The log keeps the body as received: validated, strict and closed, it holds
    # exactly the values scored.
    body = await request.body()
    horizon = horizon_days is not None
    account(request, served.version, "v1", model, probabilities, lambda: body, horizon)
    payload["predictions"] = prediction_items(probabilities, served.bundle.threshold)
    return json_response(payload)


async def _by_instance(request: Request, served: Served) -> tuple[str, float | None, list[float]]:
    """The request model's path: validation that names every problem, the planning
    model, horizons. Returns the answering model, the horizon and the probabilities."""
    body = await parse(request, PredictionRequest)
    check_batch(body.instances, settings_of(request).max_batch, ("body", "instances"))
    rows = [i.__dict__ for i in body.instances]
    model = model_choice.choose_model(served, rows, ("instances",))
    if body.horizon_days is None:
        return model, None, await score(model_choice.classifier(served, model), rows)
    args = (served, model, rows, body.horizon_days)
    probabilities = (
        model_choice.death_by(*args)
        if len(rows) < THREADPOOL_MIN_ROWS
        else await run_in_threadpool(model_choice.death_by, *args)
    )
    return model, body.horizon_days, probabilities
