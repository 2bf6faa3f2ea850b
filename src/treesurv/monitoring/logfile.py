"""Reading the prediction log back (for drift checks and audits).

Lines that are not complete JSON objects — the last line of a file still being
written, or one cut by a full disk — are skipped and counted, never fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from treesurv import schema
from treesurv.monitoring.predlog import FILE_PREFIX, FILE_SUFFIX

COLUMNS = (
    "time",
    "request_id",
    "item",
    "model_version",
    *schema.FEATURE_NAMES,
    "death_probability",
    "latency_ms",
)


class LogError(Exception):
    """The log directory cannot be read; the message says why."""


@dataclass(frozen=True)
class LogRead:
    frame: pd.DataFrame
    files: int
    bad_lines: int


def log_files(directory: Path | str) -> list[Path]:
    directory = Path(directory)
    if not directory.exists():
        raise LogError(f"{directory}: no such prediction log directory")
    if not directory.is_dir():
        raise LogError(f"{directory}: not a directory")
    return sorted(directory.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}"))


def read_log(
    directory: Path | str,
    since: datetime | None = None,
    until: datetime | None = None,
) -> LogRead:
    """All logged predictions with `since <= time < until` (UTC), oldest first."""
    since = _utc(since) if since else None
    until = _utc(until) if until else None
    rows: list[dict[str, Any]] = []
    bad = used = 0
    for path in log_files(directory):
        try:
            # A file last written before `since` holds nothing newer.
            if since and datetime.fromtimestamp(path.stat().st_mtime, UTC) < since:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise LogError(f"{path}: cannot read ({exc.strerror or exc})") from None
        used += 1
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if not isinstance(row, dict) or "time" not in row or "death_probability" not in row:
                bad += 1
                continue
            rows.append(row)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["time"] = pd.to_datetime(frame["time"], utc=True, errors="coerce")
    bad += int(frame["time"].isna().sum())
    frame = frame[frame["time"].notna()]
    if since is not None:
        frame = frame[frame["time"] >= pd.Timestamp(since)]
    if until is not None:
        frame = frame[frame["time"] < pd.Timestamp(until)]
    for name in (*schema.NUMERIC, "death_probability", "latency_ms"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    frame = frame.sort_values("time", kind="stable").reset_index(drop=True)
    return LogRead(frame, used, bad)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
