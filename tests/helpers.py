"""Build small real bundles quickly (a few trees on the real rows) for tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.ensemble import RandomForestClassifier

from treesurv.core import schema
from treesurv.core.encoding import encode, fit_encoder
from treesurv.core.profile import reference_profile
from treesurv.inference import bundle
from treesurv.inference.predictor import dumps
from treesurv.training.compiler import compile_model


def build_bundle(
    dest: Path,
    frame: pd.DataFrame,
    version: str = "1.0.0",
    *,
    trees: int = 20,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """A complete, verified bundle from a small forest trained on `frame`."""
    params = fit_encoder(frame)
    y = frame[schema.TARGET].to_numpy(dtype=int)
    model = RandomForestClassifier(trees, max_depth=6, random_state=seed).fit(
        encode(params, frame), y
    )
    files = dumps(*compile_model(params, model))
    return _write(dest, files, frame, version, {"decision_threshold": threshold})


def _write(
    dest: Path, files: dict[str, bytes], frame: pd.DataFrame, version: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """Add the card and profile, then write the bundle with the test manifest fields."""
    files["model_card.md"] = f"# Test model {version}\n".encode()
    files["reference_profile.json"] = json.dumps(reference_profile(frame)).encode()
    return bundle.write_bundle(
        dest,
        files,
        name="tree-survival",
        version=version,
        extra={
            "decision_threshold": 0.5,
            "metrics": {"test": {"roc_auc": 0.9}},
            "schema": schema.schema_document(),
            "data": {"md5": None},
            "params": {},
            **extra,
        },
    )


def build_four_model_bundle(
    dest: Path, frame: pd.DataFrame, version: str = "1.0.0", *, trees: int = 10
) -> dict[str, Any]:
    """A verified bundle with all four sub-models (full/planning x classifier/survival),
    small and quick: forests for the classifiers, boosted Cox trees for survival."""
    from sksurv.ensemble import GradientBoostingSurvivalAnalysis

    from treesurv.training.compiler import compile_survival
    from treesurv.training.survival import survival_target

    y = frame[schema.TARGET].to_numpy(dtype=int)
    ys = survival_target(frame)
    files: dict[str, bytes] = {}
    submodels: dict[str, dict[str, Any]] = {}
    for variant, features in (("full", schema.FEATURE_NAMES), ("planning", schema.DESIGN)):
        params = fit_encoder(frame, features)
        clf = RandomForestClassifier(trees, max_depth=5, random_state=0)
        clf.fit(encode(params, frame), y)
        # The survival models take the field plot too, as the pipeline's do (with
        # enough trees that some split on it).
        site = fit_encoder(frame, features, site=True)
        surv = GradientBoostingSurvivalAnalysis(n_estimators=3 * trees, max_depth=2, random_state=0)
        surv.fit(encode(site, frame), ys)
        for kind, compiled in (
            ("classifier", compile_model(params, clf)),
            ("survival", compile_survival(site, surv)),
        ):
            entry = bundle.submodel_entry(variant, kind, features=list(features))
            files.update(dumps(*compiled, stem=entry["spec"].removesuffix(".json")))
            submodels.setdefault(variant, {})[kind] = entry
    return _write(
        dest,
        files,
        frame,
        version,
        {"submodels": submodels, "survival": {"max_days": float(ys["time"].max())}},
    )


def flip_middle_byte(path: Path) -> None:
    """Tamper with a file: one bit of its middle byte flipped."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
