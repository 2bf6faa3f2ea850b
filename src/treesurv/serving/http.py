"""HTTP plumbing shared by the routers: bodies parsed in one pass, JSON answers
written with orjson, and the OpenAPI documentation of both."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from treesurv.serving.schemas import ErrorResponse

JSON = "application/json"
# Endpoints whose body is one flat instance rather than {"instances": [...]}.
FLAT_BODY_ROUTES = frozenset({"/v1/predic"})
# The top-level fields of each route's body (named when an unknown one is sent).
BODY_FIELDS = {
    "/v1/predictions": ("instances", "horizon_days"),
    "/v1/survival": ("instances", "horizons"),
    "/v1/compare": ("instance", "vary", "values", "steps", "horizon_days"),
    "/v1/models/{model_name}:predict": ("instances",),
    "/invocations": ("dataframe_split", "dataframe_records", "instances", "inputs"),
}

NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "No verified model loaded yet"},
}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "Invalid input: field, value and what is allowed"},
    413: {"model": ErrorResponse, "description": "Request body above the size limit"},
    **NOT_READY,
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


def json_response(payload: Any, status: int = 200) -> Response:
    try:
        body = orjson.dumps(payload)
    except TypeError:
        # orjson refuses integers beyond 64 bits, which an error echoing the client's
        # value may hold; the stdlib encoder writes them (and anything else as text).
        body = json.dumps(payload, default=str).encode()
    return Response(body, status_code=status, media_type=JSON)
