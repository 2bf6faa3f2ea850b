"""The compiled predictor scores exactly like scikit-learn, and refuses malformed models."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import (
    RandomForestClassifier,
)

from tests.helpers import classifier_zoo, records
from treesurv.core import schema
from treesurv.core.encoding import encode, fit_encoder
from treesurv.inference.predictor import FastPredictor, PredictorError, dumps, loads
from treesurv.training.compiler import CompileError, compile_model

MODELS = classifier_zoo()


@pytest.mark.parametrize("name", list(MODELS))
def test_parity_with_sklearn_on_every_row(
    name: str, study_xy: tuple[pd.DataFrame, np.ndarray]
) -> None:
    frame, y = study_xy
    params = fit_encoder(frame)
    X = encode(params, frame)
    model = MODELS[name]().fit(X, y)
    spec, arrays = compile_model(params, model)
    files = dumps(spec, arrays)
    compiled = loads(files["predictor.json"], files["predictor.npz"])
    expected = model.predict_proba(X)[:, 1]
    got = compiled.proba_columns(frame)
    assert np.max(np.abs(got - expected)) < 1e-9
    # Large batches take the parallel kernel: same numbers.
    big = pd.concat([frame] * 2, ignore_index=True)
    np.testing.assert_allclose(
        compiled.proba_columns(big)[: len(frame)], expected, atol=1e-9, rtol=0
    )


def test_fast_predictor_single_and_batch_agree(study_xy: tuple[pd.DataFrame, np.ndarray]) -> None:
    frame, y = study_xy
    params = fit_encoder(frame)
    model = RandomForestClassifier(30, random_state=0).fit(encode(params, frame), y)
    files = dumps(*compile_model(params, model))
    fast = FastPredictor(loads(files["predictor.json"], files["predictor.npz"]))
    rows = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in records(frame[list(schema.FEATURE_NAMES)].head(50))
    ]
    batch = fast.predict_rows(rows)
    singles = np.array([fast.predict_one(r) for r in rows])
    np.testing.assert_allclose(batch, singles, atol=1e-12, rtol=0)
    np.testing.assert_allclose(
        batch, model.predict_proba(encode(params, frame.head(50)))[:, 1], atol=1e-12, rtol=0
    )


def test_unsupported_estimator_is_refused(study_xy: tuple[pd.DataFrame, np.ndarray]) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    frame, y = study_xy
    params = fit_encoder(frame)
    model = KNeighborsClassifier().fit(encode(params, frame), y)
    with pytest.raises(CompileError, match="cannot compile KNeighborsClassifier"):
        compile_model(params, model)


@pytest.fixture(scope="module")
def compiled_files(study_xy: tuple[pd.DataFrame, np.ndarray]) -> dict[str, Any]:
    frame, y = study_xy
    params = fit_encoder(frame)
    model = RandomForestClassifier(5, max_depth=4, random_state=0).fit(encode(params, frame), y)
    return dict(zip(("spec", "arrays"), compile_model(params, model), strict=True))


def _load(spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    files = dumps(spec, arrays)
    return loads(files["predictor.json"], files["predictor.npz"])


def test_cyclic_tree_is_refused(compiled_files: dict[str, Any]) -> None:
    arrays = dict(compiled_files["arrays"])
    key = next(k for k in arrays if k.endswith("_left"))
    left = arrays[key].copy()
    left[1] = 0  # a child pointing back to the root would loop forever
    arrays[key] = left
    with pytest.raises(PredictorError, match="topological order"):
        _load(compiled_files["spec"], arrays)


def test_out_of_range_feature_is_refused(compiled_files: dict[str, Any]) -> None:
    arrays = dict(compiled_files["arrays"])
    key = next(k for k in arrays if k.endswith("_feature"))
    feature = arrays[key].copy()
    feature[0] = 999
    arrays[key] = feature
    with pytest.raises(PredictorError, match="feature the encoder does not produce"):
        _load(compiled_files["spec"], arrays)


def test_unknown_node_kind_and_format(compiled_files: dict[str, Any]) -> None:
    spec = dict(compiled_files["spec"], model={"kind": "neural"})
    with pytest.raises(PredictorError, match="unknown model node kind 'neural'"):
        _load(spec, compiled_files["arrays"])
    with pytest.raises(PredictorError, match="unsupported compiled model format"):
        _load(dict(compiled_files["spec"], format="other/9"), compiled_files["arrays"])


def test_object_arrays_are_never_unpickled(compiled_files: dict[str, Any]) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, evil=np.array([{"a": 1}], dtype=object))
    with pytest.raises(PredictorError, match="cannot read the compiled model"):
        loads(dumps(compiled_files["spec"], {})["predictor.json"], buf.getvalue())


def test_garbage_bytes(compiled_files: dict[str, Any]) -> None:
    with pytest.raises(PredictorError):
        loads(b"{not json", b"")
    with pytest.raises(PredictorError):
        loads(dumps(compiled_files["spec"], {})["predictor.json"], b"not a zip")
