"""`create_app(settings)`: the FastAPI application, built on demand (no import-time work).

At startup the lifespan loads and verifies the bundle and compiles the predictor
(Numba) in this process, then starts the watcher; a missing or invalid bundle
leaves the process up and `/readyz` answering 503 with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool

from treesurv import __version__
from treesurv.monitoring.service import RequestLog, ServiceLog, drift_collector
from treesurv.serving import errors, oip, routes
from treesurv.serving.metrics import Metrics
from treesurv.serving.middleware import BodyLimit, Instrument
from treesurv.serving.schemas import Instance, PredictionRequest
from treesurv.serving.settings import Settings
from treesurv.serving.state import ModelState

log = logging.getLogger("treesurv.serving")

DESCRIPTION = """
How likely is a tree seedling to die? Send the ten measurements of one or more
seedlings to **`POST /v1/predictions`**; every answer carries the model version.
Invalid input gets a 422 that names the field, the value and what is allowed.
The model's schema, metrics and card are at `GET /v1/model`. The same model
answers the Open Inference Protocol (V2) under `/v2`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    state = ModelState(settings.model_dir, metrics)
    # Monitoring (treesurv.monitoring.service): the prediction log and drift gauges.
    predictions_log = ServiceLog(
        settings.prediction_log_dir, metrics.registry, settings.prediction_log_queue
    )
    drift = drift_collector(settings.drift_report)
    if drift is not None:
        metrics.add_collector(drift)

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

    app = FastAPI(
        title="treesurv",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.model = state
    app.state.prediction_log = predictions_log
    app.include_router(routes.hot)
    app.include_router(routes.router)
    app.include_router(oip.router)

    @app.exception_handler(RequestValidationError)
    async def invalid_input(request: Request, exc: RequestValidationError) -> Response:
        route = getattr(request.scope.get("route"), "path", "")
        if route.startswith("/v2"):
            items = errors.describe_all(exc.errors(), container_fields=("inputs",))
            return oip.error_response("; ".join(i["msg"] for i in items))
        flat = route in routes.FLAT_BODY_ROUTES
        items = errors.describe_all(
            exc.errors(),
            container_fields=() if flat else ("instances",),
            max_batch=settings.max_batch,
        )
        return routes._json({"detail": items}, 422)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            # Routes that parse their own body (routes.parse) reference these models.
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            for model in (PredictionRequest, Instance):
                doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(doc.pop("$defs", {}))
                schemas[model.__name__] = doc
            # The batch limit is a setting, so it is added to the schema here.
            schemas["PredictionRequest"]["properties"]["instances"]["maxItems"] = settings.max_batch
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # Outermost first: instrumentation sees every answer, including 413s.
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization", "X-API-Key"],
        )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestLog, log=predictions_log)  # request ids, prediction log
    app.add_middleware(Instrument, metrics=metrics)
    return app
