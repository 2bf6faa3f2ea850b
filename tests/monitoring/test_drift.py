"""Drift statistics, the flag rule and the drift gauges (fast, synthetic frames)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from scipy import stats

from treesurv.core import schema
from treesurv.core.config import Params, ParamsError
from treesurv.core.files import write_json
from treesurv.core.profile import numeric_profile, reference_profile
from treesurv.monitoring.drift import (
    DriftError,
    Thresholds,
    chi2_homogeneity,
    compare,
    ks_against_sketch,
    psi,
)
from treesurv.monitoring.drift_check import parse_when
from treesurv.monitoring.gauges import DriftCollector, latest_drift


def synthetic(n: int, seed: int) -> pd.DataFrame:
    """Valid rows that obey the schema's rules, with smooth trait distributions."""
    rng = np.random.default_rng(seed)
    species = rng.choice(schema.SPECIES, n)
    soil = rng.choice(schema.SOIL_SOURCES, n)
    amf = np.array([schema.SPECIES_MYCO[s] == "AMF" for s in species])
    return pd.DataFrame(
        {
            "Species": species,
            "Light_ISF": rng.uniform(0.03, 0.17, n),
            "Soil": soil,
            "Sterile": np.where(soil == "Sterile", "Sterile", "Non-Sterile"),
            "Conspecific": [
                schema.expected_conspecific(a, b) for a, b in zip(species, soil, strict=True)
            ],
            "AMF": rng.uniform(0, 100, n),
            "EMF": np.where(amf, np.nan, rng.uniform(0, 60, n)),
            "Phenolics": rng.normal(2.0, 1.0, n),
            "Lignin": rng.normal(15.0, 4.0, n),
            "NSC": rng.normal(15.0, 3.0, n),
            "death_probability": rng.beta(2, 5, n),
        }
    )


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    ref = synthetic(3000, seed=0)
    out = reference_profile(ref, bins=10)
    out["prediction"] = numeric_profile(ref["death_probability"].to_numpy(), 10)
    return out


def test_psi_basics() -> None:
    same = np.array([0.25, 0.25, 0.5])
    assert psi(same, same) == 0.0
    # (0.4-0.25)ln(0.4/0.25) + (0.1-0.25)ln(0.1/0.25) + 0
    expected = 0.15 * np.log(1.6) + 0.15 * np.log(2.5)
    assert psi(same, np.array([0.4, 0.1, 0.5])) == pytest.approx(expected)
    assert np.isfinite(psi(np.array([1.0, 0.0]), np.array([0.0, 1.0])))  # empty bins floored


def test_ks_against_the_sketch_matches_scipy_on_the_rows() -> None:
    rng = np.random.default_rng(3)
    ref, cur = rng.normal(0, 1, 4000), rng.normal(0.3, 1, 800)
    sketch = numeric_profile(ref, 10)["sketch"]
    d, p = ks_against_sketch(cur, np.asarray(sketch), len(ref))
    exact = stats.ks_2samp(cur, ref, method="asymp")
    assert d == pytest.approx(exact.statistic, abs=0.01)  # the sketch has 1% resolution
    assert p < 1e-4 and exact.pvalue < 1e-4
    assert np.log10(p) == pytest.approx(np.log10(exact.pvalue), abs=1)
    # Ties survive the sketch: a resample of a few distinct values is not "different".
    levels = rng.choice([0.05, 0.08, 0.11, 0.15], 2000, p=[0.4, 0.3, 0.2, 0.1])
    sketch = numeric_profile(levels, 10)["sketch"]
    d, p = ks_against_sketch(rng.choice(levels, 500), np.asarray(sketch), len(levels))
    assert d < 0.06 and p > 0.01


def test_chi2_homogeneity() -> None:
    s, p = chi2_homogeneity(np.array([500, 300, 200]), np.array([50, 30, 20]))
    assert s == pytest.approx(0.0) and p == pytest.approx(1.0)
    _, p = chi2_homogeneity(np.array([500, 300, 200]), np.array([20, 30, 50]))
    assert p < 1e-6
    assert chi2_homogeneity(np.array([10, 0]), np.array([5, 0])) == (0.0, 1.0)  # one category


def test_unshifted_sample_flags_nothing(profile: dict[str, Any]) -> None:
    for seed in (1, 2, 3):
        report = compare(profile, synthetic(1500, seed=seed), Thresholds.from_params())
        assert report.status == "ok", report.to_dict()
        assert report.drifted_features == []
        assert report.prediction is not None and not report.prediction.drifted


