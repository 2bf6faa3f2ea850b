"""Training the survival models: deterministic, refusing bad input, with the field
plot as a site (tiny searches on the in-memory study)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pandas as pd
import pytest

from treesurv.core import schema
from treesurv.core.config import Params
from treesurv.core.errors import InputError


def _parsed(raw: dict[str, Any]) -> Params:
    return Params.parse(raw, "test")


def _tiny(seed: int = 3) -> dict[str, Any]:
    return {
        "seed": seed,
        "features": {"cell_z": True},
        "survival": {
            "candidates": ["cox", "gbsa"],
            "select_by": "concordance",
            "concordance_tolerance": 0.0,
            "cv_folds": 3,
            "search_iterations": 1,
            "horizons": [30, 60],
            "grids": {"cox": {"alpha": [1.0]}, "gbsa": {"n_estimators": [20], "max_depth": [2]}},
        },
    }


def test_survival_training_is_deterministic(model_study: pd.DataFrame) -> None:
    from treesurv.training.survival import train_survival

    frame = model_study.sample(500, random_state=2)
    a = train_survival(frame, _parsed(_tiny()), lambda m: None)
    b = train_survival(frame, _parsed(_tiny()), lambda m: None)
    assert a.cv_metrics == b.cv_metrics
    assert {r["candidate"] for r in a.report()["search"]} == {"cox", "gbsa"}
    assert {30.0, 60.0} <= set(a.days.tolist())
    X = frame[list(schema.FEATURE_NAMES)]
    np.testing.assert_array_equal(a.pipeline.predict(X), b.pipeline.predict(X))


def test_survival_training_refuses_bad_input(model_study: pd.DataFrame) -> None:
    from treesurv.training.survival import train_survival

    frame = model_study.head(200)
    with pytest.raises(InputError, match="need the 'Time' column"):
        train_survival(frame.drop(columns=[schema.TIME]), _parsed(_tiny()), lambda m: None)
    params = _tiny()
    params["survival"]["candidates"] = ["deepsurv"]
    with pytest.raises(InputError, match="unknown survival candidate 'deepsurv'"):
        train_survival(frame, _parsed(params), lambda m: None)
    params = _tiny()
    params["features"]["columns"] = [*schema.DESIGN, "Census"]
    with pytest.raises(InputError, match="outcome columns can never be features"):
        train_survival(frame, _parsed(params), lambda m: None)
    params = _tiny()
    params["survival"]["site"] = True
    with pytest.raises(InputError, match=r"survival\.site is on but the data has no 'Plot'"):
        train_survival(frame.drop(columns=[schema.SITE.name]), _parsed(params), lambda m: None)
    with pytest.raises(InputError, match="unknown model variant 'later'"):
        _parsed(params).variant("later")
    planning = _parsed({**_tiny(), "train": {"cv_folds": 5}, "planning": {"cv_folds": 3}}).variant(
        "planning"
    )
    assert planning.features.columns == tuple(schema.DESIGN)
    assert planning.train.cv_folds == 3


def test_survival_training_with_the_site(model_study: pd.DataFrame) -> None:
    from treesurv.training.survival import train_survival

    params = _tiny()
    params["survival"]["site"] = True
    frame = model_study.sample(600, random_state=4)
    said: list[str] = []
    result = train_survival(frame, _parsed(params), said.append)
    assert not [m for m in said if "no plot of the study" in m]
    assert result.report()["features"] == [*schema.FEATURE_NAMES, schema.SITE.name]
    assert result.pipeline.named_steps["encode"].params_.site
    # Both scores are of the same out-of-fold rows: with the plot and without it.
    cv = result.cv_metrics
    assert 0.5 < cv["concordance_without_plot"] < 1 and 0.5 < cv["concordance"] < 1
    assert cv["concordance"] != cv["concordance_without_plot"]
    # Rows without a study plot are trained on as a typical site, and said so.
    odd = frame.astype({schema.SITE.name: object})
    site = cast(int, odd.columns.get_loc(schema.SITE.name))  # a unique column: its position
    odd.iloc[:3, site] = [None, 19, 2.5]
    train_survival(odd, _parsed(params), said.append)
    assert "3 training row(s) have no plot of the study" in " ".join(said)
