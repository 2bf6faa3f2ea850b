"""The spreadsheet upload in process (no server, no browser): what `POST /ui/score`
takes, its own body limit and gate, the names it gives, and the batch scorer's XLSX
reader refusing what it cannot read. The real server and the page are tested in
test_web_browser.py, against `treesurv predict`."""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.helpers import run_fresh_python, synthetic_raw
from treesurv.core import files, schema
from treesurv.core.validation import PLANNING_SCORING, validate
from treesurv.inference import batch
from treesurv.serving.routes import upload

XLSX = files.XLSX_MEDIA_TYPE
UPLOAD_LIMIT = 64 * 1024
BODY_LIMIT = 4096


@pytest.fixture
def client(make_client: Callable[..., TestClient], bundle_four: Path) -> TestClient:
    return make_client(bundle_four, max_upload_bytes=UPLOAD_LIMIT, max_body_bytes=BODY_LIMIT)


def raw_csv(rows: int, seed: int = 3) -> bytes:
    """Rows as the study writes them: every column, "NA" where EMF is missing."""
    return synthetic_raw(rows, seed).to_csv(index=False).encode()


def post(client: TestClient, data: bytes, kind: str = "text/csv", name: str = "s.csv") -> Any:
    return client.post(
        "/ui/score", params={"filename": name}, content=data, headers={"Content-Type": kind}
    )


def test_every_column_kept_and_three_added(client: TestClient) -> None:
    data = raw_csv(40)
    r = post(client, data, "text/csv; charset=utf-8", "plot 3.csv")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["filename"] == "plot_3.scored.csv" and answer["model_version"] == "3.0.0"
    scored = pd.read_csv(io.BytesIO(base64.b64decode(answer["content_base64"])), dtype=str)
    given = pd.read_csv(io.BytesIO(data), dtype=str)
    assert list(scored.columns) == [*given.columns, *batch.OUTPUT_COLUMNS]
    pd.testing.assert_frame_equal(scored[given.columns], given)
    assert scored["death_probability"].astype(float).between(0, 1).all()
    metrics = client.get("/metrics").text
    assert 'treesurv_predictions_total{endpoint="/ui/score"} 40.0' in metrics


def test_the_upload_has_its_own_limit(client: TestClient) -> None:
    data = raw_csv(200)
    assert BODY_LIMIT < len(data) < UPLOAD_LIMIT
    assert post(client, data).status_code == 200  # past the API's body limit: a file
    big = raw_csv(600)
    r = post(client, big)
    assert r.status_code == 413
    item = r.json()["detail"][0]
    assert item["type"] == "file_too_large" and item["value"] == len(big)
    assert f"file too large: {len(big)} bytes" in item["msg"]
    assert f"the limit is {UPLOAD_LIMIT} bytes (0.1 MiB)" in item["msg"]
    # The other routes keep theirs.
    r = client.post("/v1/predictions", content=b" " * (BODY_LIMIT + 1))
    assert r.status_code == 413 and r.json()["detail"][0]["type"] == "body_too_large"
    assert client.get("/ui/form.json").json()["upload"]["max_bytes"] == UPLOAD_LIMIT


def test_a_busy_worker_answers_503(client: TestClient) -> None:
    gate = client.app.state.uploads  # type: ignore[attr-defined]
    gate.busy = gate.limit
    try:
        r = post(client, raw_csv(5))
    finally:
        gate.busy = 0
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["detail"][0]["type"] == "busy"
    assert post(client, raw_csv(5)).status_code == 200


@pytest.mark.parametrize(
    ("content_type", "name", "kind"),
    [
        ("text/csv", "a.xlsx", "csv"),  # the type says it
        ("text/plain", "a", "csv"),
        (XLSX, "a.csv", "xlsx"),
        ("application/octet-stream", "a.XLSX", "xlsx"),  # a generic type: the extension
        ("application/vnd.ms-excel", "C:\\data\\a.csv", "csv"),  # Windows' type for .csv
        ("", "a.csv", "csv"),
        ("application/octet-stream", "a.parquet", None),
        ("application/vnd.ms-excel", "a.xls", None),
        ("application/json", "a.csv", None),
    ],
)
def test_upload_kind(content_type: str, name: str, kind: str | None) -> None:
    assert upload.upload_kind(content_type, name) == kind


