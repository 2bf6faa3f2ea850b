"""The web page at `/`: a form built from `treesurv.core.schema`, drawn by a small script.

The page, its script and its style sheet are files of this package (no build
step, no CDN). The script builds the form from `GET /ui/form.json`, which is
generated here from the schema and the served bundle, so no category, range or
rule is written a second time in the browser code.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from treesurv.core import schema
from treesurv.serving.http import json_response
from treesurv.serving.model_choice import MAX_HORIZONS, default_days

router = APIRouter(include_in_schema=False)
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


@cache
def static_file(name: str) -> bytes:
    return resources.files("treesurv.serving").joinpath("static", name).read_bytes()


def _static(name: str) -> Response:
    return Response(
        static_file(name), media_type=STATIC[name], headers={"Cache-Control": "no-cache"}
    )


@router.get("/")
async def page() -> Response:
    return _static("index.html")


def form_document() -> dict[str, Any]:
    """What the form needs from the schema: the fields (kinds, categories, ranges,
    units), the rules, which fields are traits, the Sterile/Conspecific values
    each species and soil imply, and the optional field plot."""
    return {
        **schema.schema_document(),
        "traits": list(schema.TRAITS),
        "design": list(schema.DESIGN),
        "implied": list(schema.IMPLIED),
        "implied_values": {
            sp: {soil: schema.implied_values(sp, soil) for soil in schema.SOIL_SOURCES}
            for sp in schema.SPECIES
        },
        "species_myco": dict(schema.SPECIES_MYCO),
        "example": schema.EXAMPLE,
    }


@router.get("/ui/form.json")
async def form(request: Request) -> Response:
    """The form's description, and the served model (null until one is loaded)."""
    served = request.app.state.model.current
    model = None
    if served is not None:
        surv = served.survival.get("full")
        model = {
            "name": served.name,
            "version": served.version,
            "planning": served.classifier("planning") is not None,
            "survival": surv is not None,
            "max_days": surv.max_days if surv is not None else None,
            "default_days": default_days(served, surv) if surv is not None else [],
            "max_horizons": MAX_HORIZONS,
        }
    settings = request.app.state.settings
    # What the upload takes, so that the page refuses a file too large before sending it.
    upload = {
        "path": "/ui/score",
        "max_bytes": settings.max_upload_bytes,
        "formats": [".csv", ".xlsx"],
    }
    return json_response({**form_document(), "model": model, "upload": upload})


@router.get("/ui/model-card")
async def model_card(request: Request) -> Response:
    """The served model's card (Markdown, shown as text)."""
    served = request.app.state.model.current
    if served is None:
        raise HTTPException(503, "no model loaded yet")
    return Response(served.bundle.card, media_type="text/plain; charset=utf-8")


# Last: the catch-all must not shadow /ui/form.json and /ui/model-card.
@router.get("/ui/{name}")
async def asset(name: str) -> Response:
    if name not in STATIC or name == "index.html":
        raise HTTPException(404, f"no such file: {name}")
    return _static(name)
