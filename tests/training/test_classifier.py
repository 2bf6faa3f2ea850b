"""Training the classifiers: deterministic, and never on an outcome column (tiny
searches on the in-memory study)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from treesurv.core import schema
from treesurv.core.config import Params
from treesurv.core.errors import InputError
from treesurv.training.classifier import CVResult


def _tiny_params() -> dict[str, Any]:
    return {
        "seed": 7,
        "features": {"cell_z": True},
        "train": {
            "candidates": ["logreg", "hgb", "forest", "forest_hgb"],
            "select_by": "roc_auc",
            "cv_folds": 3,
            "group_folds": 3,
            "search_iterations": 1,
            "vote_top": 1,
            "calibration": "sigmoid",
            "calibration_folds": 3,
            "grids": {
                "logreg": {"C": [1.0]},
                "hgb": {"max_iter": [20]},
                "forest": {"n_estimators": [10], "max_depth": [5]},
            },
        },
        "evaluate": {"calibration_bins": 10},
    }


def test_training_is_deterministic(model_study: pd.DataFrame) -> None:
    from treesurv.training.classifier import train

    frame = model_study.sample(600, random_state=1)
    a = train(frame, Params.parse(_tiny_params(), "test"), lambda m: None)
    b = train(frame, Params.parse(_tiny_params(), "test"), lambda m: None)
    # Forests sum their trees in threads, so the last bits may differ; what is
    # reported (four decimals) is identical.
    assert a.cv_metrics == pytest.approx(b.cv_metrics, rel=1e-12)
    assert a.cv_group_metrics == pytest.approx(b.cv_group_metrics, rel=1e-12)
    X = frame[list(schema.FEATURE_NAMES)]
    np.testing.assert_allclose(
        a.pipeline.predict_proba(X), b.pipeline.predict_proba(X), rtol=0, atol=1e-12
    )
    assert a.calibration == "sigmoid"
    assert {r["candidate"] for r in a.report()["search"]} == {
        "logreg",
        "hgb",
        "forest",
        "forest_hgb",
    }


def test_outcome_columns_can_never_be_features(model_study: pd.DataFrame) -> None:
    from treesurv.training.classifier import train

    frame = model_study.head(100)
    params = _tiny_params()
    params["features"]["columns"] = [*schema.FEATURE_NAMES, "Time"]
    with pytest.raises(InputError, match="outcome columns can never be features"):
        train(frame, Params.parse(params, "test"), lambda m: None)


def test_the_soft_vote_is_scored_without_refitting_and_equals_a_refit(
    model_study: pd.DataFrame,
) -> None:
    from treesurv.training.classifier import (
        _voting,
        cross_validate,
        feature_columns,
        make_estimator,
        pipeline_builder,
        soft_vote,
    )

    params = Params.parse(_tiny_params(), "test")
    frame = model_study.sample(400, random_state=2)
    features, cell_z = feature_columns(params)
    X, y = frame[list(features)], frame[schema.TARGET].to_numpy(dtype=int)
    cfg = {"forest": {"n_estimators": 10, "max_depth": 5}, "hgb": {"max_iter": 20}}

    def cv(model: Any) -> tuple[np.ndarray, list[float]]:
        return cross_validate(pipeline_builder(model, features, cell_z), X, y, 3, 7, n_jobs=1)

    members = []
    for name in ("forest", "hgb"):
        oof, folds = cv(make_estimator(name, cfg[name], 7))
        members.append(CVResult(name, cfg[name], {}, folds, oof))
    refit, _ = cv(_voting(cfg, 7))
    # Bit for bit: the vote's folds fit the same clones with the same seeds.
    np.testing.assert_array_equal(soft_vote(members), refit)
