"""The study report at `/explore`: the page, its numbers (`/explore.json`) and its
figures (`/explore-*.png`), as the pipeline's `explore` stage wrote them and the
`package` stage put them in the bundle. They are answered from the served bundle's
verified bytes; nothing is computed here. A bundle without a report (made before
the stage existed) answers 404 saying so."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response

from treesurv.inference.bundle import EXPLORE_HTML, EXPLORE_JSON
from treesurv.serving.deps import served_model

router = APIRouter(include_in_schema=False)


def _report_file(request: Request, name: str, media_type: str) -> Response:
    served = served_model(request)
    data = served.bundle.explore_file(name)
    if data is None:
        if served.bundle.explore_file(EXPLORE_HTML) is None:
            raise HTTPException(
                404,
                f"the served model ({served.name} {served.version}) has no study report: "
                "its bundle was built without the pipeline's explore stage "
                "(`dvc repro` builds one that has it)",
            )
        raise HTTPException(404, f"the study report has no file {name!r}")
    return Response(data, media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.get("/explore")
def report_page(request: Request) -> Response:
    """The study report as a page (its figures are linked by relative name)."""
    return _report_file(request, EXPLORE_HTML, "text/html; charset=utf-8")


@router.get("/explore.json")
def report_numbers(request: Request) -> Response:
    """Every section of the report: title, sentence, the numbers behind it."""
    return _report_file(request, EXPLORE_JSON, "application/json")


@router.get("/explore-{figure}.png")
def report_figure(request: Request, figure: str) -> Response:
    return _report_file(request, f"explore-{figure}.png", "image/png")
