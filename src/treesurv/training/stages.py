"""The pipeline's stages up to the model card, as functions with their file I/O:
what dvc.yaml runs (`packaging` writes the bundle).

Each stage reads its inputs, calls the pure functions of `data`, `train`,
`evaluate`, `compiler` and `bundle`, and writes its outputs atomically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from treesurv.core import schema
from treesurv.core.config import MODEL_NAME, VARIANTS, Params, Paths
from treesurv.core.errors import InputError
from treesurv.core.files import file_md5, write_json, write_table
from treesurv.core.profile import reference_profile
from treesurv.core.split import model_frame, split
from treesurv.training import evaluation as ev
from treesurv.training import survival as sv
from treesurv.training.classifier import train
from treesurv.training.survival import train_survival

log = logging.getLogger(__name__)

# skops refuses to load any type it has not been told to trust; these are the
# only modules a treesurv pipeline is built from...
TRUSTED_MODULES = ("sklearn.", "numpy.", "treesurv.training.features.", "scipy.")
# ...and the scikit-survival types of its survival models, by exact name.
TRUSTED_TYPES = (
    "sksurv.ensemble.boosting.GradientBoostingSurvivalAnalysis",
    "sksurv.ensemble.survival_loss.CoxPH",
    "sksurv.functions.StepFunction",
    "sksurv.linear_model.coxph.BreslowEstimator",
    "sksurv.linear_model.coxph.CoxPHSurvivalAnalysis",
)


class StageError(InputError):
    """A stage cannot complete; the message says why."""


def stage_prepare(params: Params) -> dict[str, int]:
    paths, dp = params.paths, params.data
    validated = paths.validated
    frame = model_frame(pd.read_parquet(validated))
    train, test = split(frame, dp.test_percent, dp.split_salt)
    if train[schema.TARGET].nunique() < 2 or len(test) == 0:
        raise StageError("the training split needs both outcomes and the test split needs rows")
    write_table(train, paths.train)
    write_table(test, paths.test)
    profile = reference_profile(train, dp.profile_bins)
    profile["source"] = {"md5": file_md5(validated), "rows": len(frame)}
    write_json(profile, paths.profile)
    return {"train": len(train), "test": len(test)}


def _dump_skops(obj: Any, path: Path) -> None:
    import skops.io as sio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sio.dump(obj, tmp)
    tmp.replace(path)


def stage_train(
    params: Params, log_fn: Callable[[str], None], variant: str = "full"
) -> dict[str, Any]:
    """Train the classifier of a variant: `full` (every feature) or `planning` (design only)."""

    paths = params.paths
    frame = pd.read_parquet(paths.train)
    result = train(frame, params.variant(variant), log_fn)
    model_path, report_path, oof_path = paths.classifier_outputs(variant)
    _dump_skops(result.pipeline, model_path)
    report = result.report()
    write_json(report, report_path)
    oof = pd.DataFrame(
        {
            schema.ID: frame[schema.ID],
            "y": frame[schema.TARGET].astype(int),
            "p_cv": result.oof,
            "p_cv_group": result.oof_group,
        }
    )
    write_table(oof, oof_path)
    return report


def stage_train_survival(params: Params, log_fn: Callable[[str], None]) -> dict[str, Any]:
    """Train the survival model of both variants; keep their out-of-fold predictions."""

    paths = params.paths
    frame = pd.read_parquet(paths.train)
    horizons = [float(h) for h in params.survival.horizons]
    reports: dict[str, Any] = {}
    oof = pd.DataFrame({schema.ID: frame[schema.ID]})
    for variant in VARIANTS:
        result = train_survival(frame, params.variant(variant), log_fn)
        _dump_skops(result.pipeline, paths.survival_pipeline(variant))
        reports[variant] = result.report()
        oof[f"{variant}_risk"] = result.chosen.oof[:, 0]
        for h in horizons:
            j = int(np.searchsorted(result.days, h))
            oof[f"{variant}_s_{h:g}"] = result.chosen.oof[:, 1 + j]
    write_json(reports, paths.survival_report)
    write_table(oof, paths.survival_oof)
    return reports


def load_pipeline(path: Path) -> Any:
    """Load the sklearn pipeline from skops, trusting only known modules."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    refused = [t for t in untrusted if not (t.startswith(TRUSTED_MODULES) or t in TRUSTED_TYPES)]
    if refused:
        raise StageError(f"{path}: refusing to load untrusted type(s): {', '.join(refused)}")
    return sio.load(path, trusted=untrusted)


