"""The reference profile of the training data: per-feature quantile bins,
category shares and a sketch, which the drift check compares new data with."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from treesurv.core import schema


def reference_profile(frame: pd.DataFrame, bins: int = 10) -> dict[str, Any]:
    """A compact description of the training inputs, for drift checks later.

    Numeric features: quantile bin edges and the share of rows in each bin, a
    quantile sketch and summary statistics; categorical: the share of each
    category. Missing values have their own share so that a change in
    missingness counts as drift.
    """
    features: dict[str, Any] = {}
    n = len(frame)
    for f in schema.FEATURES:
        col = frame[f.name]
        missing = float(col.isna().mean()) if n else 0.0
        if f.kind == "categorical":
            counts = col.value_counts(dropna=True)
            features[f.name] = {
                "kind": "categorical",
                "shares": {c: float(counts.get(c, 0)) / n for c in f.categories},
                "missing": missing,
            }
        else:
            features[f.name] = numeric_profile(col.dropna().to_numpy(dtype=float), bins, missing)
    return {"rows": n, "features": features}


# Quantiles at (i + 0.5) / SKETCH_POINTS: a stand-in sample of the reference that
# keeps its ties, so that a two-sample KS test can run against the profile alone.
SKETCH_POINTS = 100


def numeric_profile(values: np.ndarray, bins: int, missing: float = 0.0) -> dict[str, Any]:
    """Quantile bins, a quantile sketch and summary statistics of one numeric column."""
    edges = _quantile_edges(values, bins)
    hist = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0]
    probs = (np.arange(SKETCH_POINTS) + 0.5) / SKETCH_POINTS
    return {
        "kind": "numeric",
        "edges": edges.tolist(),
        "shares": (hist / max(len(values), 1)).tolist(),
        "missing": missing,
        "count": len(values),
        "mean": float(values.mean()) if len(values) else None,
        "std": float(values.std(ddof=1)) if len(values) > 1 else None,
        "min": float(values.min()) if len(values) else None,
        "max": float(values.max()) if len(values) else None,
        "quantiles": {str(q): float(np.quantile(values, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)}
        if len(values)
        else {},
        "sketch": np.quantile(values, probs, method="inverted_cdf").tolist() if len(values) else [],
    }


def _quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    if len(values) == 0:
        return np.array([0.0, 1.0])
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    return edges
