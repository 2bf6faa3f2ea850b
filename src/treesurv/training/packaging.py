"""The `package` stage: compile every sub-model, check it scores exactly like its
scikit-learn pipeline, and write the verified bundle with its manifest."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from treesurv.core import schema
from treesurv.core.config import VARIANTS, Params, Paths
from treesurv.core.files import file_md5
from treesurv.core.profile import numeric_profile
from treesurv.inference import bundle as bundle_mod
from treesurv.inference.bundle import KINDS, SUBMODEL_STEMS, submodel_entry
from treesurv.inference.predictor import PredictorError, dumps, loads, loads_survival
from treesurv.training.compiler import compile_model, compile_survival
from treesurv.training.stages import StageError, load_pipeline

PARITY_TOLERANCE = 1e-6


def _bundle_profile(params: Params) -> bytes:
    """The inputs' reference profile plus the distribution of the model's predictions on
    rows it was not fitted on (out-of-fold), the reference for prediction drift."""
    paths = params.paths
    profile = json.loads(paths.profile.read_text())
    oof = pd.read_parquet(paths.oof)["p_cv"].to_numpy(dtype=float)
    profile["prediction"] = {
        **numeric_profile(oof, params.data.profile_bins),
        "source": "out-of-fold predictions of the chosen model on the training rows",
    }
    return (json.dumps(profile, indent=2) + "\n").encode()


def _explore_files(paths: Paths) -> dict[str, bytes]:
    """The study report's files (page, JSON, figures) as the bundle holds them: by
    their own flat names. None when the report was not written (the bundle then has
    no report, and the service answers /explore with 404)."""
    page = paths.explore / bundle_mod.EXPLORE_HTML
    if not page.is_file():
        return {}
    return {
        f.name: f.read_bytes()
        for f in sorted(paths.explore.iterdir())
        if f.is_file() and f.name.startswith(bundle_mod.EXPLORE_PREFIX)
    }


def _compile_checked(
    paths: Paths, variant: str, kind: str, rows: pd.DataFrame, days: np.ndarray
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Compile one sub-model and check it scores like its scikit-learn pipeline on
    every row (survival: at every day the training data has)."""

    pipeline = load_pipeline(paths.fitted(variant, kind))
    encoder = pipeline.named_steps["encode"].params_
    compile_fn = compile_model if kind == "classifier" else compile_survival
    stem = SUBMODEL_STEMS[(variant, kind)]
    files = dumps(*compile_fn(encoder, pipeline.named_steps["model"]), stem=stem)
    features = rows[[c for c in schema.INPUT_NAMES if c in rows.columns]]
    try:
        if kind == "classifier":
            compiled = loads(files[f"{stem}.json"], files[f"{stem}.npz"])
            got = compiled.proba_columns(features)
            expected = pipeline.predict_proba(features)[:, 1]
        else:
            compiled_s = loads_survival(files[f"{stem}.json"], files[f"{stem}.npz"])
            got = compiled_s.survival_columns(features, days)
            expected = np.vstack([fn(days) for fn in pipeline.predict_survival_function(features)])
    except PredictorError as exc:
        raise StageError(f"the compiled {variant} {kind} does not load: {exc}") from None
    gap = float(np.max(np.abs(got - expected)))
    if gap > PARITY_TOLERANCE:
        raise StageError(
            f"compiled {variant} {kind} differs from the sklearn pipeline by {gap:.2e}"
        )
    info: dict[str, Any] = {"features": list(encoder.features), "parity_max_abs_diff": gap}
    if encoder.site:
        info["site"] = schema.SITE.name
    return files, info


def stage_package(params: Params, version: str | None = None) -> dict[str, Any]:

    paths = params.paths
    rows = pd.concat([pd.read_parquet(paths.train), pd.read_parquet(paths.test)])
    train_days = np.unique(pd.read_parquet(paths.train)[schema.TIME].to_numpy(dtype=float))
    files: dict[str, bytes] = {}
    submodels: dict[str, dict[str, Any]] = {v: {} for v in VARIANTS}
    survival_reports = json.loads(paths.survival_report.read_text())
    for variant in VARIANTS:
        for kind in KINDS:
            # The compiled model must score exactly like the sklearn pipeline it came from.
            sub_files, info = _compile_checked(paths, variant, kind, rows, train_days)
            files.update(sub_files)
            if kind == "classifier":
                report_path = paths.classifier_outputs(variant)[1]
                info["candidate"] = json.loads(report_path.read_text())["chosen"]["candidate"]
            else:
                info["candidate"] = survival_reports[variant]["chosen"]["candidate"]
            # The fitted scikit-learn pipeline too, as skops, for audits and re-scoring.
            skops_path = paths.fitted(variant, kind)
            info["skops"] = skops_path.name
            files[skops_path.name] = skops_path.read_bytes()
            submodels[variant][kind] = submodel_entry(variant, kind, **info)
    files["model_card.md"] = paths.card.read_bytes()
    files["reference_profile.json"] = _bundle_profile(params)
    explore = _explore_files(paths)
    files.update(explore)

    metrics = json.loads(paths.metrics.read_text())
    raw_md5 = file_md5(paths.raw) if paths.raw.exists() else None
    full = submodels["full"]["classifier"]
    manifest = bundle_mod.write_bundle(
        paths.bundle,
        files,
        name=params.package.name,
        version=version or params.package.version,
        extra={
            "git": bundle_mod.git_state(),
            "data": {"path": str(paths.raw), "md5": raw_md5, "train_rows": len(rows)},
            "params": params.raw,
            "metrics": metrics,
            "schema": schema.schema_document(),
            "decision_threshold": params.evaluate.threshold,
            "parity_max_abs_diff": full["parity_max_abs_diff"],
            "model": {"candidate": full["candidate"], "features": full["features"]},
            "submodels": submodels,
            "survival": {
                "max_days": float(train_days.max()),
                "default_days": [float(d) for d in params.survival.default_days],
            },
            **({"explore": bundle_mod.explore_entry(explore)} if explore else {}),
        },
    )
    return manifest
