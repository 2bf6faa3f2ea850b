"""The pipeline's stages as functions with their file I/O: what dvc.yaml runs.

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

from treesurv import bundle as bundle_mod
from treesurv import data, schema
from treesurv.config import MODEL_NAME, Paths

log = logging.getLogger(__name__)

# skops refuses to load any type it has not been told to trust; these are the
# only modules a treesurv pipeline is built from.
TRUSTED_MODULES = ("sklearn.", "numpy.", "treesurv.features.", "scipy.")
PARITY_TOLERANCE = 1e-6


class StageError(Exception):
    """A stage cannot complete; the message says why."""


def stage_validate(raw: Path, out: Path, report_path: Path) -> data.ValidationReport:
    clean, report = data.validate_file(raw, data.TRAINING)
    data.write_json(report.to_dict(), report_path)
    if not report.ok:
        raise StageError(report.summary())
    data.write_table(clean, out)
    return report


def stage_prepare(validated: Path, paths: Paths, params: dict[str, Any]) -> dict[str, int]:
    frame = data.model_frame(pd.read_parquet(validated))
    dp = params["data"]
    train, test = data.split(frame, float(dp["test_percent"]), str(dp["split_salt"]))
    if train[schema.TARGET].nunique() < 2 or len(test) == 0:
        raise StageError("the training split needs both outcomes and the test split needs rows")
    data.write_table(train, paths.train)
    data.write_table(test, paths.test)
    profile = data.reference_profile(train, int(dp.get("profile_bins", 10)))
    profile["source"] = {"md5": data.file_md5(validated), "rows": len(frame)}
    data.write_json(profile, paths.profile)
    return {"train": len(train), "test": len(test)}


def stage_train(
    paths: Paths, params: dict[str, Any], log_fn: Callable[[str], None]
) -> dict[str, Any]:
    import skops.io as sio

    from treesurv.train import train

    frame = pd.read_parquet(paths.train)
    result = train(frame, params, log_fn)
    paths.model.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.model.with_name(f".{paths.model.name}.tmp")
    sio.dump(result.pipeline, tmp)
    tmp.replace(paths.model)
    report = result.report()
    data.write_json(report, paths.train_report)
    oof = pd.DataFrame(
        {
            schema.ID: frame[schema.ID],
            "y": frame[schema.TARGET].astype(int),
            "p_cv": result.oof,
            "p_cv_group": result.oof_group,
        }
    )
    data.write_table(oof, paths.oof)
    return report


def load_pipeline(path: Path) -> Any:
    """Load the sklearn pipeline from skops, trusting only known modules."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    refused = [t for t in untrusted if not t.startswith(TRUSTED_MODULES)]
    if refused:
        raise StageError(f"{path}: refusing to load untrusted type(s): {', '.join(refused)}")
    return sio.load(path, trusted=untrusted)


def stage_evaluate(paths: Paths, params: dict[str, Any]) -> dict[str, Any]:
    from treesurv import evaluate as ev

    pipeline = load_pipeline(paths.model)
    test = pd.read_parquet(paths.test)
    train = pd.read_parquet(paths.train)
    oof = pd.read_parquet(paths.oof)
    report = json.loads(paths.train_report.read_text())
    threshold = float(params["evaluate"]["threshold"])
    bins = int(params["evaluate"]["calibration_bins"])
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
    metrics = ev.rounded(metrics)
    data.write_json(metrics, paths.metrics)

    plots = paths.plots
    data.write_json(ev.roc_points(y, p), plots / "roc.json")
    data.write_json(
        ev.calibration_points(y, p, bins, "test")
        + ev.calibration_points(oy, op, bins, "cross-validation"),
        plots / "calibration.json",
    )
    data.write_json(ev.confusion_rows(y, p, threshold), plots / "confusion.json")
    ev.save_png_plots(y, p, oy, op, threshold, bins, plots)

    light = train["Light_ISF"]
    card = ev.model_card(
        name=MODEL_NAME,
        metrics=metrics,
        train_report=report,
        data_md5=data.file_md5(paths.raw) if paths.raw.exists() else "unknown",
        rows={"train": len(train), "test": len(test)},
        threshold=threshold,
        light_range=(float(light.min()), float(light.max())),
        plots=int(train[schema.GROUP].nunique()) if schema.GROUP in train else 0,
    )
    paths.card.parent.mkdir(parents=True, exist_ok=True)
    paths.card.write_text(card)
    return metrics


def _bundle_profile(paths: Paths, params: dict[str, Any]) -> bytes:
    """The inputs' reference profile plus the distribution of the model's predictions on
    rows it was not fitted on (out-of-fold), the reference for prediction drift."""
    profile = json.loads(paths.profile.read_text())
    oof = pd.read_parquet(paths.oof)["p_cv"].to_numpy(dtype=float)
    profile["prediction"] = {
        **data.numeric_profile(oof, int(params["data"].get("profile_bins", 10))),
        "source": "out-of-fold predictions of the chosen model on the training rows",
    }
    return (json.dumps(profile, indent=2) + "\n").encode()


def stage_package(
    paths: Paths, params: dict[str, Any], version: str | None = None
) -> dict[str, Any]:
    import skops.io as sio

    from treesurv.compiler import compile_model
    from treesurv.predictor import dumps

    pipeline = load_pipeline(paths.model)
    encoder = pipeline.named_steps["encode"].params_
    spec, arrays = compile_model(encoder, pipeline.named_steps["model"])
    files = dumps(spec, arrays)
    files["model.skops"] = sio.dumps(pipeline)
    files["model_card.md"] = paths.card.read_bytes()
    files["reference_profile.json"] = _bundle_profile(paths, params)

    # The compiled model must score exactly like the sklearn pipeline it came from.
    from treesurv.predictor import PredictorError, loads

    try:
        compiled = loads(files["predictor.json"], files["predictor.npz"])
    except PredictorError as exc:
        raise StageError(f"the compiled model does not load: {exc}") from None
    rows = pd.concat([pd.read_parquet(paths.train), pd.read_parquet(paths.test)])
    features = rows[list(schema.FEATURE_NAMES)]
    gap = float(
        np.max(np.abs(compiled.proba_columns(features) - pipeline.predict_proba(features)[:, 1]))
    )
    if gap > PARITY_TOLERANCE:
        raise StageError(f"compiled model differs from the sklearn pipeline by {gap:.2e}")

    metrics = json.loads(paths.metrics.read_text())
    pp = params["package"]
    raw_md5 = data.file_md5(paths.raw) if paths.raw.exists() else None
    manifest = bundle_mod.write_bundle(
        paths.bundle,
        files,
        name=str(pp.get("name", MODEL_NAME)),
        version=version or str(pp["version"]),
        extra={
            "git": bundle_mod.git_state(),
            "data": {"path": str(paths.raw), "md5": raw_md5, "train_rows": len(rows)},
            "params": params,
            "metrics": metrics,
            "schema": schema.schema_document(),
            "decision_threshold": float(params["evaluate"]["threshold"]),
            "parity_max_abs_diff": gap,
            "model": {
                "candidate": json.loads(paths.train_report.read_text())["chosen"]["candidate"],
                "features": list(encoder.features),
            },
        },
    )
    return manifest