def test_the_route_names_the_batch_scorers_xlsx_type() -> None:
    # The route keeps its own copy (core.files imports pandas, start-up does not).
    assert upload.XLSX_MEDIA_TYPE == files.XLSX_MEDIA_TYPE


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("trees.csv", "trees.scored.csv"),
        ("../../etc/passwd.csv", "passwd.scored.csv"),
        ("C:\\Users\\me\\my plan (2).csv", "my_plan__2.scored.csv"),
        ("", "seedlings.scored.csv"),
        ("...", "seedlings.scored.csv"),
    ],
)
def test_scored_names_are_plain(given: str, name: str) -> None:
    assert batch.scored_name(given, "csv") == name


def workbook(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "in.xlsx"
    frame.to_excel(path, index=False)
    return path


def test_xlsx_cells_read_as_text(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, None], "c": ["007", "x"]})
    text = batch.read_xlsx_text(workbook(tmp_path, frame))
    assert text.to_dict("list") == {"a": ["1", "2"], "b": ["0.5", ""], "c": ["007", "x"]}
    # Back into a workbook, numbers are numbers again and "007" stays text.
    assert [batch._excel_value(v) for v in ("1", "0.5", "007", "1e3", "")] == [
        1,
        0.5,
        "007",
        "1e3",
        None,
    ]


def test_xlsx_rows_are_the_sheets_rows(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in (["a", None, "a"], [1, 2, 3], [None, None, None], [4, 5], [None]):
        sheet.append(row)
    path = tmp_path / "in.xlsx"
    book.save(path)
    text = batch.read_xlsx_text(path)
    # An empty row inside the data stays (row 3 of the sheet is line 3), the empty
    # rows at the end go; names as pandas gives a CSV's.
    assert list(text.columns) == ["a", "Unnamed: 1", "a.1"]
    assert text.values.tolist() == [["1", "2", "3"], ["", "", ""], ["4", "5", ""]]


def test_xlsx_that_is_not_a_workbook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "in.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "not a workbook")
    with pytest.raises(files.DataFileError, match="without a workbook"):
        batch.read_xlsx_text(path)
    # A workbook that would unpack past the bound is refused before it is parsed.
    path = workbook(tmp_path, pd.DataFrame({"a": ["x" * 1000] * 50}))
    monkeypatch.setattr(batch, "MAX_XLSX_UNPACKED", 10_000)
    with pytest.raises(files.DataFileError, match="would unpack to"):
        batch.read_xlsx_text(path)
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100))
    with pytest.raises(files.DataFileError, match=r"old binary Excel file \(\.xls\)"):
        batch.read_xlsx_text(path)


def test_a_planning_file_is_checked_on_the_design_fields() -> None:
    assert {r.name for r in PLANNING_SCORING.rules()} == {
        "sterile_matches_soil",
        "conspecific_matches_soil",
    }
    frame = pd.DataFrame(
        {
            "Species": ["Quercus alba", "Quercus alba"],
            "Light_ISF": ["0.1", "0.1"],
            "Soil": ["Quercus alba", "Quercus alba"],
            "Sterile": ["Non-Sterile", "Non-Sterile"],
            "Conspecific": ["Conspecific", "Heterospecific"],
        }
    )
    clean, report = validate(frame, "plan.csv", PLANNING_SCORING)
    assert len(clean) == 1
    assert [(i.line, i.column) for i in report.issues] == [(3, "Species+Soil+Conspecific")]
    assert not set(schema.TRAITS) & set(clean.columns)


def test_start_up_imports_no_pandas(bundle_four: Path) -> None:
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from treesurv.serving.app import create_app\n"
        "from treesurv.serving.settings import Settings\n"
        f"app = create_app(Settings(model_dir={str(bundle_four)!r}, watch_interval=0))\n"
        "with TestClient(app) as c:\n"
        "    assert c.get('/ui/form.json').status_code == 200\n"
        "    assert c.get('/readyz').status_code == 200\n"
        "bad = sorted(m for m in ('pandas', 'pyarrow', 'openpyxl') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    run_fresh_python(code)


def test_the_dask_engine_leaves_workbooks_to_the_local_one(tmp_path: Path) -> None:
    from treesurv.inference.dask_batch import expand_inputs

    path = workbook(tmp_path, pd.DataFrame({"a": [1]}))
    with pytest.raises(files.DataFileError, match="without --engine dask"):
        expand_inputs(path)
