"""`create_app(settings)`: the FastAPI application, built on demand (no import-time work).

At startup the lifespan loads and verifies the bundle, which answers at once through
the NumPy walk of its trees while a background thread imports Numba and compiles
the kernels, then starts the watcher; a missing or invalid bundle leaves the process
up and `/readyz` answering 503 with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from treesurv import __version__
from treesurv.core import schema
from treesurv.monitoring.service import ServiceLog, drift_collector
from treesurv.serving import errors, http, model_choice
from treesurv.serving.admission import Admission, UploadGate
from treesurv.serving.metrics import Metrics
from treesurv.serving.middleware import BodyLimit, RequestTelemetry
from treesurv.serving.routes import ROUTERS, kserve_v1, mlflow, open_inference, survival, upload
from treesurv.serving.schemas import Instance, LegacyInstance, PredictionRequest
from treesurv.serving.settings import Settings
from treesurv.serving.state import ModelState

log = logging.getLogger(__name__)

DESCRIPTION = """
How likely is a tree seedling to die? Send the ten measurements of one or more
seedlings to **`POST /v1/predictions`**; every answer carries the model version.
Invalid input gets a 422 that names the field, the value and what is allowed.
The model's schema, metrics and card are at `GET /v1/model`. The same model
answers the Open Inference Protocol (V2) under `/v2`, KServe's V1 protocol at
`/v1/models/tree-survival:predict` and MLflow's scoring protocol at `/invocations`.
The original API, `POST /v1/predic`, keeps taking what its clients sent.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    state = ModelState(settings.model_dir, metrics)
    # Monitoring (treesurv.monitoring.service): the prediction log and drift gauges.
    predictions_log = ServiceLog(
        settings.prediction_log_dir,
        metrics.registry,
        settings.prediction_log_queue,
        process=settings.prediction_log_writer == "process",
    )
    drift = drift_collector(settings.drift_report)
    if drift is not None:
        metrics.add_collector(drift)

    app = FastAPI(
        title="treesurv",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan(settings, state, predictions_log),
        telemetry=None
        if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.model = state
    app.state.openapi_max_days = None
    app.state.prediction_log = predictions_log
    app.state.uploads = UploadGate(settings.max_uploads)
    for router in ROUTERS:
        app.include_router(router)
    app.add_exception_handler(StarletteHTTPException, open_inference.http_error_handler)
    app.add_exception_handler(RequestValidationError, _invalid_input(settings))
    app.openapi = lambda: _openapi(app, settings, state)  # type: ignore[method-assign]

    # Each one added wraps the ones before: RequestTelemetry, added last, is outermost
    # and so sees every answer, including 413s.
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization", "X-API-Key"],
        )
    # Inside the body limit: a body over the limit is refused before it takes a slot.
    app.add_middleware(
        Admission,
        metrics=metrics,
        routes=app.router.routes,
        max_concurrency=settings.max_concurrency,
        max_queue=settings.max_queue,
        max_pending_bytes=settings.max_pending_bytes,
        queue_timeout=settings.queue_timeout,
        # The upload has its own gate (UploadGate) and body limit.
        exempt=frozenset({upload.PATH}),
    )
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        file_limits={upload.PATH: settings.max_upload_bytes},
    )
    # Metrics, request ids, security headers and the prediction log, in one layer.
    app.add_middleware(RequestTelemetry, metrics=metrics, log=predictions_log)
    return app


def _lifespan(
    settings: Settings, state: ModelState, predictions_log: ServiceLog
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Load the model (verified, compiled) and start watching it; on shutdown, write
    what the requests in flight logged."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        predictions_log.open()
        await run_in_threadpool(state.reload)
        state.start_watching(settings.watch_interval)
        try:
            yield
        finally:
            state.stop_watching()
            # The server has let the requests in flight finish: write what they logged.
            await run_in_threadpool(predictions_log.close)

    return lifespan


def _invalid_input(settings: Settings) -> Callable[[Request, Exception], Awaitable[Response]]:
    """422 (400 on /v2, the protocol's error shape) naming field, value and what is allowed."""

    async def invalid_input(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        route = getattr(request.scope.get("route"), "path", "")
        if route.startswith("/v2"):
            items = errors.describe_all(
                exc.errors(), container_fields=("inputs",), instance_fields=schema.FEATURE_NAMES
            )
            return open_inference.error_response("; ".join(i["msg"] for i in items))
        flat = route in http.FLAT_BODY_ROUTES
        items = errors.describe_all(
            exc.errors(),
            container_fields=() if flat else http.BODY_FIELDS.get(route, ("instances",)),
            # The original flat route takes the ten features only; the others the plot too.
            instance_fields=schema.FEATURE_NAMES if flat else schema.INPUT_NAMES,
            max_batch=settings.max_batch,
        )
        return http.json_response({"detail": items}, 422)

    return invalid_input


def _openapi(app: FastAPI, settings: Settings, state: ModelState) -> dict[str, Any]:
    """The OpenAPI document, rebuilt when a reload changes the horizons' upper bound
    (it comes from the served bundle)."""
    served = state.current
    max_days = (
        min(model.max_days for model in served.survival.values())
        if served is not None and served.survival
        else None
    )
    if app.openapi_schema is None or app.state.openapi_max_days != max_days:
        app.openapi_schema = openapi_document(app, settings.max_batch, max_days)
        app.state.openapi_max_days = max_days
    return app.openapi_schema


def openapi_document(app: FastAPI, max_batch: int, max_days: float | None) -> dict[str, Any]:
    spec = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    # Routes that parse their own body (http.parse) reference these models.
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in (
        PredictionRequest,
        Instance,
        LegacyInstance,
        *survival.BODY_MODELS,
        *kserve_v1.BODY_MODELS,
        *mlflow.BODY_MODELS,
    ):
        doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(doc.pop("$defs", {}))
        schemas[model.__name__] = doc
    # The limits are settings or come from the bundle, so they are added here.
    for name, field in (
        ("PredictionRequest", "instances"),
        ("SurvivalRequest", "instances"),
        ("V1Request", "instances"),
        ("RecordsBody", "dataframe_records"),
        ("InstancesBody", "instances"),
        ("InputsBody", "inputs"),
    ):
        schemas[name]["properties"][field]["maxItems"] = max_batch
    day: dict[str, Any] = {"minimum": 0}
    if max_days is not None:
        day["maximum"] = max_days
    for name in ("PredictionRequest", "CompareRequest"):
        _non_null(schemas[name]["properties"]["horizon_days"]).update(day)
    horizons = _non_null(schemas["SurvivalRequest"]["properties"]["horizons"])
    horizons.update(minItems=1, maxItems=model_choice.MAX_HORIZONS, uniqueItems=True)
    horizons["items"].update(day)
    return spec


def _non_null(prop: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an optional property's JSON Schema."""
    return next(b for b in prop.get("anyOf", [prop]) if b.get("type") != "null")