def _classifier_metrics(
    paths: Paths, variant: str, test: pd.DataFrame, threshold: float, bins: int
) -> tuple[dict[str, Any], dict[str, Any], tuple[np.ndarray, ...]]:
    """Cross-validated and held-out metrics of a classifier; its report; the arrays
    behind them (test y and p, out-of-fold y and p)."""

    model_path, report_path, oof_path = paths.classifier_outputs(variant)
    pipeline = load_pipeline(model_path)
    oof = pd.read_parquet(oof_path)
    report = json.loads(report_path.read_text())
    y = test[schema.TARGET].to_numpy(dtype=int)
    p = pipeline.predict_proba(test[list(schema.FEATURE_NAMES)])[:, 1]
    oy, op = oof["y"].to_numpy(dtype=int), oof["p_cv"].to_numpy()
    metrics = {
        "cv": ev.classification_metrics(oy, op, threshold, bins),
        "cv_group": ev.classification_metrics(oy, oof["p_cv_group"].to_numpy(), threshold, bins),
        "test": ev.classification_metrics(y, p, threshold, bins),
    }
    metrics["cv"]["roc_auc_fold_std"] = report["cv"]["roc_auc_fold_std"]
    metrics["cv_group"]["roc_auc_fold_std"] = report["cv_group"]["roc_auc_fold_std"]
    return metrics, report, (y, p, oy, op)


def _survival_evaluation(
    params: Params, train: pd.DataFrame, test: pd.DataFrame
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Survival metrics of both variants (CV from training, held-out test here) and
    the plot rows: Kaplan-Meier against the mean prediction, calibration at horizons."""

    paths, sp = params.paths, params.survival
    horizons = np.asarray([float(h) for h in sp.horizons])
    groups = sp.risk_groups
    reports = json.loads(paths.survival_report.read_text())
    oof = pd.read_parquet(paths.survival_oof)
    y_train, y_test = sv.survival_target(train), sv.survival_target(test)
    days = sv.evaluation_days(y_train["time"], horizons)
    X_test = test[[c for c in schema.INPUT_NAMES if c in test.columns]]
    metrics: dict[str, Any] = {}
    predicted: dict[str, np.ndarray] = {}
    calibration: list[dict[str, Any]] = []
    for variant in VARIANTS:
        pipeline = load_pipeline(paths.survival_pipeline(variant))
        pred = sv.predict_risk_and_survival(pipeline, X_test, days)
        predicted[variant] = pred[:, 1:]
        at_h = pred[:, 1 + np.searchsorted(days, horizons)]
        oof_at_h = oof[[f"{variant}_s_{h:g}" for h in horizons]].to_numpy()
        rows = {
            "test": sv.horizon_calibration(y_test, at_h, horizons, groups),
            "cross-validation": sv.horizon_calibration(y_train, oof_at_h, horizons, groups),
        }
        for part, split_rows in rows.items():
            calibration += [{**r, "split": part, "model": variant} for r in split_rows]
        report = reports[variant]
        test_metrics = sv.survival_metrics(y_train, y_test, pred[:, 0], pred[:, 1:], days)
        if pipeline.named_steps["encode"].params_.site:
            test_metrics["concordance_without_plot"] = sv.concordance(
                y_test, pipeline.predict(sv.without_plot(X_test))
            )
        metrics[variant] = {
            "model": report["chosen"]["candidate"],
            "cv": report["cv"],
            "test": test_metrics,
            "calibration_error": {
                "cv": sv.calibration_error(rows["cross-validation"]),
                "test": sv.calibration_error(rows["test"]),
            },
        }
    plots = {
        "km": sv.km_vs_predicted(y_test, predicted, days),
        "calibration": calibration,
        "reports": reports,
    }
    metrics["max_days"] = float(y_train["time"].max())
    return metrics, plots


def stage_evaluate(params: Params) -> dict[str, Any]:

    paths = params.paths
    test = pd.read_parquet(paths.test)
    train = pd.read_parquet(paths.train)
    threshold = params.evaluate.threshold
    bins = params.evaluate.calibration_bins
    metrics, report, (y, p, oy, op) = _classifier_metrics(paths, "full", test, threshold, bins)
    metrics["planning"], planning_report, _ = _classifier_metrics(
        paths, "planning", test, threshold, bins
    )
    metrics["survival"], surv_plots = _survival_evaluation(params, train, test)
    metrics = ev.rounded(metrics)
    write_json(metrics, paths.metrics)

    plots = paths.plots
    write_json(ev.roc_points(y, p), plots / "roc.json")
    write_json(
        ev.calibration_points(y, p, bins, "test")
        + ev.calibration_points(oy, op, bins, "cross-validation"),
        plots / "calibration.json",
    )
    write_json(ev.confusion_rows(y, p, threshold), plots / "confusion.json")
    ev.save_png_plots(y, p, oy, op, threshold, bins, plots)
    write_json(surv_plots["km"], plots / "survival_km.json")
    write_json(surv_plots["calibration"], plots / "survival_calibration.json")
    sv.save_survival_pngs(surv_plots["km"], surv_plots["calibration"], plots)

    light = train["Light_ISF"]
    card = ev.model_card(
        name=MODEL_NAME,
        metrics=metrics,
        train_report=report,
        data_md5=file_md5(paths.raw) if paths.raw.exists() else "unknown",
        rows={"train": len(train), "test": len(test)},
        threshold=threshold,
        light_range=(float(light.min()), float(light.max())),
        plots=int(train[schema.GROUP].nunique()) if schema.GROUP in train else 0,
        planning_report=planning_report,
        survival_reports=surv_plots["reports"],
    )
    paths.card.parent.mkdir(parents=True, exist_ok=True)
    paths.card.write_text(card)
    return metrics
