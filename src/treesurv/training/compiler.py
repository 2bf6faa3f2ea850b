"""Compile a fitted scikit-learn model into the predictor's JSON spec + arrays.

Supported: logistic regression (optionally after a StandardScaler), random
forests and extra trees, gradient boosting, histogram gradient boosting, soft
voting over those, and CalibratedClassifierCV (sigmoid or isotonic) around any
of them. Survival models (`compile_survival`): scikit-survival's Cox PH
(optionally after a StandardScaler) and gradient-boosted Cox models. Anything
else is refused with the estimator's name, never guessed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    VotingClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree._tree import TREE_LEAF

from treesurv.core.encoding import EncoderParams
from treesurv.core.errors import ModelError
from treesurv.inference.predictor import FORMAT, SURVIVAL_FORMAT


class CompileError(ModelError):
    pass


class _Arrays:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._n = 0

    def key(self, stem: str) -> str:
        self._n += 1
        return f"{stem}{self._n}"

    def add_trees(self, trees: list[dict[str, np.ndarray]]) -> str:
        """Concatenate trees into flat arrays with global node indices."""
        key = self.key("trees")
        offset = 0
        parts: dict[str, list[np.ndarray]] = {
            f: [] for f in ("feature", "threshold", "left", "right", "value", "missing_left")
        }
        roots = []
        for tree in trees:
            roots.append(offset)
            left, right = tree["left"], tree["right"]
            leaf = left == -1
            parts["left"].append(np.where(leaf, -1, left + offset))
            parts["right"].append(np.where(leaf, -1, right + offset))
            parts["feature"].append(np.where(leaf, 0, tree["feature"]))
            for f in ("threshold", "value", "missing_left"):
                parts[f].append(tree[f])
            offset += len(left)
        self.arrays[f"{key}_feature"] = np.concatenate(parts["feature"]).astype(np.int32)
        self.arrays[f"{key}_threshold"] = np.concatenate(parts["threshold"]).astype(np.float64)
        self.arrays[f"{key}_left"] = np.concatenate(parts["left"]).astype(np.int32)
        self.arrays[f"{key}_right"] = np.concatenate(parts["right"]).astype(np.int32)
        self.arrays[f"{key}_value"] = np.concatenate(parts["value"]).astype(np.float64)
        self.arrays[f"{key}_missing_left"] = np.concatenate(parts["missing_left"]).astype(bool)
        self.arrays[f"{key}_roots"] = np.asarray(roots, dtype=np.int32)
        return key


def _check_binary(est: Any) -> None:
    classes = list(getattr(est, "classes_", []))
    if classes != [0, 1]:
        raise CompileError(f"{type(est).__name__}: expected classes [0, 1], got {classes}")


def _sk_tree(tree: Any, value: np.ndarray) -> dict[str, np.ndarray]:
    t = tree.tree_
    left = np.where(t.children_left == TREE_LEAF, -1, t.children_left)
    right = np.where(t.children_right == TREE_LEAF, -1, t.children_right)
    missing = getattr(t, "missing_go_to_left", np.zeros(t.node_count, np.uint8))
    return {
        "feature": t.feature,
        "threshold": t.threshold,
        "left": left,
        "right": right,
        "value": value,
        "missing_left": np.asarray(missing, dtype=bool),
    }


def _forest(est: Any, arrays: _Arrays) -> dict[str, Any]:
    _check_binary(est)
    trees = []
    for tree in est.estimators_:
        v = tree.tree_.value[:, 0, :]
        # Leaf class shares, exactly as DecisionTreeClassifier.predict_proba normalises them.
        total = v.sum(axis=1)
        total[total == 0] = 1.0
        trees.append(_sk_tree(tree, v[:, 1] / total))
    return {"kind": "forest", "trees": arrays.add_trees(trees), "float32": True}


def _gboost(est: GradientBoostingClassifier, arrays: _Arrays) -> dict[str, Any]:
    _check_binary(est)
    return _boosted_trees(est, arrays)


def _boosted_trees(est: Any, arrays: _Arrays) -> dict[str, Any]:
    """Any scikit-learn style gradient boosting with one tree per stage: raw score node."""
    if est.estimators_.shape[1] != 1:
        raise CompileError(f"{type(est).__name__}: only one tree per stage is supported")
    trees = [
        _sk_tree(stage[0], stage[0].tree_.value[:, 0, 0] * est.learning_rate)
        for stage in est.estimators_
    ]
    n_features = est.n_features_in_
    baseline = float(est._raw_predict_init(np.zeros((1, n_features), dtype=np.float32))[0, 0])
    return {
        "kind": "boosting",
        "trees": arrays.add_trees(trees),
        "baseline": baseline,
        "float32": True,
    }


def _hgb(est: HistGradientBoostingClassifier, arrays: _Arrays) -> dict[str, Any]:
    _check_binary(est)
    if getattr(est, "_preprocessor", None) is not None:
        raise CompileError(
            "HistGradientBoostingClassifier: categorical preprocessing is not supported"
        )
    trees = []
    for stage in est._predictors:
        if len(stage) != 1:
            raise CompileError("HistGradientBoostingClassifier: only binary models are supported")
        nodes = stage[0].nodes
        if nodes["is_categorical"].any():
            raise CompileError(
                "HistGradientBoostingClassifier: categorical splits are not supported"
            )
        leaf = nodes["is_leaf"].astype(bool)
        trees.append(
            {
                "feature": nodes["feature_idx"].astype(np.int64),
                "threshold": nodes["num_threshold"].astype(np.float64),
                "left": np.where(leaf, -1, nodes["left"].astype(np.int64)),
                "right": np.where(leaf, -1, nodes["right"].astype(np.int64)),
                "value": nodes["value"].astype(np.float64),
                "missing_left": nodes["missing_go_to_left"].astype(bool),
            }
        )
    baseline = float(np.asarray(est._baseline_prediction).ravel()[0])
    return {
        "kind": "boosting",
        "trees": arrays.add_trees(trees),
        "baseline": baseline,
        "float32": False,
    }


def _linear(
    est: LogisticRegression, arrays: _Arrays, scaler: StandardScaler | None
) -> dict[str, Any]:
    _check_binary(est)
    coef_key = arrays.key("coef")
    arrays.arrays[coef_key] = np.asarray(est.coef_[0], dtype=float)
    spec: dict[str, Any] = {
        "kind": "linear",
        "coef": coef_key,
        "intercept": float(est.intercept_[0]),
        "center": None,
        "scale": None,
    }
    if scaler is not None:
        spec.update(_scaler_arrays(scaler, arrays))
    return spec


def _scaler_arrays(scaler: StandardScaler, arrays: _Arrays) -> dict[str, str]:
    center = scaler.mean_ if scaler.with_mean else np.zeros(scaler.n_features_in_)
    scale = scaler.scale_ if scaler.with_std else np.ones(scaler.n_features_in_)
    keys = {"center": arrays.key("center"), "scale": arrays.key("scale")}
    arrays.arrays[keys["center"]] = np.asarray(center, dtype=float)
    arrays.arrays[keys["scale"]] = np.asarray(scale, dtype=float)
    return keys


def _has_decision_function(est: Any) -> bool:
    if isinstance(est, Pipeline):
        est = est.steps[-1][1]
    return hasattr(est, "decision_function") and not isinstance(est, VotingClassifier)


def _calibrated(est: CalibratedClassifierCV, arrays: _Arrays) -> dict[str, Any]:
    _check_binary(est)
    members = []
    for cc in est.calibrated_classifiers_:
        base = compile_estimator(cc.estimator, arrays)
        response = "raw" if _has_decision_function(cc.estimator) else "proba"
        cal = cc.calibrators[0]
        if cc.method == "sigmoid":
            members.append(
                {
                    "kind": "calibrated",
                    "method": "sigmoid",
                    "response": response,
                    "a": float(cal.a_),
                    "b": float(cal.b_),
                    "base": base,
                }
            )
        elif cc.method == "isotonic":
            if cal.out_of_bounds != "clip":
                raise CompileError("isotonic calibration must clip out-of-bounds scores")
            x, y = arrays.key("iso_x"), arrays.key("iso_y")
            arrays.arrays[x] = np.asarray(cal.X_thresholds_, dtype=float)
            arrays.arrays[y] = np.asarray(cal.y_thresholds_, dtype=float)
            members.append(
                {
                    "kind": "calibrated",
                    "method": "isotonic",
                    "response": response,
                    "x": x,
                    "y": y,
                    "base": base,
                }
            )
        else:
            raise CompileError(f"calibration method {cc.method!r} is not supported")
    if len(members) == 1:
        return members[0]
    return {"kind": "voting", "members": members, "weights": [1.0] * len(members)}


def compile_estimator(est: Any, arrays: _Arrays) -> dict[str, Any]:
    if isinstance(est, Pipeline):
        steps = [s for _, s in est.steps if s not in (None, "passthrough")]
        if (
            len(steps) == 2
            and isinstance(steps[0], StandardScaler)
            and isinstance(steps[1], LogisticRegression)
        ):
            return _linear(steps[1], arrays, steps[0])
        if len(steps) == 1:
            return compile_estimator(steps[0], arrays)
        raise CompileError(f"pipeline {[type(s).__name__ for s in steps]} is not supported")
    if isinstance(est, CalibratedClassifierCV):
        return _calibrated(est, arrays)
    if isinstance(est, VotingClassifier):
        if est.voting != "soft":
            raise CompileError("VotingClassifier: only soft voting gives probabilities")
        _check_binary(est)
        weights = est.weights if est.weights is not None else [1.0] * len(est.estimators_)
        return {
            "kind": "voting",
            "weights": [float(w) for w in weights],
            "members": [compile_estimator(m, arrays) for m in est.estimators_],
        }
    if isinstance(est, (RandomForestClassifier, ExtraTreesClassifier)):
        return _forest(est, arrays)
    if isinstance(est, GradientBoostingClassifier):
        return _gboost(est, arrays)
    if isinstance(est, HistGradientBoostingClassifier):
        return _hgb(est, arrays)
    if isinstance(est, LogisticRegression):
        return _linear(est, arrays, None)
    raise CompileError(f"cannot compile {type(est).__name__}")


def compile_model(
    encoder: EncoderParams, model: Any
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Spec and arrays for `predictor.save`: the encoder and the fitted classifier."""
    arrays = _Arrays()
    spec = {
        "format": FORMAT,
        "encoder": encoder.to_json(),
        "model": compile_estimator(model, arrays),
    }
    arrays.arrays.update(encoder.arrays())
    return spec, arrays.arrays


