"""Dependencies of the routes (as FastAPI's full-stack template keeps them): the
served model, the settings and the admin check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from treesurv.serving.settings import Settings
from treesurv.serving.state import ModelState, Served

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
