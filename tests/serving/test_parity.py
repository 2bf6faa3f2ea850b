"""The serving fast path equals the scikit-learn pipeline on every real row: one
instance at a time (predict_one), small batches (predict_rows) and through the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.helpers import instances
from treesurv.core import schema
from treesurv.inference.bundle import load_verified
from treesurv.inference.predictor import FastPredictor
from treesurv.training.stages import load_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(bundle_dir: Path, real_study: pd.DataFrame) -> tuple[FastPredictor, np.ndarray, Any]:
    _, compiled = load_verified(bundle_dir)
    pipeline = load_pipeline(bundle_dir.parent / "model.skops")
    expected = pipeline.predict_proba(real_study[list(schema.FEATURE_NAMES)])[:, 1]
    return FastPredictor(compiled), expected, compiled


def test_predict_one_on_every_real_row(
    reference: tuple[FastPredictor, np.ndarray, Any], real_study: pd.DataFrame
) -> None:
    fast, expected, _ = reference
    got = np.array([fast.predict_one(row) for row in instances(real_study)])
    assert np.max(np.abs(got - expected)) < 1e-6
    assert np.max(np.abs(got - expected)) < 1e-12  # in practice: rounding only


def test_predict_rows_on_every_real_row(
    reference: tuple[FastPredictor, np.ndarray, Any], real_study: pd.DataFrame
) -> None:
    fast, expected, compiled = reference
    rows = instances(real_study)
    got = np.concatenate([fast.predict_rows(rows[i : i + 1000]) for i in range(0, len(rows), 1000)])
    np.testing.assert_allclose(got, expected, atol=1e-12, rtol=0)
    # The parallel kernel of large batches gives the same numbers.
    big = pd.concat([real_study] * 2, ignore_index=True)
    np.testing.assert_allclose(compiled.proba_columns(big)[: len(real_study)], expected, atol=1e-12)
