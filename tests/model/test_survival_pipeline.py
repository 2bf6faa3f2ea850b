"""Survival and planning models from the real pipeline: honest, compiled exactly, complete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.helpers import records, run
from treesurv.core import schema
from treesurv.core.config import VARIANTS
from treesurv.inference.bundle import load_verified, require_complete
from treesurv.inference.predictor import HorizonError, SurvivalPredictor
from treesurv.training.stages import load_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def metrics(pipeline_project: Path) -> dict[str, Any]:
    return dict(json.loads((pipeline_project / "metrics.json").read_text()))


@pytest.fixture(scope="module")
def survival_predictors(bundle_dir: Path) -> dict[str, SurvivalPredictor]:
    bundle, _ = load_verified(bundle_dir)
    return {v: SurvivalPredictor(bundle.survival(v)) for v in VARIANTS}


def test_survival_metrics(metrics: dict[str, Any], pipeline_project: Path) -> None:
    surv = metrics["survival"]
    assert surv["max_days"] == 115.5
    for variant in VARIANTS:
        m = surv[variant]
        for split in ("cv", "test"):
            assert set(m[split]) >= {"concordance", "integrated_brier", "integrated_brier_km"}
            # The features must be worth something against one Kaplan-Meier curve for all.
            assert m[split]["integrated_brier"] < 0.85 * m[split]["integrated_brier_km"]
        # Measured here: CV concordance 0.773 full / 0.777 planning with the field
        # plot (the issue asks for 0.77), 0.756 / 0.758 for the same held-out rows
        # without it (a seedling outside the study); test split 0.81 / 0.79.
        assert m["cv"]["concordance"] >= 0.77
        assert m["cv"]["concordance_without_plot"] >= 0.75
        assert m["test"]["concordance"] >= 0.79
        assert m["test"]["concordance_without_plot"] >= 0.77
        # The plot is worth something: without it, the same rows rank worse.
        for split in ("cv", "test"):
            assert m[split]["concordance"] > m[split]["concordance_without_plot"] + 0.01
        assert m["cv"]["integrated_brier"] <= 0.125
        for split in ("cv", "test"):
            assert set(m["calibration_error"][split]) == {"day_30", "day_60", "day_115"}
            assert max(m["calibration_error"][split].values()) < 0.1
    # Selection by concordance: the chosen model is at least as good as every Cox
    # model in the search, up to the tolerance within which the lower IBS wins.
    reports = json.loads((pipeline_project / "models" / "survival_report.json").read_text())
    for variant in VARIANTS:
        chosen = reports[variant]["chosen"]["metrics"]["concordance"]
        cox = [r for r in reports[variant]["search"] if r["candidate"] == "cox"]
        assert cox and all(chosen >= r["metrics"]["concordance"] - 0.002 for r in cox)


def test_planning_classifier_is_reported_and_weaker(metrics: dict[str, Any]) -> None:
    planning = metrics["planning"]
    for split in ("cv", "cv_group", "test"):
        assert set(planning[split]) >= {"roc_auc", "brier", "log_loss", "accuracy", "ece"}
        # Without the traits measured at harvest or death, the design alone says less.
        assert planning[split]["roc_auc"] < metrics[split]["roc_auc"] - 0.04
        assert planning[split]["brier"] > metrics[split]["brier"]
    assert planning["cv"]["roc_auc"] >= 0.82  # about 0.84 measured


def test_bundle_holds_four_verified_models(bundle_dir: Path, pipeline_project: Path) -> None:
    bundle, _ = load_verified(bundle_dir)
    require_complete(bundle)
    sub = bundle.manifest["submodels"]
    for variant in VARIANTS:
        for kind in ("classifier", "survival"):
            entry = sub[variant][kind]
            assert {entry["spec"], entry["arrays"], entry["skops"]} <= set(bundle.files)
            assert entry["parity_max_abs_diff"] < 1e-6
        features = sub[variant]["survival"]["features"]
        assert features == list(schema.FEATURE_NAMES if variant == "full" else schema.DESIGN)
        assert sub[variant]["survival"]["site"] == schema.SITE.name
        assert "site" not in sub[variant]["classifier"]
    assert bundle.manifest["survival"]["max_days"] == 115.5
    assert max(bundle.manifest["survival"]["default_days"]) <= 115.5
    # The 14 files of the models and their card, and the study report's.
    report = bundle.manifest["explore"]
    report_files = {report["html"], report["json"], *report["figures"]}
    assert report_files <= set(bundle.files)
    out = run(["treesurv", "model", "verify", str(bundle_dir)], pipeline_project).stdout
    assert f"{14 + len(report_files)} files verified" in out


@pytest.mark.parametrize("variant", VARIANTS)
def test_survival_parity_with_sksurv_on_every_real_row(
    variant: str,
    bundle_dir: Path,
    real_model_study: pd.DataFrame,
    survival_predictors: dict[str, SurvivalPredictor],
) -> None:
    bundle, _ = load_verified(bundle_dir)
    pipeline = load_pipeline(
        bundle_dir.parent / bundle.manifest["submodels"][variant]["survival"]["skops"]
    )
    predictor = survival_predictors[variant]
    days = predictor.compiled.days
    with_plot = real_model_study[list(schema.INPUT_NAMES)]
    # With the plot, without it (a typical site), and through the API's dict rows.
    for features in (with_plot, with_plot.drop(columns=[schema.SITE.name])):
        expected = np.vstack([fn(days) for fn in pipeline.predict_survival_function(features)])
        assert np.max(np.abs(predictor.survival_at(features, days) - expected)) < 1e-6
    rows = [
        {k: (None if schema.is_missing(v) else v) for k, v in r.items()}
        for r in records(with_plot.head(300).astype({schema.SITE.name: object}))
    ]
    expected = np.vstack(
        [fn(days) for fn in pipeline.predict_survival_function(with_plot.head(300))]
    )
    assert np.max(np.abs(predictor.survival_at(rows, days) - expected)) < 1e-6


@pytest.mark.parametrize("variant", VARIANTS)
def test_planning_classifier_parity(
    variant: str, bundle_dir: Path, real_model_study: pd.DataFrame
) -> None:
    bundle, _ = load_verified(bundle_dir)
    pipeline = load_pipeline(
        bundle_dir.parent / bundle.manifest["submodels"][variant]["classifier"]["skops"]
    )
    features = real_model_study[list(schema.FEATURE_NAMES)]
    got = bundle.classifier(variant).proba_columns(features)
    assert np.max(np.abs(got - pipeline.predict_proba(features)[:, 1])) < 1e-6


@pytest.mark.parametrize("variant", VARIANTS)
def test_survival_is_monotone_for_every_real_row(
    variant: str, real_model_study: pd.DataFrame, survival_predictors: dict[str, SurvivalPredictor]
) -> None:
    predictor = survival_predictors[variant]
    days = np.union1d(np.arange(0.0, 115.5, 0.5), predictor.compiled.days)
    surv = predictor.survival_at(real_model_study, days)
    assert surv.shape == (len(real_model_study), len(days))
    assert np.all((surv >= 0) & (surv <= 1))
    assert np.all(surv[:, 0] == 1.0)  # day 0: everyone alive
    assert np.all(np.diff(surv, axis=1) <= 0)
    with pytest.raises(HorizonError, match="beyond the study's follow-up"):
        predictor.survival_at(real_model_study.head(1), [116.0])


def test_survival_directions(
    real_model_study: pd.DataFrame, survival_predictors: dict[str, SurvivalPredictor]
) -> None:
    amf = real_model_study["Species"].map(schema.SPECIES_MYCO).eq("AMF").to_numpy()
    sterile = real_model_study["Sterile"].eq("Sterile").to_numpy()
    for predictor in survival_predictors.values():
        s60 = predictor.survival_at(real_model_study, [60.0])[:, 0]
        # Oaks outlive maples and cherries; sterile soil spares maples and cherries.
        assert s60[~amf].mean() > s60[amf].mean() + 0.3
        assert s60[amf & sterile].mean() > s60[amf & ~sterile].mean() + 0.1
        median = predictor.median_survival_days(real_model_study)
        assert np.nanmedian(median[amf]) < 60
        # Kaplan-Meier: about 60% of the oaks are alive at the end, so most oaks'
        # median survival lies beyond the study (NaN); hardly any maple's or cherry's.
        assert np.isnan(median[~amf]).mean() > 0.5
        assert np.isnan(median[amf]).mean() < 0.1


def test_model_card_and_plots(bundle_dir: Path, pipeline_project: Path, tmp_path: Path) -> None:
    card = " ".join((bundle_dir / "model_card.md").read_text().split())
    for text in (
        "## Planning model (before planting)",
        "## Survival models",
        "censoring handled",
        "up to day 115.5, the study's longest follow-up",
        "| ROC AUC full | ROC AUC planning |",
    ):
        assert text in card, text
    # Written outside the shared project, which tests only read.
    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], pipeline_project)
    html = (tmp_path / "plots" / "index.html").read_text()
    for marker in (
        "Kaplan-Meier against the mean predicted survival",
        "predicted_planning",
        "observed (1 - Kaplan-Meier of the group)",
        "workspace_plots_survival_km.png",
        "workspace_plots_survival_calibration.png",
    ):
        assert marker in html, marker
