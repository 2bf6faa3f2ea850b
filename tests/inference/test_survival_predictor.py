"""The compiled survival model matches scikit-survival and behaves like a survival curve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.ensemble import GradientBoostingSurvivalAnalysis, RandomSurvivalForest
from sksurv.linear_model import CoxPHSurvivalAnalysis

from tests.helpers import records
from treesurv.core import schema
from treesurv.core.encoding import encode, fit_encoder
from treesurv.inference.predictor import (
    HorizonError,
    PredictorError,
    SurvivalPredictor,
    dumps,
    loads,
    loads_survival,
)
from treesurv.training.compiler import CompileError, compile_model, compile_survival

MODELS: dict[str, Callable[[], Any]] = {
    "gbsa": lambda: GradientBoostingSurvivalAnalysis(
        n_estimators=40, max_depth=3, subsample=0.5, random_state=0
    ),
    "gbsa_stumps": lambda: GradientBoostingSurvivalAnalysis(n_estimators=30, max_depth=1),
    "cox": lambda: CoxPHSurvivalAnalysis(alpha=1.0, ties="efron"),
    "scaled_cox": lambda: Pipeline(
        [("s", StandardScaler()), ("c", CoxPHSurvivalAnalysis(alpha=0.1))]
    ),
}


def _compiled(frame: pd.DataFrame, y: np.ndarray, model: Any, features: Any) -> Any:
    params = fit_encoder(frame, features)
    fitted = model.fit(encode(params, frame), y)
    files = dumps(*compile_survival(params, fitted), stem="survival")
    return fitted, params, loads_survival(files["survival.json"], files["survival.npz"])


@pytest.mark.parametrize("features", [schema.FEATURE_NAMES, schema.DESIGN], ids=["full", "design"])
@pytest.mark.parametrize("name", list(MODELS))
def test_parity_with_sksurv_on_every_row(
    name: str, features: tuple[str, ...], survival_xy: tuple[pd.DataFrame, np.ndarray]
) -> None:
    frame, y = survival_xy
    fitted, params, compiled = _compiled(frame, y, MODELS[name](), features)
    X = encode(params, frame)
    days = compiled.days  # every distinct day of the data, first to last
    expected = np.vstack([fn(days) for fn in fitted.predict_survival_function(X)])
    predictor = SurvivalPredictor(compiled)
    got = predictor.survival_at(frame, days)
    assert got.shape == (len(frame), len(days))
    assert np.max(np.abs(got - expected)) < 1e-6
    np.testing.assert_allclose(predictor.risk(frame), fitted.predict(X), atol=1e-9, rtol=0)
    # Dict instances (the API's path) and large batches (the parallel kernel): same numbers.
    rows = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in records(frame[list(features)])
    ]
    np.testing.assert_array_equal(predictor.survival_at(rows, days), got)
    big = pd.concat([frame] * 2, ignore_index=True)
    np.testing.assert_array_equal(predictor.survival_at(big, days)[: len(frame)], got)


def test_curves_are_survival_curves(survival_xy: tuple[pd.DataFrame, np.ndarray]) -> None:
    frame, y = survival_xy
    _, _, compiled = _compiled(frame, y, MODELS["gbsa"](), schema.FEATURE_NAMES)
    predictor = SurvivalPredictor(compiled)
    days = np.union1d(np.linspace(0, compiled.max_days, 60), compiled.days)
    surv = predictor.survival_at(frame, days)
    assert np.all((surv >= 0) & (surv <= 1))
    assert np.all(np.diff(surv, axis=1) <= 0), "survival must never rise with the day"
    # Before the first observed day nobody has died yet.
    early = days < compiled.days[0]
    assert early.any() and np.all(surv[:, early] == 1.0)
    np.testing.assert_allclose(
        predictor.death_probability_at(frame, 60.0), 1 - predictor.survival_at(frame, [60.0])[:, 0]
    )


def test_median_survival_days(survival_xy: tuple[pd.DataFrame, np.ndarray]) -> None:
    frame, y = survival_xy
    _, _, compiled = _compiled(frame, y, MODELS["gbsa"](), schema.FEATURE_NAMES)
    predictor = SurvivalPredictor(compiled)
    median = predictor.median_survival_days(frame)
    surv = predictor.survival_at(frame, compiled.days)
    reached = ~np.isnan(median)
    # Maples and cherries mostly die within the survival_xy; most oaks outlive it.
    assert 0.3 < reached.mean() < 0.95
    assert np.all(np.min(surv[~reached], axis=1) > 0.5)
    idx = np.searchsorted(compiled.days, median[reached])
    assert np.all(surv[reached, idx] <= 0.5)
    before = idx - 1
    ok = before >= 0
    assert np.all(surv[reached][ok, before[ok]] > 0.5)


@pytest.mark.parametrize(
    ("days", "message"),
    [
        ([-1.0], "day -1 is negative"),
        ([30.0, 200.0], r"day 200 is beyond the study's follow-up \(115.5 days\)"),
        ([float("nan")], "not a finite number"),
        ([], "at least one day"),
        (["soon"], "days must be numbers"),
    ],
)
def test_bad_days_are_refused(
    days: list[Any], message: str, survival_xy: tuple[pd.DataFrame, np.ndarray]
) -> None:
    frame, y = survival_xy
    _, _, compiled = _compiled(frame, y, MODELS["cox"](), schema.DESIGN)
    assert compiled.max_days == y["time"].max() == 115.5
    with pytest.raises(HorizonError, match=message):
        SurvivalPredictor(compiled).survival_at(frame.head(3), days)


def test_only_cox_type_models_compile(survival_xy: tuple[pd.DataFrame, np.ndarray]) -> None:
    frame, y = survival_xy
    params = fit_encoder(frame.head(300), schema.DESIGN)
    X = encode(params, frame.head(300))
    squared = GradientBoostingSurvivalAnalysis(loss="squared", n_estimators=5).fit(X, y[:300])
    with pytest.raises(CompileError, match="only loss='coxph'"):
        compile_survival(params, squared)
    dropout = GradientBoostingSurvivalAnalysis(n_estimators=5, dropout_rate=0.1).fit(X, y[:300])
    with pytest.raises(CompileError, match="dropout is not supported"):
        compile_survival(params, dropout)
    forest = RandomSurvivalForest(n_estimators=3, random_state=0).fit(X, y[:300])
    with pytest.raises(CompileError, match="cannot compile survival model RandomSurvivalForest"):
        compile_survival(params, forest)


@pytest.fixture(scope="module")
def survival_files(survival_xy: tuple[pd.DataFrame, np.ndarray]) -> dict[str, Any]:
    frame, y = survival_xy
    params = fit_encoder(frame, schema.DESIGN)
    model = MODELS["gbsa_stumps"]().fit(encode(params, frame), y)
    spec, arrays = compile_survival(params, model)
    return {"spec": spec, "arrays": arrays}


def _load(spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    files = dumps(spec, arrays, stem="s")
    return loads_survival(files["s.json"], files["s.npz"])


def test_malformed_baselines_are_refused(survival_files: dict[str, Any]) -> None:
    spec, arrays = survival_files["spec"], survival_files["arrays"]
    rising = dict(arrays, baseline_survival=arrays["baseline_survival"][::-1].copy())
    with pytest.raises(PredictorError, match="non-increasing"):
        _load(spec, rising)
    unsorted = dict(arrays, baseline_days=arrays["baseline_days"][::-1].copy())
    with pytest.raises(PredictorError, match="increasing and non-negative"):
        _load(spec, unsorted)
    short = dict(arrays, baseline_days=arrays["baseline_days"][:-1])
    with pytest.raises(PredictorError, match="differ in shape"):
        _load(spec, short)
    missing = {k: v for k, v in arrays.items() if k != "baseline_survival"}
    with pytest.raises(PredictorError, match="malformed survival model"):
        _load(spec, missing)
    with pytest.raises(PredictorError, match="risk must be a boosted or linear score"):
        _load(
            dict(spec, risk={"kind": "voting", "members": [spec["risk"]], "weights": [1]}), arrays
        )


def test_classifier_and_survival_files_are_not_interchangeable(
    survival_files: dict[str, Any], survival_xy: tuple[pd.DataFrame, np.ndarray]
) -> None:
    from sklearn.ensemble import RandomForestClassifier

    frame, _ = survival_xy
    spec, arrays = survival_files["spec"], survival_files["arrays"]
    surv = dumps(spec, arrays)
    with pytest.raises(PredictorError, match="expected 'treesurv-compiled/1'"):
        loads(surv["predictor.json"], surv["predictor.npz"])
    params = fit_encoder(frame, schema.DESIGN)
    clf = RandomForestClassifier(3, random_state=0).fit(
        encode(params, frame), frame[schema.TARGET].to_numpy(dtype=int)
    )
    files = dumps(*compile_model(params, clf))
    with pytest.raises(PredictorError, match="expected 'treesurv-survival/1'"):
        loads_survival(files["predictor.json"], files["predictor.npz"])
