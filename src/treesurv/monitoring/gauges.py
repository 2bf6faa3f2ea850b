"""The latest drift report as Prometheus gauges, for the API's /metrics.

The drift job (`treesurv monitor drift`) writes `reports/drift.json`; the API
reads it at scrape time (re-parsed only when the file changes) and exposes the
figures. Only the standard library and prometheus-client: the service image
has no SciPy. Register once: `registry.register(DriftCollector(path))`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

PREDICTION_LABEL = "death_probability"


@dataclass(frozen=True)
class DriftFigures:
    """What the gauges show: per feature (and `death_probability` for the
    predictions) the PSI, the test's p-value, whether it is flagged and its
    graded verdict (0 ok, 1 warn, 2 drift)."""

    generated: float  # unix time the report was computed
    status: str
    detected: bool
    rows: int
    psi: dict[str, float]
    p_value: dict[str, float]
    flagged: dict[str, bool]
    verdict: dict[str, int]


def figures_from_report(report: dict[str, Any]) -> DriftFigures:
    entries = dict(report.get("features") or {})
    if report.get("prediction"):
        entries[PREDICTION_LABEL] = report["prediction"]
    return DriftFigures(
        generated=datetime.fromisoformat(str(report["generated"])).timestamp(),
        status=str(report["status"]),
        detected=bool(report["drift_detected"]),
        rows=int(report["rows"]),
        psi={k: float(v["psi"]) for k, v in entries.items()},
        p_value={k: float(v["p_value"]) for k, v in entries.items()},
        flagged={k: bool(v["drifted"]) for k, v in entries.items()},
        verdict={k: _level(v) for k, v in entries.items()},
    )


VERDICT_LEVELS = {"ok": 0, "warn": 1, "drift": 2}


def _level(entry: dict[str, Any]) -> int:
    # A report written before graded verdicts has only `drifted`.
    return VERDICT_LEVELS.get(
        str(entry.get("verdict")), 2 if entry["drifted"] else VERDICT_LEVELS["ok"]
    )


def latest_drift(path: Path | str) -> DriftFigures | None:
    """The figures of the drift report at `path`; None when there is none yet or
    it cannot be read (logged, never raised: /metrics must keep working)."""
    try:
        return figures_from_report(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("drift report %s is unreadable: %s", path, exc)
        return None


class DriftCollector(Collector):
    """A prometheus-client collector over the drift report file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._figures: DriftFigures | None = None

    def _current(self) -> DriftFigures | None:
        try:
            st = os.stat(self.path)
        except OSError:
            self._stamp, self._figures = None, None
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._figures, self._stamp = latest_drift(self.path), stamp
        return self._figures

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fig = self._current()
        if fig is None:
            return
        yield GaugeMetricFamily(
            "treesurv_drift_detected",
            "1 when the latest drift report flagged a feature or the predictions.",
            value=float(fig.detected),
        )
        yield GaugeMetricFamily(
            "treesurv_drift_report_timestamp_seconds",
            "When the latest drift report was computed (unix time).",
            value=fig.generated,
        )
        yield GaugeMetricFamily(
            "treesurv_drift_rows", "Logged predictions compared in the latest report.", fig.rows
        )
        for name, doc, values in (
            ("treesurv_drift_psi", "Population stability index per feature.", fig.psi),
            ("treesurv_drift_p_value", "KS / chi-square p-value per feature.", fig.p_value),
            (
                "treesurv_drift_flagged",
                "1 when the feature passed both drift thresholds.",
                {k: float(v) for k, v in fig.flagged.items()},
            ),
            (
                "treesurv_drift_verdict",
                "Graded verdict per feature: 0 ok, 1 warn, 2 drift.",
                {k: float(v) for k, v in fig.verdict.items()},
            ),
        ):
            family = GaugeMetricFamily(name, doc, labels=["feature"])
            for feature, value in sorted(values.items()):
                family.add_metric([feature], float(value))
            yield family
