"""Build small real bundles quickly (a few trees on the real rows) for tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.ensemble import RandomForestClassifier

from treesurv import bundle, data, schema
from treesurv.compiler import compile_model
from treesurv.encoding import encode, fit_encoder
from treesurv.predictor import dumps


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
    files["model_card.md"] = f"# Test model {version}\n".encode()
    files["reference_profile.json"] = json.dumps(data.reference_profile(frame)).encode()
    return bundle.write_bundle(
        dest,
        files,
        name="tree-survival",
        version=version,
        extra={
            "decision_threshold": threshold,
            "metrics": {"test": {"roc_auc": 0.9}},
            "schema": schema.schema_document(),
            "data": {"md5": None},
            "params": {},
        },
    )
