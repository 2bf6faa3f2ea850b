"""Validation reports every kind of bad row with its line, column, value and rule."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.helpers import frame_of, good_row
from treesurv.cli.main import app
from treesurv.core import schema
from treesurv.core.validation import SCORING, RowIssue, validate, validate_file


def issues_of(frame: pd.DataFrame) -> list[RowIssue]:
    _, report = validate(frame, "test")
    return report.issues


def one_issue(frame: pd.DataFrame) -> RowIssue:
    issues = issues_of(frame)
    assert len(issues) == 1, issues
    return issues[0]


def test_valid_rows_pass(small_frame: pd.DataFrame) -> None:
    clean, report = validate(small_frame, "test")
    assert report.ok and report.issues == []
    assert len(clean) == 8
    assert clean["AMF"].dtype == float
    assert clean.loc[clean["Species"] == "Acer saccharum", "EMF"].isna().all()


def test_wrong_type_names_line_column_value(small_frame: pd.DataFrame) -> None:
    small_frame.loc[2, "AMF"] = "lots"
    issue = one_issue(small_frame)
    assert (issue.line, issue.column, issue.value) == (4, "AMF", "lots")
    assert issue.rule == "must be a number"


def test_unknown_category_lists_allowed(small_frame: pd.DataFrame) -> None:
    small_frame.loc[0, "Species"] = "Pinus strobus"
    issue = one_issue(small_frame)
    assert (issue.line, issue.column, issue.value) == (2, "Species", "Pinus strobus")
    for species in schema.SPECIES:
        assert species in issue.rule


@pytest.mark.parametrize(
    ("column", "value"), [("Light_ISF", "1.5"), ("AMF", "-3"), ("NSC", "140"), ("Phenolics", "-20")]
)
def test_out_of_range(small_frame: pd.DataFrame, column: str, value: str) -> None:
    small_frame.loc[5, column] = value
    issue = one_issue(small_frame)
    feature = schema.FEATURES_BY_NAME[column]
    assert (issue.line, issue.column, issue.value) == (7, column, value)
    assert issue.rule == f"must be {feature.allowed()}"


def test_duplicate_id_reports_both_rows(small_frame: pd.DataFrame) -> None:
    small_frame.loc[6, "No"] = cast(str, small_frame.loc[1, "No"])  # the ids are text
    issues = issues_of(small_frame)
    assert [(i.line, i.column) for i in issues] == [(3, "No"), (8, "No")]
    assert all("duplicate" in i.rule for i in issues)


@pytest.mark.parametrize("value", ["2", "-1", "0.5", "dead"])
def test_target_must_be_zero_or_one(small_frame: pd.DataFrame, value: str) -> None:
    small_frame.loc[3, "Event"] = value
    issue = one_issue(small_frame)
    assert (issue.line, issue.column, issue.value) == (5, "Event", value)


def test_empty_target_is_dropped_with_note(small_frame: pd.DataFrame) -> None:
    small_frame.loc[4, "Event"] = None
    clean, report = validate(small_frame, "test")
    assert report.ok
    assert len(clean) == 7 and 4 not in clean.index
    assert report.notes == ["dropped 1 row(s) with an empty target (line 6)"]


def test_missing_required_value(small_frame: pd.DataFrame) -> None:
    small_frame.loc[1, "Lignin"] = None
    issue = one_issue(small_frame)
    assert (issue.line, issue.column, issue.value) == (3, "Lignin", "(empty)")
    assert "required" in issue.rule


def test_emf_rule_by_species() -> None:
    # EMF given for an AMF species, and missing for an EMF species.
    frame = frame_of(
        good_row(No="1", Species="Acer saccharum", Soil="Quercus alba", EMF="12"),
        good_row(No="2", Species="Quercus alba", Soil="Quercus rubra", EMF=None),
    )
    issues = issues_of(frame)
    assert [(i.line, i.column) for i in issues] == [(2, "Species+EMF"), (3, "Species+EMF")]
    assert issues[0].value == "Species=Acer saccharum, EMF=12"


def test_soil_consistency_rules() -> None:
    frame = frame_of(
        good_row(No="1", Soil="Sterile", Sterile="Non-Sterile", Conspecific="Sterilized"),
        good_row(
            No="2", Species="Quercus rubra", Soil="Quercus rubra", Conspecific="Heterospecific"
        ),
    )
    rules = sorted((i.line, i.rule.split(" ")[0]) for i in issues_of(frame))
    assert rules == [(2, "Sterile"), (3, "Conspecific")]


def test_every_problem_reported_at_once(small_frame: pd.DataFrame) -> None:
    small_frame.loc[0, "AMF"] = "x"
    small_frame.loc[1, "Soil"] = "Moss"
    small_frame.loc[2, "Light_ISF"] = "7"
    small_frame.loc[3, "Event"] = "3"
    clean, report = validate(small_frame, "test")
    assert sorted(cast(int, i.line) for i in report.issues) == [2, 3, 4, 5]  # row issues
    assert len(clean) == 4 and not report.ok


def test_missing_column_is_fatal(small_frame: pd.DataFrame) -> None:
    _, report = validate(small_frame.drop(columns=["NSC", "Event"]), "test")
    assert report.fatal == "missing required column(s): NSC, Event"


def test_no_rows_is_fatal(small_frame: pd.DataFrame) -> None:
    _, report = validate(small_frame.iloc[0:0], "test")
    assert report.fatal == "the file has no data rows"


def test_scoring_needs_neither_id_nor_target(small_frame: pd.DataFrame) -> None:
    frame = small_frame.drop(columns=["No", "Event"])
    clean, report = validate(frame, "test", SCORING)
    assert report.ok and len(clean) == 8


# ----------------------------------------------------------------- files


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the file is empty"),
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00",
            "not a CSV file (it contains binary data)",
        ),
        (b"\xff\xfe\xfa\xfb" * 100, "not a CSV file (not UTF-8 text at byte 0)"),
        (
            b"just some prose without commas\nand another line\n",
            "not a CSV file (found a single column, no commas)",
        ),
    ],
)
def test_unreadable_files_get_one_line_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    _, report = validate_file(write(tmp_path, "f.csv", content))
    assert report.fatal == reason


def test_broken_parquet(tmp_path: Path) -> None:
    _, report = validate_file(write(tmp_path, "f.parquet", b"PAR1 not really"))
    assert report.fatal is not None and report.fatal.startswith("not a readable Parquet file")


def test_ragged_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "f.csv", b"a,b\n1,2\n3,4,5,6\n")
    _, report = validate_file(path)
    assert report.fatal is not None and report.fatal.startswith("not a valid CSV file")


def test_header_only_file(tmp_path: Path, small_frame: pd.DataFrame) -> None:
    path = tmp_path / "f.csv"
    small_frame.iloc[0:0].to_csv(path, index=False)
    _, report = validate_file(path)
    assert report.fatal == "the file has no data rows"


def test_parquet_file_validates(tmp_path: Path, small_frame: pd.DataFrame) -> None:
    path = tmp_path / "f.parquet"
    clean, _ = validate(small_frame)
    clean.to_parquet(path)
    _, report = validate_file(path)
    assert report.ok


# ------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_validate_reports_and_fails(tmp_path: Path, small_frame: pd.DataFrame) -> None:
    small_frame.loc[3, "Species"] = "Pinus"
    path = tmp_path / "bad.csv"
    small_frame.to_csv(path, index=False)
    report_path = tmp_path / "report.json"
    result = runner.invoke(app, ["data", "validate", str(path), "--report", str(report_path)])
    assert result.exit_code == 1
    assert "Pinus" in result.output and "1 problem(s) in 1 row(s) of 8" in result.output
    saved = pd.read_json(report_path, typ="series")
    assert saved["ok"] is False or saved["ok"] == False  # noqa: E712 - JSON false
    assert saved["issues"][0]["line"] == 5


def test_cli_validate_not_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "image.csv", b"\x00\x01\x02binary")
    result = runner.invoke(app, ["data", "validate", str(path)])
    assert result.exit_code == 1
    assert "unusable: not a CSV file (it contains binary data)" in result.output
    assert "Traceback" not in result.output


def test_cli_validate_writes_clean_rows(tmp_path: Path, small_frame: pd.DataFrame) -> None:
    small_frame.loc[0, "Event"] = None
    path, out = tmp_path / "ok.csv", tmp_path / "clean.parquet"
    small_frame.to_csv(path, index=False)
    result = runner.invoke(app, ["data", "validate", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "dropped 1 row(s) with an empty target" in result.output
    assert len(pd.read_parquet(out)) == 7
