"""`POST /v1/predic`: the original API, kept for its clients: one flat seedling in,
`{"Event": 1.0 | 0.0}` out."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from treesurv.core import schema
from treesurv.serving.deps import served_model
from treesurv.serving.http import INVALID, RequestRoute, body_schema, json_response, parse
from treesurv.serving.model_choice import FULL
from treesurv.serving.schemas import LegacyInstance, LegacyResponse
from treesurv.serving.scoring import account

router = APIRouter(route_class=RequestRoute)
LEGACY_EXAMPLES = {
    "one seedling": {"value": schema.EXAMPLE},
    "AMF species, EMF 0 (as the original clients sent it)": {
        "value": {**schema.EXAMPLE, "Species": "Acer saccharum", "EMF": 0.0}
    },
}


@router.post(
    "/v1/predic",
    response_model=LegacyResponse,
    responses=INVALID,
    deprecated=True,
    tags=["predictions"],
    summary="The original API (kept for old clients)",
    openapi_extra=body_schema(LegacyInstance, LEGACY_EXAMPLES),
)
async def predic(request: Request) -> Response:
    """One flat seedling in, `{"Event": 1.0}` (dies) or `{"Event": 0.0}` out.
    Accepts what the original service accepted: for AMF species EMF may be 0 (as its
    clients sent it), null or omitted. Use `POST /v1/predictions` in new clients: it
    also gives the probability, and its EMF rule is strict."""
    body = await parse(request, LegacyInstance)
    served = served_model(request)
    p = served.predictor.predict_one(body.__dict__)
    raw = await request.body()
    account(request, served.version, "v1_predic", FULL, (p,), lambda: b'{"instances":[%b]}' % raw)
    return json_response({"Event": 1.0 if p >= served.bundle.threshold else 0.0})
