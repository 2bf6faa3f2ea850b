"""`POST /v1/admin/reload`: swap in the bundle at the model path (API key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from treesurv.serving.deps import model_state, require_admin
from treesurv.serving.http import json_response
from treesurv.serving.schemas import ErrorResponse, ReloadResult

router = APIRouter()


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
        return json_response(
            {"detail": f"bundle refused: {outcome.error}; still serving {still}"}, 409
        )
    return json_response(
        {
            "status": outcome.status,
            "model_version": outcome.served.version,
            "previous_version": outcome.previous_version,
        }
    )
