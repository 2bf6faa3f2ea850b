"""Probes and metrics: `/healthz`, `/readyz`, `/metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from treesurv.serving.deps import model_state
from treesurv.serving.http import json_response
from treesurv.serving.metrics import CONTENT_TYPE
from treesurv.serving.schemas import Health, Readiness

router = APIRouter()


@router.get("/healthz", response_model=Health, tags=["operations"])
async def healthz() -> Response:
    """The process is alive (it may still be without a model: see /readyz)."""
    return json_response({"status": "ok"})


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
        return json_response({"status": "not ready", "reason": state.not_ready_reason}, 503)
    return json_response(
        {
            "status": "ready",
            "model_version": served.version,
            "last_reload_error": state.last_error,
        }
    )


@router.get("/metrics", tags=["operations"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
