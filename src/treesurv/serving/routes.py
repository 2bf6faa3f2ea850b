"""The service's own endpoints (v1, health, metrics, admin), gathered in one router.

The prediction handlers are the hot path: they read the served model once
(`state.current`), encode the validated instances straight into arrays, and
write the JSON answer with orjson — no pandas, no response re-validation.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from treesurv.core import schema
from treesurv.inference.predictor import FastPredictor
from treesurv.monitoring.service import remember
from treesurv.serving import model_choice as variants
from treesurv.serving.schemas import (
    DESIGN_EXAMPLE,
    ErrorResponse,
    Health,
    Instance,
    LegacyResponse,
    ModelInfo,
    PredictionRequest,
    PredictionResponse,
    Readiness,
    ReloadResult,
)
from treesurv.serving.settings import Settings
from treesurv.serving.state import ModelState, Served

# Batches this large are scored in a worker thread (the kernels release the GIL),
# so one big request does not hold up the event loop.
THREADPOOL_MIN_ROWS = 64
JSON = "application/json"
# Endpoints whose body is one flat instance rather than {"instances": [...]}.
FLAT_BODY_ROUTES = frozenset({"/v1/predic"})
# The top-level fields of each route's body (named when an unknown one is sent).
BODY_FIELDS = {
    "/v1/predictions": ("instances", "horizon_days"),
    "/v1/survival": ("instances", "horizons"),
    "/v1/compare": ("instance", "vary", "values", "steps", "horizon_days"),
}

NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "No verified model loaded yet"},
}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "Invalid input: field, value and what is allowed"},
    413: {"model": ErrorResponse, "description": "Request body above the size limit"},
    **NOT_READY,
}
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

M = TypeVar("M", bound=BaseModel)


class RequestRoute(APIRoute):
    """A route whose endpoint takes the Request and returns a Response itself.

    FastAPI's documented extension point (a custom route class): the endpoint is
    called directly, without the per-request dependency solving it does not use;
    the OpenAPI description still comes from the route's declaration.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


router = APIRouter()
# The hot path: prediction endpoints parse and answer on their own.
hot = APIRouter(route_class=RequestRoute)
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="Admin API key")
_bearer = HTTPBearer(auto_error=False, description="Admin API key as a bearer token")


def model_state(request: Request) -> ModelState:
    state: ModelState = request.app.state.model
    return state


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def served_model(request: Request) -> Served:
    served = model_state(request).current
    if served is None:
        raise HTTPException(503, f"not ready: {model_state(request).not_ready_reason}")
    return served


def body_schema(model: type[BaseModel], examples: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI request body of a route that parses its body itself (see `parse`)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": {"$ref": f"#/components/schemas/{model.__name__}"},
                    "examples": examples,
                }
            },
        }
    }


