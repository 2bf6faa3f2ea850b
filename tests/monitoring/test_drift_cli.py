"""`treesurv monitor drift` on logs written by the real PredictionLog from real rows,
scored by the real bundle: shifted features and only those are flagged."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import drift_cli as drift
from treesurv.core import schema
from treesurv.core.validation import SCORING, validate
from treesurv.inference.bundle import load_verified
from treesurv.monitoring.prediction_log.queue import PredictionLog

pytestmark = pytest.mark.slow
SHIFTED = ["Species", "Light_ISF", "NSC"]


def shifted(rows: pd.DataFrame) -> pd.DataFrame:
    """More light, less NSC, and two species relabelled where the rules still hold."""
    out = rows.copy()
    out["Light_ISF"] = out["Light_ISF"] + 0.04
    out["NSC"] = out["NSC"] * 0.6
    not_oak_soil = ~out["Soil"].isin(["Quercus alba", "Quercus rubra"])
    out.loc[(out["Species"] == "Quercus alba") & not_oak_soil, "Species"] = "Quercus rubra"
    not_amf_soil = ~out["Soil"].isin(["Acer saccharum", "Prunus serotina"])
    out.loc[(out["Species"] == "Prunus serotina") & not_amf_soil, "Species"] = "Acer saccharum"
    return out


def write_log(directory: Path, rows: pd.DataFrame, bundle_dir: Path) -> None:
    """What the service would log: one request per row, scored by the bundle."""
    bundle, compiled = load_verified(bundle_dir)
    features = rows[list(schema.FEATURE_NAMES)]
    _, report = validate(features, "traffic", SCORING)
    assert report.ok, report.summary()  # the API would have accepted every row
    proba = compiled.proba_columns(features)
    records = features.astype(object).where(features.notna(), None).to_dict("records")
    with PredictionLog(directory) as plog:
        for i, (record, p) in enumerate(zip(records, proba, strict=True)):
            assert plog.record(f"req-{i}", bundle.version, [record], [float(p)], 0.002)
    assert plog.stats().logged == len(rows)


@pytest.fixture(scope="module")
def unseen_rows(pipeline_project: Path) -> pd.DataFrame:
    # Held-out rows: the model never trained on them, like real traffic.
    return pd.read_parquet(pipeline_project / "data" / "processed" / "test.parquet")


def test_shifted_traffic_flags_exactly_the_shifted_features(
    pipeline_project: Path, bundle_dir: Path, unseen_rows: pd.DataFrame, tmp_path: Path
) -> None:
    rows = shifted(unseen_rows.sample(1000, replace=True, random_state=11))
    write_log(tmp_path / "log", rows.reset_index(drop=True), bundle_dir)
    code, report, output = drift(pipeline_project, tmp_path / "log", bundle_dir, tmp_path)
    assert code == 3, output
    assert report["status"] == "drift" and report["rows"] == 1000
    assert report["drifted_features"] == SHIFTED
    assert report["prediction_drifted"]  # more light: the predicted risk moved too
    for name in SHIFTED:
        assert report["features"][name]["psi"] >= 0.2
    page = (tmp_path / "drift.html").read_text()
    assert page.count("<svg") == 11  # the predictions and the ten features
    # Self-contained: nothing to fetch (the only URLs are SVG namespace names).
    assert "<script" not in page
    urls = set(re.findall(r"(?:src|href)=\"([^\"]+)\"", page))
    assert all(u.startswith("#") for u in urls), urls


def test_unshifted_traffic_flags_nothing(
    pipeline_project: Path, bundle_dir: Path, unseen_rows: pd.DataFrame, tmp_path: Path
) -> None:
    rows = unseen_rows.sample(1000, replace=True, random_state=12).reset_index(drop=True)
    write_log(tmp_path / "log", rows, bundle_dir)
    code, report, output = drift(pipeline_project, tmp_path / "log", bundle_dir, tmp_path)
    assert code == 0, output
    assert report["status"] == "ok" and report["drifted_features"] == []
    assert not report["prediction_drifted"]
    assert report["prediction"]["rows"] == 1000


def test_errors_and_too_little_traffic(
    pipeline_project: Path, bundle_dir: Path, unseen_rows: pd.DataFrame, tmp_path: Path
) -> None:
    code, _, output = drift(pipeline_project, tmp_path / "nowhere", bundle_dir, tmp_path)
    assert code == 1 and "no such prediction log directory" in output
    write_log(tmp_path / "log", unseen_rows.head(50), bundle_dir)
    code, _, output = drift(pipeline_project, tmp_path / "log", tmp_path / "nope.json", tmp_path)
    assert code == 1 and "no such reference" in output
    code, report, output = drift(pipeline_project, tmp_path / "log", bundle_dir, tmp_path)
    assert code == 0 and report["status"] == "insufficient_data", output