# ------------------------------------------------------------------ survival


def _survival_risk(est: Any, arrays: _Arrays) -> tuple[dict[str, Any], Any]:
    """The risk-score node of a scikit-survival Cox-type model, and the model itself."""
    from sksurv.ensemble import GradientBoostingSurvivalAnalysis
    from sksurv.ensemble.survival_loss import CoxPH
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    scaler = None
    if isinstance(est, Pipeline):
        steps = [s for _, s in est.steps if s not in (None, "passthrough")]
        if len(steps) == 2 and isinstance(steps[0], StandardScaler):
            scaler, est = steps
        elif len(steps) == 1:
            est = steps[0]
        else:
            raise CompileError(f"pipeline {[type(s).__name__ for s in steps]} is not supported")
    if isinstance(est, GradientBoostingSurvivalAnalysis) and scaler is None:
        if not isinstance(getattr(est, "_loss", None), CoxPH):
            raise CompileError(
                "GradientBoostingSurvivalAnalysis: only loss='coxph' has a survival function"
            )
        if hasattr(est, "_scale"):
            raise CompileError("GradientBoostingSurvivalAnalysis: dropout is not supported")
        return _boosted_trees(est, arrays), est
    if isinstance(est, CoxPHSurvivalAnalysis):
        coef_key = arrays.key("coef")
        arrays.arrays[coef_key] = np.asarray(est.coef_, dtype=float)
        spec: dict[str, Any] = {
            "kind": "linear",
            "coef": coef_key,
            "intercept": 0.0,
            "center": None,
            "scale": None,
        }
        if scaler is not None:
            spec.update(_scaler_arrays(scaler, arrays))
        return spec, est
    raise CompileError(f"cannot compile survival model {type(est).__name__}")


def compile_survival(
    encoder: EncoderParams, model: Any
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Spec and arrays of a Cox-type survival model: S(t|x) = S0(t) ** exp(risk(x)).

    The risk node is a tree ensemble or a linear score; S0 is the Breslow
    baseline survival at the training rows' distinct days.
    """
    arrays = _Arrays()
    risk, est = _survival_risk(model, arrays)
    baseline = getattr(est, "_baseline_model", None)
    if baseline is None or not hasattr(baseline, "unique_times_"):
        raise CompileError(f"{type(est).__name__} has no fitted baseline survival function")
    arrays.arrays["baseline_days"] = np.asarray(baseline.unique_times_, dtype=float)
    arrays.arrays["baseline_survival"] = np.asarray(baseline.baseline_survival_.y, dtype=float)
    arrays.arrays.update(encoder.arrays())
    spec = {
        "format": SURVIVAL_FORMAT,
        "encoder": encoder.to_json(),
        "risk": risk,
        "baseline": {"days": "baseline_days", "survival": "baseline_survival"},
    }
    return spec, arrays.arrays
