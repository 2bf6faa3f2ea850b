"""`treesurv monitor drift` with its file I/O: read the log (or a file of
measurements) and the reference, compare, write `drift.json` and the HTML page
atomically.

A file (`--current`: CSV, Parquet or JSON Lines) is checked row by row as
`treesurv predict` checks it (`treesurv.inference.batch.check_chunk`): with
`on_error="fail"` any bad row stops the check (`BatchError`, nothing written);
with `"skip"` the good rows are compared and the bad ones listed in the report.
Its rows carry no predictions: when the reference is a bundle they are scored
with the bundle's own classifier, the model whose out-of-fold predictions the
profile holds, so the predictions are compared as the log's are.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from treesurv.core import schema
from treesurv.core.files import DataFileError, is_parquet, read_table, sniff_text, write_json
from treesurv.core.validation import RowIssue
from treesurv.inference.batch import BatchError, BatchResult, OnError, check_chunk
from treesurv.inference.bundle import Bundle, BundleError, read_bundle
from treesurv.monitoring.drift import PREDICTION, DriftError, DriftReport, Thresholds, compare
from treesurv.monitoring.drift_report import render
from treesurv.monitoring.prediction_log.reader import read_log

PROFILE_FILE = "reference_profile.json"
EXIT_DRIFT = 3  # distinct from 1 (an error) so that automation can tell them apart
RELATIVE = re.compile(r"^(\d+)([dhm])$")
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson", ".json")
NOT_AN_OBJECT = "must be a JSON object with the features as keys"


@dataclass(frozen=True)
class Reference:
    profile: dict[str, Any]
    model_version: str | None
    source: str
    bundle: Bundle | None = None  # a bundle reference: its model scores a file's rows


def load_reference(path: Path) -> Reference:
    """A bundle directory (verified; its profile and model version) or a profile JSON."""
    if path.is_dir():
        try:
            bundle = read_bundle(path)
        except BundleError as exc:
            raise DriftError(str(exc)) from None
        if PROFILE_FILE not in bundle.files:
            raise DriftError(f"{path}: the bundle has no {PROFILE_FILE}")
        return Reference(
            bundle.json_file(PROFILE_FILE), bundle.version, f"{path} ({bundle.version})", bundle
        )
    try:
        profile = json.loads(path.read_text())
    except FileNotFoundError:
        raise DriftError(
            f"{path}: no such reference (a bundle directory or a profile JSON)"
        ) from None
    except (OSError, ValueError) as exc:
        raise DriftError(f"{path}: not a readable reference profile ({exc})") from None
    if not isinstance(profile, dict):
        raise DriftError(f"{path}: not a reference profile")
    return Reference(profile, None, str(path))


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """An ISO date or date-time (UTC unless it says otherwise), or `7d` / `12h` / `30m` ago."""
    now = now or datetime.now(UTC)
    match = RELATIVE.match(text.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        delta = {"d": timedelta(days=amount), "h": timedelta(hours=amount)}.get(
            unit, timedelta(minutes=amount)
        )
        return now - delta
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DriftError(
            f"{text!r} is not a date: use YYYY-MM-DD, an ISO date-time or 7d / 12h / 30m"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def run_drift(
    log_dir: Path,
    reference_path: Path,
    thresholds: Thresholds,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    json_out: Path | None = None,
    html_out: Path | None = None,
) -> tuple[DriftReport, dict[str, Any]]:
    """Compare the log with the reference; write the reports; return both forms."""
    reference = load_reference(reference_path)
    read = read_log(log_dir, since, until)
    report = compare(reference.profile, read.frame, thresholds, reference.model_version)
    versions = read.frame["model_version"].value_counts().to_dict() if len(read.frame) else {}
    context = {
        "log": str(log_dir),
        "since": since.isoformat(timespec="seconds") if since else None,
        "until": until.isoformat(timespec="seconds") if until else None,
        "reference": reference.source,
        "reference rows": reference.profile.get("rows"),
        "log files": read.files,
        "unreadable lines": read.bad_lines,
        "model versions served": ", ".join(f"{k}: {v}" for k, v in versions.items()) or None,
    }
    document = {**report.to_dict(), "context": context}
    if read.bad_lines:
        report.notes.append(f"{read.bad_lines} unreadable log line(s) skipped")
        document["notes"] = report.notes
    _write(report, document, context, json_out, html_out)
    return report, document


def _write(
    report: DriftReport,
    document: dict[str, Any],
    context: dict[str, Any],
    json_out: Path | None,
    html_out: Path | None,
    problems: list[RowIssue] | None = None,
) -> None:
    if json_out is not None:
        write_json(document, json_out)
    if html_out is not None:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = html_out.with_name(f".{html_out.name}.tmp")
        tmp.write_text(render(report, context, problems), encoding="utf-8")
        tmp.replace(html_out)


# ------------------------------------------------------------ a file of measurements


@dataclass
class CurrentRead:
    """The rows of a file that passed the checks (typed, the ten features), and
    what was wrong with the others (`result`: as `treesurv predict` reports it)."""

    frame: pd.DataFrame
    format: str  # csv | parquet | jsonl
    result: BatchResult = field(default_factory=BatchResult)


def file_format(path: Path) -> str:
    if is_parquet(path):
        return "parquet"
    if path.suffix.lower() in JSON_LINES_SUFFIXES:
        return "jsonl"
    return "csv"


def read_current(path: Path, on_error: OnError = "fail") -> CurrentRead:
    """Read and check a CSV, Parquet or JSON Lines file of measurements.

    Raises `DataFileError` for a file that cannot be read at all, and
    `BatchError` for missing feature columns or, with `on_error="fail"`, any bad
    row (its `result` lists them, with their lines, columns, values and rules).
    Columns other than the ten features are ignored.
    """
    fmt = file_format(path)
    if fmt == "jsonl":
        raw, lines, unreadable = _json_lines(path)
    else:
        raw = read_table(path)
        lines, unreadable = None, []
    features = list(schema.FEATURE_NAMES)
    # `check_chunk` numbers rows from `first_line`: 2 for a CSV or Parquet file, as
    # `treesurv predict` does (the header is line 1); for JSON Lines the row's
    # position, mapped to its line below.
    part = check_chunk(raw, features, first_line=0 if lines else 2, source=path, output=path)
    issues = part.issues
    if lines is not None:
        issues = [
            RowIssue(lines[i.line], i.column, i.value, i.rule) if i.line is not None else i
            for i in issues
        ]
    issues = sorted([*unreadable, *issues], key=lambda i: (i.line or 0, i.column))
    result = BatchResult(rows=part.rows + len(unreadable), scored=len(part.inputs))
    result.note(issues)
    result.rejected = len({i.line for i in issues})
    if issues and on_error == "fail":
        raise BatchError(
            f"{path}: {result.issue_count} problem(s); no drift check was made "
            "(--on-error skip checks the good rows)",
            result,
        )
    return CurrentRead(part.inputs.reset_index(drop=True), fmt, result)


def _json_lines(path: Path) -> tuple[pd.DataFrame, list[int], list[RowIssue]]:
    """The objects of a JSON Lines file as text cells (as a CSV's: validation then
    reports a value exactly as written), the line of each, and the lines that are
    not JSON objects."""
    if not path.exists():
        raise DataFileError(f"{path}: no such file")
    sniff_text(path)
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    bad: list[RowIssue] = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            if not isinstance(value, dict):
                if number == 1 and text.startswith("["):
                    raise DataFileError(f"{path}: a JSON array; JSON Lines has one object per line")
                bad.append(RowIssue(number, "(line)", _clip(text), NOT_AN_OBJECT))
                continue
            records.append({k: _cell(v) for k, v in value.items()})
            lines.append(number)
    if not records:
        if bad:
            first = bad[0]
            raise DataFileError(
                f"{path}: not JSON Lines (line {first.line}: {first.value} is not an object)"
            )
        raise DataFileError(f"{path}: the file is empty")
    return pd.DataFrame.from_records(records), lines, bad


def _cell(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_file_drift(
    current: Path,
    reference_path: Path,
    thresholds: Thresholds,
    *,
    on_error: OnError = "fail",
    json_out: Path | None = None,
    html_out: Path | None = None,
) -> tuple[DriftReport, dict[str, Any], CurrentRead]:
    """Compare a file of measurements with the reference; write the reports."""
    reference = load_reference(reference_path)
    read = read_current(current, on_error)
    frame = read.frame
    notes: list[str] = []
    if reference.bundle is None:
        scored = "not available (the reference is a profile, not a bundle with its model)"
        notes.append(f"prediction drift not checked: {scored}")
    elif "prediction" not in reference.profile:
        scored = "not available (the reference has no prediction profile)"
    else:
        compiled = reference.bundle.classifier("full")
        proba = (
            compiled.proba_columns(frame[list(compiled.features)]) if len(frame) else np.empty(0)
        )
        frame = frame.assign(**{PREDICTION: np.asarray(proba, dtype=float)})
        frame["model_version"] = reference.bundle.version
        scored = f"scored with the reference's model {reference.bundle.version}"
    report = compare(reference.profile, frame, thresholds, reference.model_version, source="file")
    result = read.result
    if result.rejected:
        report.notes.append(
            f"{result.rejected} of {result.rows} row(s) left out: {result.issue_count} "
            "problem(s), listed in the report"
        )
    report.notes += [n for n in notes if report.status != "insufficient_data"]
    context = {
        "current": str(current),
        "format": read.format,
        "reference": reference.source,
        "reference rows": reference.profile.get("rows"),
        "rows read": result.rows,
        "rows left out": result.rejected,
        "predictions": scored,
    }
    document = {
        **report.to_dict(),
        "context": context,
        "rejected_rows": result.rejected,
        "problem_count": result.issue_count,
        "problems": [
            {"line": i.line, "column": i.column, "value": i.value, "rule": i.rule}
            for i in result.issues
        ],
    }
    _write(report, document, context, json_out, html_out, result.issues)
    return report, document, read
