"""The graded verdict per column (ok / warn / drift): the pure rule, its thresholds
from params.yaml, the report and the gauges (fast, in memory)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from treesurv.core.config import MonitorParams, Params
from treesurv.core.files import write_json
from treesurv.core.profile import reference_profile
from treesurv.monitoring.drift import Thresholds, compare, verdict
from treesurv.monitoring.drift_report import render
from treesurv.monitoring.gauges import DriftCollector

RULE = {"psi_threshold": 0.2, "p_threshold": 0.01, "warn_psi": 0.1, "warn_p_value": 0.001}


@pytest.mark.parametrize(
    ("psi", "p", "expected"),
    [
        (0.0, 1.0, "ok"),
        (0.5, 0.5, "ok"),  # a large PSI that sampling noise explains (small batch)
        (0.05, 1e-12, "ok"),  # significant but negligible (large batch)
        (0.15, 0.005, "ok"),  # moderate, not significant enough for a warning
        (0.15, 6e-5, "warn"),  # the Light_ISF +0.2 sd over 600 rows
        (0.1, 0.000999, "warn"),  # both warn bounds are inclusive / strict as written
        (0.0999, 1e-9, "ok"),
        (0.2, 0.0099, "drift"),  # the drift rule is unchanged
        (0.3, 1e-9, "drift"),
        (0.25, 0.02, "ok"),
    ],
)
def test_the_rule(psi: float, p: float, expected: str) -> None:
    assert verdict(psi, p, **RULE) == expected
    assert Thresholds.from_params().verdict(psi, p) == expected


def test_without_warn_thresholds_the_rule_is_the_old_one() -> None:
    for psi, p in ((0.15, 1e-9), (0.3, 1e-9), (0.3, 0.5)):
        old = "drift" if psi >= 0.2 and p < 0.01 else "ok"
        assert verdict(psi, p, psi_threshold=0.2, p_threshold=0.01) == old


def test_predictions_use_their_own_drift_threshold() -> None:
    t = Thresholds.from_params(prediction_psi_threshold=0.4)
    assert t.verdict(0.3, 1e-9) == "drift"
    assert t.verdict(0.3, 1e-9, prediction=True) == "warn"


def test_thresholds_from_params() -> None:
    assert MonitorParams().warn_psi_threshold == 0.1 and MonitorParams().warn_p_value == 0.001
    monitor = Params.parse({"monitor": {"warn_psi_threshold": 0.15, "warn_p_value": 1e-4}}).monitor
    t = Thresholds.from_params(monitor)
    assert (t.warn_psi, t.warn_p_value) == (0.15, 1e-4)
    assert (t.psi, t.p_value, t.prediction_psi, t.min_rows) == (0.2, 0.01, 0.2, 200)
    committed = Params.load(Path(__file__).resolve().parents[2] / "params.yaml").monitor
    assert committed == MonitorParams()  # params.yaml states the defaults


def frame(n: int, seed: int, nsc_shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    species = rng.choice(["Quercus alba", "Quercus rubra"], n)
    return pd.DataFrame(
        {
            "Species": species,
            "Light_ISF": rng.uniform(0.03, 0.17, n),
            "Soil": "Sterile",
            "Sterile": "Sterile",
            "Conspecific": "Sterilized",
            "AMF": rng.uniform(0, 100, n),
            "EMF": rng.uniform(0, 60, n),
            "Phenolics": rng.normal(2.0, 1.0, n),
            "Lignin": rng.normal(15.0, 4.0, n),
            "NSC": rng.normal(15.0 + nsc_shift * 3.0, 3.0, n),
        }
    )


def test_report_gauges_and_page_carry_the_warning(tmp_path: Path) -> None:
    profile = reference_profile(frame(3000, 0))
    report = compare(profile, frame(600, 1, nsc_shift=0.4), Thresholds.from_params())
    nsc = report.features["NSC"]
    assert nsc.verdict == "warn" and not nsc.drifted, (nsc.psi, nsc.p_value)
    assert report.status == "ok" and not report.drift_detected and report.verdict == "warn"
    assert report.warned_features == ["NSC"] and report.drifted_features == []
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["verdict"] == "warn" and doc["warned_features"] == ["NSC"]
    assert doc["features"]["NSC"]["verdict"] == "warn" and doc["source"] == "log"
    page = render(report, {"log": "logs"})
    assert '<tr class="warn"><td>NSC</td>' in page and "warn rule" in page

    path = tmp_path / "drift.json"
    registry = CollectorRegistry()
    registry.register(DriftCollector(path))
    write_json(doc, path)
    value = registry.get_sample_value
    assert value("treesurv_drift_verdict", {"feature": "NSC"}) == 1.0
    assert value("treesurv_drift_verdict", {"feature": "Lignin"}) == 0.0
    assert value("treesurv_drift_flagged", {"feature": "NSC"}) == 0.0
    assert value("treesurv_drift_detected") == 0.0

    # A report written before graded verdicts: the level follows `drifted`.
    for entry in doc["features"].values():
        del entry["verdict"]
    doc["features"]["Lignin"]["drifted"] = True
    write_json(doc, path)
    assert value("treesurv_drift_verdict", {"feature": "Lignin"}) == 2.0
    assert value("treesurv_drift_verdict", {"feature": "NSC"}) == 0.0
