"""The single-row scalar path and the compact node arrays score exactly like the
vectorised path, for every kind of compiled model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import classifier_zoo, records
from treesurv.core import schema
from treesurv.core.encoding import encode, fit_encoder
from treesurv.inference.predictor import (
    FastPredictor,
    PredictorError,
    Trees,
    _float32_thresholds,
    dumps,
    loads,
    trees_of,
)
from treesurv.training.compiler import compile_model

MODELS = classifier_zoo()


@pytest.mark.parametrize("name", list(MODELS))
def test_predict_one_equals_the_sklearn_model(
    name: str, study_xy: tuple[pd.DataFrame, np.ndarray]
) -> None:
    frame, y = study_xy
    params = fit_encoder(frame)
    X = encode(params, frame)
    model = MODELS[name]().fit(X, y)
    files = dumps(*compile_model(params, model))
    fast = FastPredictor(loads(files["predictor.json"], files["predictor.npz"]))
    sample = frame.sample(300, random_state=0)
    rows = [
        {k: (None if schema.is_missing(v) else v) for k, v in r.items()}
        for r in records(sample[list(schema.FEATURE_NAMES)])
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


def _breadth_first(arrays: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
    """The same trees with nodes renumbered breadth-first (children still after
    parents, but a left child no longer right after its parent)."""
    left, right = arrays[f"{key}_left"], arrays[f"{key}_right"]
    order: list[int] = []
    for root in arrays[f"{key}_roots"].tolist():
        queue = [root]
        while queue:
            node = queue.pop(0)
            order.append(node)
            if left[node] != -1:
                queue += [int(left[node]), int(right[node])]
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    out = dict(arrays)
    for field in ("feature", "threshold", "value", "missing_left"):
        out[f"{key}_{field}"] = arrays[f"{key}_{field}"][order]
    for field in ("left", "right"):
        old = arrays[f"{key}_{field}"][order]
        out[f"{key}_{field}"] = np.where(old == -1, -1, position[np.maximum(old, 0)])
    out[f"{key}_roots"] = position[arrays[f"{key}_roots"]]
    return out


@pytest.fixture(scope="module")
def forest_files(study_xy: tuple[pd.DataFrame, np.ndarray]) -> tuple[Any, dict[str, np.ndarray]]:
    from sklearn.ensemble import RandomForestClassifier

    frame, y = study_xy
    params = fit_encoder(frame)
    model = RandomForestClassifier(10, max_depth=6, random_state=0).fit(encode(params, frame), y)
    spec, arrays = compile_model(params, model)
    return spec, dict(arrays)


def test_any_node_order_is_laid_out_depth_first(
    forest_files: tuple[Any, dict[str, np.ndarray]], study_xy: tuple[pd.DataFrame, np.ndarray]
) -> None:
    spec, arrays = forest_files
    key = spec["model"]["trees"]
    shuffled = _breadth_first(arrays, key)
    assert not np.array_equal(shuffled[f"{key}_left"], arrays[f"{key}_left"])
    frame = study_xy[0].head(500)
    a = loads(*dumps(spec, arrays).values())
    b = loads(*dumps(spec, shuffled).values())
    np.testing.assert_array_equal(a.proba_columns(frame), b.proba_columns(frame))
    x = FastPredictor(b)
    rows = records(frame[list(schema.FEATURE_NAMES)].head(20))
    for row, expected in zip(rows, a.proba_columns(frame.head(20)), strict=True):
        clean = {k: (None if schema.is_missing(v) else v) for k, v in row.items()}
        assert x.predict_one(clean) == pytest.approx(expected, abs=1e-12)


def test_a_node_with_two_parents_is_refused(
    forest_files: tuple[Any, dict[str, np.ndarray]],
) -> None:
    spec, arrays = forest_files
    key = spec["model"]["trees"]
    shuffled = _breadth_first(arrays, key)
    left, right = shuffled[f"{key}_left"].copy(), shuffled[f"{key}_right"].copy()
    inner = np.flatnonzero(left != -1)
    # Point a second parent at an existing subtree (still in topological order).
    parent, other = inner[0], inner[1]
    right[other] = right[parent] if right[parent] > other else right[other]
    left[other] = right[parent] if right[parent] > other else left[other]
    shuffled[f"{key}_left"], shuffled[f"{key}_right"] = left, right
    with pytest.raises(PredictorError, match="two parents"):
        loads(*dumps(spec, shuffled).values())


def test_each_tree_walks_its_depth(
    forest_files: tuple[Any, dict[str, np.ndarray]], study_xy: tuple[pd.DataFrame, np.ndarray]
) -> None:
    """The branch-free walks take each tree's depth in steps: the depths the layout
    finds are scikit-learn's own, and a leaf is its own child."""
    from sklearn.ensemble import RandomForestClassifier

    frame, y = study_xy
    params = fit_encoder(frame)
    model = RandomForestClassifier(12, max_depth=7, random_state=3).fit(encode(params, frame), y)
    files = dumps(*compile_model(params, model))
    (trees,) = trees_of(loads(files["predictor.json"], files["predictor.npz"]).model)
    assert trees.depth is not None
    assert trees.depth.tolist() == [tree.get_depth() for tree in model.estimators_]
    leaves = np.flatnonzero(trees.leaves)
    assert np.array_equal(trees.left[leaves], leaves)
    assert np.array_equal(trees.right[leaves], leaves)


def test_a_shared_subtree_in_depth_first_order_is_refused() -> None:
    """Node 2 is the right child of node 0 and the left child of node 1, with every
    left child right after its parent: a DAG, not a tree, refused at load (walking
    shared subtrees level by level could take exponential time)."""
    trees = Trees(
        feature=np.array([0, 0, -1, -1], dtype=np.int32),
        threshold=np.zeros(4),
        left=np.array([1, 2, -1, -1], dtype=np.int32),
        right=np.array([2, 3, -1, -1], dtype=np.int32),
        value=np.zeros(4),
        missing_left=np.zeros(4, dtype=bool),
        roots=np.array([0], dtype=np.int32),
        float32=False,
    )
    trees.check(1, "dag")
    with pytest.raises(PredictorError, match="two parents"):
        trees.depth_first()