async def parse(request: Request, model: type[M]) -> M:
    """Validate the raw body in pydantic's JSON mode: one pass in Rust, where FastAPI's
    body parameter would json.loads the body and then validate the Python objects.
    Errors go to the same 422 handler as FastAPI's own."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def _json(payload: Any, status: int = 200) -> Response:
    try:
        body = orjson.dumps(payload)
    except TypeError:
        # orjson refuses integers beyond 64 bits, which an error echoing the client's
        # value may hold; the stdlib encoder writes them (and anything else as text).
        body = json.dumps(payload, default=str).encode()
    return Response(body, status_code=status, media_type=JSON)


async def score(predictor: FastPredictor, rows: list[dict[str, Any]]) -> list[float]:
    """P(death) for validated instances (their field dicts), in order."""
    if len(rows) == 1:
        return [predictor.predict_one(rows[0])]
    if len(rows) < THREADPOOL_MIN_ROWS:
        return predictor.predict_rows(rows).tolist()
    proba = await run_in_threadpool(predictor.predict_rows, rows)
    return proba.tolist()


def check_batch(instances: list[Any], max_batch: int, loc: tuple[str | int, ...]) -> None:
    if len(instances) > max_batch:
        raise RequestValidationError(
            [
                {
                    "type": "too_long",
                    "loc": loc,
                    "msg": f"at most {max_batch} instances",
                    "input": instances,
                    "ctx": {"max_length": max_batch},
                }
            ]
        )


def prediction_items(probabilities: list[float], threshold: float) -> list[dict[str, Any]]:
    return [
        {
            "death_probability": p,
            "survival_probability": 1.0 - p,
            "predicted_event": 1 if p >= threshold else 0,
        }
        for p in probabilities
    ]


# ------------------------------------------------------------------ predictions


@hot.post(
    "/v1/predictions",
    response_model=PredictionResponse,
    responses=INVALID,
    tags=["predictions"],
    summary="Probability that each seedling dies",
    openapi_extra=body_schema(PredictionRequest, EXAMPLE_REQUEST),
)
async def predictions(request: Request) -> Response:
    """Score 1 to `max_batch` seedlings; the answers come in the order of `instances`."""
    body = await parse(request, PredictionRequest)
    served = served_model(request)  # read once: a reload cannot change it under us
    check_batch(body.instances, settings_of(request).max_batch, ("body", "instances"))
    rows = [i.__dict__ for i in body.instances]
    model = variants.choose_model(served, rows, ("instances",))
    payload: dict[str, Any] = {"model_version": served.version, "model": model}
    if body.horizon_days is None:
        probabilities = await score(variants.classifier(served, model), rows)
    else:
        payload["horizon_days"] = body.horizon_days
        args = (served, model, rows, body.horizon_days)
        probabilities = (
            variants.death_by(*args)
            if len(rows) < THREADPOOL_MIN_ROWS
            else await run_in_threadpool(variants.death_by, *args)
        )
    metrics = request.app.state.metrics
    if model == variants.FULL and body.horizon_days is None:
        metrics.observe_predictions("v1", probabilities)
        # The log holds the classifier's probabilities, comparable with the
        # reference profile the drift check reads, and the body as received:
        # validated, strict and closed, it holds exactly the values scored.
        remember(request.scope, served.version, await request.body(), probabilities)
    else:  # other models' probabilities stay out of the classifier's histogram
        horizon = "_horizon" if body.horizon_days is not None else ""
        metrics.count_predictions(f"v1_{model}{horizon}", len(probabilities))
    payload["predictions"] = prediction_items(probabilities, served.bundle.threshold)
    return _json(payload)


@hot.post(
    "/v1/predic",
    response_model=LegacyResponse,
    responses=INVALID,
    deprecated=True,
    tags=["predictions"],
    summary="The original API (kept for old clients)",
    openapi_extra=body_schema(Instance, {"one seedling": {"value": schema.EXAMPLE}}),
)
async def predic(request: Request) -> Response:
    """One flat seedling in, `{"Event": 1.0}` (dies) or `{"Event": 0.0}` out.
    Use `POST /v1/predictions` in new clients: it also gives the probability."""
    body = await parse(request, Instance)
    served = served_model(request)
    p = served.predictor.predict_one(body.__dict__)
    request.app.state.metrics.observe_predictions("v1_predic", (p,))
    remember(request.scope, served.version, b'{"instances":[%b]}' % await request.body(), (p,))
    return _json({"Event": 1.0 if p >= served.bundle.threshold else 0.0})


# ------------------------------------------------------------------------ model


@router.get("/v1/model", response_model=ModelInfo, tags=["model"], responses=NOT_READY)
def model_info(request: Request) -> ModelInfo:
    """The served model: version, metrics, feature schema (with the allowed
    categories and ranges) and the model card."""
    served = served_model(request)
    manifest = served.bundle.manifest
    return ModelInfo(
        name=served.name,
        version=served.version,
        created=manifest.get("created"),
        decision_threshold=served.bundle.threshold,
        metrics=manifest.get("metrics") or {},
        feature_schema=schema.schema_document(),
        card=served.bundle.card,
        manifest=manifest,
    )


# ----------------------------------------------------------------- operations


@router.get("/healthz", response_model=Health, tags=["operations"])
async def healthz() -> Response:
    """The process is alive (it may still be without a model: see /readyz)."""
    return _json({"status": "ok"})


@router.get(
    "/readyz",
    response_model=Readiness,
    tags=["operations"],
    responses={503: {"model": Readiness, "description": "No verified model loaded"}},
)
async def readyz(request: Request) -> Response:
    """200 once a verified model is loaded; 503 with the reason until then."""
    state = model_state(request)
    served = state.current
    if served is None:
        return _json({"status": "not ready", "reason": state.not_ready_reason}, 503)
    return _json(
        {
            "status": "ready",
            "model_version": served.version,
            "last_reload_error": state.last_error,
        }
    )


@router.get("/metrics", tags=["operations"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    from treesurv.serving.metrics import CONTENT_TYPE

    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)


# ------------------------------------------------------------------------ admin


def require_admin(
    request: Request,
    api_key: Annotated[str | None, Depends(_api_key)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = settings_of(request).admin_key()
    if expected is None:
        raise HTTPException(
            403, "the admin API is disabled: set TREESURV_API_KEY or TREESURV_API_KEY_FILE"
        )
    given = api_key or (bearer.credentials if bearer else None)
    # Constant-time comparison: the answer time says nothing about the key.
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            401,
            "missing or wrong API key (send it as X-API-Key or Authorization: Bearer)",
            headers={"WWW-Authenticate": "Bearer"},
        )


@router.post(
    "/v1/admin/reload",
    response_model=ReloadResult,
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
        403: {"model": ErrorResponse, "description": "Admin API disabled (no key configured)"},
        409: {
            "model": ErrorResponse,
            "description": "Bundle refused; the previous model keeps serving",
        },
    },
)
async def reload(request: Request) -> Response:
    """Verify the bundle at the model path and swap it in (in-flight requests finish
    on the old model). A bundle that fails verification is refused."""
    outcome = await run_in_threadpool(model_state(request).reload)
    if outcome.status == "refused" or outcome.served is None:
        still = outcome.previous_version or "nothing"
        return _json({"detail": f"bundle refused: {outcome.error}; still serving {still}"}, 409)
    return _json(
        {
            "status": outcome.status,
            "model_version": outcome.served.version,
            "previous_version": outcome.previous_version,
        }
    )