def test_shifted_features_and_only_those_are_flagged(profile: dict[str, Any]) -> None:
    cur = synthetic(1500, seed=4)
    cur["Lignin"] = cur["Lignin"] + 6.0  # 1.5 standard deviations
    cur["Sterile"] = cur["Sterile"].where(
        cur["Soil"] != "Sterile", None
    )  # a client stops sending it
    cur["death_probability"] = np.random.default_rng(5).beta(5, 2, len(cur))
    report = compare(profile, cur, Thresholds.from_params())
    assert report.status == "drift"
    assert report.drifted_features == ["Sterile", "Lignin"]
    assert report.prediction is not None and report.prediction.drifted
    lignin = report.features["Lignin"]
    assert lignin.psi > 1 and lignin.p_value < 1e-10 and lignin.test == "ks"
    sterile = report.features["Sterile"]
    assert sterile.test == "chi2" and [b.label for b in sterile.bins][-1] == "(missing)"
    doc = json.loads(json.dumps(report.to_dict()))  # JSON-able as written
    assert doc["drifted_features"] == ["Sterile", "Lignin"] and doc["prediction_drifted"]


def test_emf_missingness_counts_as_drift(profile: dict[str, Any]) -> None:
    cur = synthetic(1500, seed=6)
    cur["EMF"] = np.nan  # every EMF value goes missing
    report = compare(profile, cur, Thresholds.from_params())
    assert report.drifted_features == ["EMF"]
    assert report.features["EMF"].test == "ks+chi2"


def test_small_logs_give_no_verdict(profile: dict[str, Any]) -> None:
    cur = synthetic(150, seed=7)
    cur["Lignin"] += 20
    report = compare(profile, cur, Thresholds.from_params(min_rows=200))
    assert report.status == "insufficient_data" and not report.drift_detected
    assert "200" in report.notes[0]


def test_prediction_comparison_uses_the_reference_model_only(profile: dict[str, Any]) -> None:
    cur = synthetic(1000, seed=8)
    cur["model_version"] = ["1.0.0"] * 700 + ["2.0.0"] * 300
    cur.loc[700:, "death_probability"] = 0.99  # another model: not comparable
    report = compare(profile, cur, Thresholds.from_params(), model_version="1.0.0")
    assert report.prediction is not None and report.prediction.rows == 700
    assert not report.prediction.drifted
    assert any("300 prediction(s) by other model versions" in n for n in report.notes)


def test_bad_profiles_and_thresholds_are_named(profile: dict[str, Any]) -> None:
    with pytest.raises(DriftError, match="no entry for NSC"):
        compare(
            {"rows": 10, "features": {k: v for k, v in profile["features"].items() if k != "NSC"}},
            synthetic(300, 1),
            Thresholds.from_params(),
        )
    with pytest.raises(ParamsError, match=r"monitor\.p_value: Input should be less than 1"):
        Params.parse({"monitor": {"p_value": 2}})
    with pytest.raises(ParamsError, match=r"monitor\.psi_threshold: .* \(got 'high'\)"):
        Params.parse({"monitor": {"psi_threshold": "high"}})
    monitor = Params.parse({"monitor": {"min_rows": 50}}).monitor
    assert Thresholds.from_params(monitor).min_rows == 50
    assert Thresholds.from_params().psi == Params().monitor.psi_threshold


def test_parse_when() -> None:
    now = datetime(2026, 5, 10, 12, tzinfo=UTC)
    assert parse_when("7d", now) == datetime(2026, 5, 3, 12, tzinfo=UTC)
    assert parse_when("12h", now) == datetime(2026, 5, 10, 0, tzinfo=UTC)
    assert parse_when("2026-05-01", now) == datetime(2026, 5, 1, tzinfo=UTC)
    assert parse_when("2026-05-01T10:00:00+02:00", now) == datetime(2026, 5, 1, 8, tzinfo=UTC)
    with pytest.raises(DriftError, match="not a date"):
        parse_when("last week", now)


def test_drift_gauges_follow_the_report_file(profile: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "drift.json"
    registry = CollectorRegistry()
    registry.register(DriftCollector(path))
    assert b"treesurv_drift" not in generate_latest(registry)  # no report yet: no series

    cur = synthetic(1000, seed=9)
    cur["Lignin"] += 6.0
    write_json(compare(profile, cur, Thresholds.from_params()).to_dict(), path)
    value = registry.get_sample_value
    assert value("treesurv_drift_detected") == 1.0
    assert value("treesurv_drift_flagged", {"feature": "Lignin"}) == 1.0
    assert value("treesurv_drift_flagged", {"feature": "NSC"}) == 0.0
    lignin_psi = value("treesurv_drift_psi", {"feature": "Lignin"})
    assert lignin_psi is not None and lignin_psi > 1.0
    assert value("treesurv_drift_p_value", {"feature": "death_probability"}) is not None
    assert value("treesurv_drift_rows") == 1000.0
    stamp = value("treesurv_drift_report_timestamp_seconds")
    assert stamp is not None and abs(stamp - datetime.now(UTC).timestamp()) < 120

    write_json(compare(profile, synthetic(1000, seed=10), Thresholds.from_params()).to_dict(), path)
    assert value("treesurv_drift_detected") == 0.0  # re-read when the file changes

    path.write_text("{ not json")
    assert latest_drift(path) is None
    assert value("treesurv_drift_detected") is None  # unreadable: no series, no error
