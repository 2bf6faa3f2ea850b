"""The single-row scalar path and the compact node arrays score exactly like the
vectorised path, for every kind of compiled model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.test_predictor import MODELS
from treesurv import data, schema
from treesurv.compiler import compile_model
from treesurv.encoding import encode, fit_encoder
from treesurv.predictor import FastPredictor, _float32_thresholds, dumps, loads


@pytest.fixture(scope="module")
def study(real_csv: Any) -> tuple[pd.DataFrame, np.ndarray]:
    frame, _ = data.validate_file(real_csv)
    return frame, frame[schema.TARGET].to_numpy(dtype=int)


@pytest.mark.parametrize("name", list(MODELS))
def test_predict_one_equals_the_sklearn_model(
    name: str, study: tuple[pd.DataFrame, np.ndarray]
) -> None:
    frame, y = study
    params = fit_encoder(frame)
    X = encode(params, frame)
    model = MODELS[name]().fit(X, y)
    files = dumps(*compile_model(params, model))
    fast = FastPredictor(loads(files["predictor.json"], files["predictor.npz"]))
    sample = frame.sample(300, random_state=0)
    rows = [
        {k: (None if schema.is_missing(v) else v) for k, v in r.items()}
        for r in sample[list(schema.FEATURE_NAMES)].to_dict("records")
    ]
    expected = model.predict_proba(encode(params, sample))[:, 1]
    singles = np.array([fast.predict_one(r) for r in rows])
    np.testing.assert_allclose(singles, expected, atol=1e-9, rtol=0)


@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=64), min_size=1, max_size=50),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=50),
)
def test_float32_thresholds_keep_every_comparison(
    thresholds: list[float], values: list[float]
) -> None:
    t64 = np.array(thresholds)
    t32 = _float32_thresholds(t64)
    assert t32.dtype == np.float32
    v = np.array(values, dtype=np.float32)
    # For float32 inputs, v <= t (in float64) holds exactly when v <= t32.
    np.testing.assert_array_equal(v[:, None] <= t64[None, :], v[:, None] <= t32[None, :])
    # Including values that are exactly the rounded thresholds.
    np.testing.assert_array_equal(t32[:, None] <= t64[None, :], t32[:, None] <= t32[None, :])
