"""`POST /ui/score`: the web page's spreadsheet upload, scored like `treesurv predict`.

The body is the file itself (CSV or XLSX, said by `Content-Type` or, for a generic
type, by the file name's extension); `?filename=` names it in messages and in the
scored file's name. The same batch scorer as `treesurv predict --on-error skip`
(`treesurv.inference.batch.score_upload`) scores it in a worker thread, off the event
loop, so the probes and the API keep answering. The answer is JSON: the report (the
command line's: row, column, value, rule) and the scored file, base64-encoded, so
that one request gives the page both and the download is byte for byte the file.

The body has its own limit (`max_upload_bytes`, enforced by `BodyLimit` before the
route runs) and the route its own gate (`max_uploads`) instead of the admission
queue of the prediction routes. pandas is imported here, inside the route: the
service's start-up stays free of it.
"""

from __future__ import annotations

import base64
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from treesurv.serving.admission import RETRY_AFTER_SECONDS, UploadGate
from treesurv.serving.deps import served_model
from treesurv.serving.http import json_response

PATH = "/ui/score"
router = APIRouter(include_in_schema=False)

# = treesurv.core.files.XLSX_MEDIA_TYPE (that module imports pandas; a test checks).
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_TYPES = frozenset({"text/csv", "application/csv", "text/plain"})
# Types that say nothing of the format (Windows gives a .csv file Excel's old type):
# then the file name's extension decides.
GENERIC_TYPES = frozenset({"", "application/octet-stream", "application/vnd.ms-excel"})
ACCEPTED = (
    f"a CSV file (text/csv, .csv) or an XLSX workbook ({XLSX_MEDIA_TYPE}, .xlsx), "
    "the file itself as the request body"
)


def _error(status: int, kind: str, msg: str, value: Any, allowed: str) -> Response:
    """One problem, in the shape of the service's other errors (and of its 413)."""
    item = {"field": "file", "value": value, "allowed": allowed, "msg": msg, "type": kind}
    response = json_response({"detail": [{**item, "loc": ["body"]}]}, status)
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def upload_kind(content_type: str, filename: str) -> Literal["csv", "xlsx"] | None:
    """csv, xlsx, or None (unsupported) from the Content-Type, else the extension."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in CSV_TYPES:
        return "csv"
    if media == XLSX_MEDIA_TYPE:
        return "xlsx"
    if media in GENERIC_TYPES:
        suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
        if suffix in (".csv", ".txt"):
            return "csv"
        if suffix == ".xlsx":
            return "xlsx"
    return None


@router.post(PATH)
async def score_file(
    request: Request,
    filename: Annotated[str, Query(max_length=255)] = "upload.csv",
) -> Response:
    """Score an uploaded CSV or XLSX file; bad rows are reported, the others scored."""
    content_type = request.headers.get("content-type", "")
    kind = upload_kind(content_type, filename)
    body = await request.body()  # read whole before any answer: the client reads it
    if kind is None:
        return _error(
            415,
            "unsupported_file_type",
            f"{filename}: cannot score a file sent as {content_type or 'no Content-Type'!r}; "
            + (
                "old binary Excel files (.xls) are not read: save it as .xlsx or CSV"
                if filename.lower().endswith(".xls")
                else f"send {ACCEPTED}"
            ),
            content_type,
            ACCEPTED,
        )
    if not body:
        return _error(400, "empty_file", f"{filename}: the file is empty", 0, ACCEPTED)
    served = served_model(request)
    gate: UploadGate = request.app.state.uploads
    if not gate.try_enter():
        return _error(
            503,
            "busy",
            f"busy: this worker is scoring {gate.limit} file(s) already; retry in "
            f"{RETRY_AFTER_SECONDS} s",
            None,
            "a retry",
        )
    try:
        # pandas and pyarrow: imported by the first upload, not at start-up.
        from treesurv.core.files import DataFileError
        from treesurv.inference import batch

        planning = served.classifier("planning")
        try:
            scored = await run_in_threadpool(
                batch.score_upload,
                body,
                filename,
                kind,
                served.bundle,
                served.predictor.compiled,
                planning=planning.compiled if planning is not None else None,
            )
        except DataFileError as exc:
            return _error(400, "unreadable_file", str(exc), filename, ACCEPTED)
        except batch.BatchError as exc:
            return _error(422, "unusable_file", str(exc), filename, _columns_needed())
    finally:
        gate.leave()
    result = scored.result
    # Counted like any route's predictions; not written to the prediction log (nor is
    # `treesurv predict`'s work), nor added to the probability histogram.
    request.app.state.metrics.count_predictions(PATH, result.scored)
    return json_response(
        {
            "filename": scored.filename,
            "media_type": scored.media_type,
            "content_base64": base64.b64encode(scored.content).decode("ascii"),
            "model_version": served.version,
            "model": result.model,
            "on_error": "skip",
            "rows": result.rows,
            "scored": result.scored,
            "rejected": result.rejected,
            "problems": result.issue_count,
            "summary": scored.report.summary(),
            "issues": [
                {"line": i.line, "column": i.column, "value": i.value, "rule": i.rule}
                for i in scored.report.issues
            ],
        }
    )


def _columns_needed() -> str:
    from treesurv.core import schema

    return (
        f"a header row with the ten input columns ({', '.join(schema.FEATURE_NAMES)}), or "
        f"only the design columns ({', '.join(schema.DESIGN)}) for the planning model; "
        "other columns are kept as they are"
    )
