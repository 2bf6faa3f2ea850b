"""`treesurv monitor drift` with its file I/O: read the log and the reference,
compare, write `drift.json` and the HTML page atomically."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from treesurv.core.files import write_json
from treesurv.inference.bundle import BundleError, read_bundle
from treesurv.monitoring.drift import DriftError, DriftReport, Thresholds, compare
from treesurv.monitoring.drift_report import render
from treesurv.monitoring.prediction_log.reader import read_log

PROFILE_FILE = "reference_profile.json"
EXIT_DRIFT = 3  # distinct from 1 (an error) so that automation can tell them apart
RELATIVE = re.compile(r"^(\d+)([dhm])$")


@dataclass(frozen=True)
class Reference:
    profile: dict[str, Any]
    model_version: str | None
    source: str


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
            bundle.json_file(PROFILE_FILE), bundle.version, f"{path} ({bundle.version})"
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
    if json_out is not None:
        write_json(document, json_out)
    if html_out is not None:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = html_out.with_name(f".{html_out.name}.tmp")
        tmp.write_text(render(report, context), encoding="utf-8")
        tmp.replace(html_out)
    return report, document
