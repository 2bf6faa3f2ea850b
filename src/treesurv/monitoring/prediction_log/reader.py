"""Reading the prediction log back (for drift checks and audits).

The log holds one line per request (see `treesurv.monitoring.prediction_log.queue`); the frame
read from it has one row per scored instance, `COLUMNS`. Lines that are not
complete JSON objects of that shape — the last line of a file still being
written, or one cut by a full disk — are skipped and counted, never fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from treesurv.core import schema
from treesurv.core.errors import InputError
from treesurv.monitoring.prediction_log.lines import FILE_PREFIX, FILE_SUFFIX

COLUMNS = (
    "time",
    "request_id",
    "item",
    "model_version",
    *schema.FEATURE_NAMES,
    "death_probability",
    "latency_ms",
)


class LogError(InputError):
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
        # Lines end at "\n" only: str.splitlines would also cut at U+2028, U+0085
        # and friends, which JSON carries unescaped inside strings.
        for line in text.split("\n"):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                bad += 1
                continue
            got = rows_of(row)
            if got is None:
                bad += 1
                continue
            rows += got
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


def rows_of(line: Any) -> list[dict[str, Any]] | None:
    """The instance rows of one log line; None when it is not a log line."""
    if not isinstance(line, dict) or "time" not in line or "death_probability" not in line:
        return None
    request = line.get("request")
    instances = request.get("instances") if isinstance(request, dict) else None
    probabilities = line["death_probability"]
    if (
        not isinstance(instances, list)
        or not isinstance(probabilities, list)
        or len(instances) != len(probabilities)
        or not all(isinstance(i, dict) for i in instances)
    ):
        return None
    time, request_id, version = line["time"], line.get("request_id"), line.get("model_version")
    latency = line.get("latency_ms")
    return [
        {
            "time": time,
            "request_id": request_id,
            "item": item,
            "model_version": version,
            **{name: instance.get(name) for name in schema.FEATURE_NAMES},
            "death_probability": p,
            "latency_ms": latency,
        }
        for item, (instance, p) in enumerate(zip(instances, probabilities, strict=True))
    ]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
