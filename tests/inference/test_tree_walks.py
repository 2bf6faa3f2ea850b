"""The NumPy walk of the trees gives the Numba kernels' sums bit for bit, so a service
answers exactly while its kernels compile in the background."""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.helpers import build_four_model_bundle, classifier_zoo, instances, run_fresh_python
from treesurv.core import schema
from treesurv.core.encoding import encode, fit_encoder
from treesurv.inference import predictor
from treesurv.inference.predictor import KERNELS, FastPredictor, dumps, loads, trees_of
from treesurv.serving import state as state_mod
from treesurv.serving.metrics import Metrics
from treesurv.training.compiler import compile_model

MODELS = classifier_zoo()
TREE_MODELS = [n for n in MODELS if not n.startswith("logreg")]


def _with_missing_and_ties(X: np.ndarray, model: Any, seed: int) -> np.ndarray:
    """Rows with NaN cells and cells exactly on split thresholds (the edge cases of a
    walk: which side NaN goes, and `<=`)."""
    rng = np.random.default_rng(seed)
    X = X.copy()
    X[rng.random(X.shape) < 0.1] = np.nan
    for trees in trees_of(model):
        inner = np.flatnonzero(~trees.leaves)
        for i, node in enumerate(rng.choice(inner, size=min(len(X), 200))):
            X[i, trees.feature[node]] = trees.threshold[node]
    return X


@pytest.mark.parametrize("name", TREE_MODELS)
def test_numpy_walk_equals_the_kernels_bit_for_bit(
    name: str, study_xy: tuple[pd.DataFrame, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    frame, y = study_xy
    params = fit_encoder(frame)
    X = encode(params, frame)
    files = dumps(*compile_model(params, MODELS[name]().fit(X, y)))
    model = loads(files["predictor.json"], files["predictor.npz"]).model
    X = _with_missing_and_ties(X, model, seed=len(name))
    big = np.vstack([X] * 3)  # past PARALLEL_MIN_ROWS: the parallel kernel
    monkeypatch.setattr(KERNELS, "numba", True)
    kernels = [model.proba(X), model.proba(big)]
    kernels_one = [model.proba_one(x, x.astype(np.float32)) for x in X[:100]]
    monkeypatch.setattr(KERNELS, "numba", False)
    walked = [model.proba(X), model.proba(big)]
    # In blocks of rows too (a big batch is walked a block at a time).
    monkeypatch.setattr(predictor, "NUMPY_WALK_CELLS", 1000)
    walked.append(model.proba(big))
    kernels.append(kernels[1])
    walked_one = [model.proba_one(x, x.astype(np.float32)) for x in X[:100]]
    for a, b in zip(kernels, walked, strict=True):
        assert np.array_equal(a, b), np.max(np.abs(a - b))
    assert kernels_one == walked_one


def test_a_predictor_built_without_compiling_scores_the_same(
    study_xy: tuple[pd.DataFrame, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    frame, y = study_xy
    params = fit_encoder(frame)
    files = dumps(*compile_model(params, MODELS["gboost"]().fit(encode(params, frame), y)))
    compiled = loads(files["predictor.json"], files["predictor.npz"])
    rows = instances(frame.head(64))
    fast = FastPredictor(compiled)
    expected, expected_one = fast.predict_rows(rows), [fast.predict_one(r) for r in rows[:8]]
    monkeypatch.setattr(KERNELS, "numba", False)
    lazy = FastPredictor(compiled, compile_now=False)
    assert np.array_equal(lazy.predict_rows(rows), expected)
    assert [lazy.predict_one(r) for r in rows[:8]] == expected_one


def test_the_first_model_answers_before_its_kernels_compile(
    tmp_path: Path, study: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh process's first model serves at once through the NumPy walk; the
    background compilation then switches to the kernels, and the answers stay the
    same throughout."""
    build_four_model_bundle(tmp_path / "bundle", study)
    rows = instances(study.head(40))
    monkeypatch.setattr(KERNELS, "numba", True)
    monkeypatch.setattr(KERNELS, "compiled", False)  # as in a process that just started
    release = threading.Event()
    compile_kernels = state_mod.compile_kernels

    def held(served: state_mod.Served) -> float:
        assert release.wait(60)
        return compile_kernels(served)

    monkeypatch.setattr(state_mod, "compile_kernels", held)
    metrics = Metrics()
    state = state_mod.ModelState(tmp_path / "bundle", metrics)
    gc.unfreeze()  # whatever this test process froze before
    outcome = state.reload()
    assert outcome.status == "reloaded" and state.current is not None
    assert KERNELS.numba is False  # serving, kernels not compiled yet
    # The loaded model is out of the cyclic collector's reach (no long pauses under load).
    frozen = gc.get_freeze_count()
    assert frozen > 0
    served = state.current
    before = served.predictor.predict_rows(rows)
    before_survival = served.survival["full"].compiled.risk_matrix(
        served.survival["full"].matrix(rows)
    )
    release.set()
    assert state.wait_compiled(timeout=120)
    assert KERNELS.numba is True and KERNELS.compiled is True
    assert metrics.kernels_compiled._value.get() == 1
    assert gc.get_freeze_count() > frozen  # and so is the compiled code
    # Compiled in memory only: no kernel can load or save Numba's pickled disk cache.
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    from treesurv.inference import kernels

    found = [k for k in vars(kernels).values() if isinstance(k, CPUDispatcher)]
    assert len(found) >= 5
    for kernel in found:
        assert isinstance(kernel._cache, NullCache), kernel
    assert np.array_equal(served.predictor.predict_rows(rows), before)
    assert np.array_equal(
        served.survival["full"].compiled.risk_matrix(served.survival["full"].matrix(rows)),
        before_survival,
    )
    assert set(schema.FEATURE_NAMES) <= set(rows[0])


def test_the_service_starts_without_importing_numba() -> None:
    """Numba takes about 0.4 s to import; the service imports it only in the thread
    that compiles the kernels, after it can answer."""
    code = (
        "import sys\n"
        "import treesurv.serving.app, treesurv.serving.state, treesurv.inference.predictor\n"
        "assert 'numba' not in sys.modules, sorted(m for m in sys.modules if 'numba' in m)\n"
    )
    run_fresh_python(code, timeout=60)


def test_compiling_the_kernels_leaves_the_process_streams_alone() -> None:
    """Numba colours its error messages with colorama, which reassigns sys.stdout and
    sys.stderr, even for the errors it raises and catches while compiling; from the
    service's compile thread that races the main thread (it closed a CLI test's
    captured output). treesurv turns the colouring off before Numba is imported."""
    code = (
        "import os, colorama, colorama.initialise as ci\n"
        "os.environ.pop('NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING', None)\n"
        "calls = []\n"
        "colorama.init = ci.init = lambda *a, **k: calls.append(1)\n"
        "from treesurv.inference import kernels  # before Numba, as in the service\n"
        "import numpy as np\n"
        "from numba import njit\n"
        "fresh = njit(kernels.sum_one.py_func)  # compiled here, not taken from a cache\n"
        "z = np.zeros(3)\n"
        "fresh(z, np.zeros(3, np.uint8), z, np.zeros(3, np.int8), z, np.zeros(3, np.bool_),\n"
        "      np.zeros(1, np.uint32))\n"
        "assert fresh.signatures, 'the kernel did not compile'\n"
        "assert not calls, f'colorama.init ran {len(calls)} times while compiling'\n"
    )
    run_fresh_python(code)
