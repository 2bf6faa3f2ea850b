"""Candidates, hyperparameter search, cross-validation, calibration and the final fit.

Selection is by stratified cross-validation on the training split; the same
candidates are also cross-validated grouped by field plot, which says how the
model generalises to a site it has never seen. The held-out test split is never
touched here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV, _SigmoidCalibration
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    VotingClassifier,
)
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, ParameterGrid, ParameterSampler, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from treesurv.core import schema
from treesurv.core.config import Params, ParamsError, TrainParams
from treesurv.training.evaluation import classification_metrics
from treesurv.training.features import FeatureEncoder

log = logging.getLogger(__name__)

CANDIDATES = ("logreg", "gboost", "hgb", "forest", "forest_hgb")
CALIBRATIONS = ("none", "sigmoid", "isotonic")
N_JOBS = -1  # folds run in parallel processes; each model fits on one core


def make_estimator(name: str, params: dict[str, Any], seed: int) -> Any:
    """A fresh, unfitted classifier for a candidate name and its hyperparameters."""
    if name == "logreg":
        return Pipeline(
            [("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=5000, **params))]
        )
    if name == "gboost":
        return GradientBoostingClassifier(random_state=seed, **params)
    if name == "hgb":
        return HistGradientBoostingClassifier(random_state=seed, early_stopping=False, **params)
    if name == "forest":
        return RandomForestClassifier(random_state=seed, n_jobs=1, **params)
    raise ParamsError(f"unknown candidate {name!r}; known: {', '.join(CANDIDATES)}")


def make_pipeline(
    model: Any, features: Sequence[str], cell_z: bool, site: bool = False
) -> Pipeline:
    return Pipeline([("encode", FeatureEncoder(tuple(features), cell_z, site)), ("model", model)])


def pipeline_builder(
    model: Any, features: Sequence[str], cell_z: bool, site: bool = False
) -> Callable[[], Pipeline]:
    """Makes a fresh unfitted pipeline around a clone of `model` (one per fold)."""
    return lambda: make_pipeline(clone(model), features, cell_z, site)


@dataclass
class CVResult:
    """One configuration's cross-validation: metrics, per-fold scores, out-of-fold output."""

    candidate: str
    params: dict[str, Any]
    metrics: dict[str, float]
    fold_scores: list[float]
    oof: np.ndarray = field(repr=False)
    fold_metric: str = "roc_auc"  # what fold_scores hold

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "params": self.params,
            "metrics": self.metrics,
            f"fold_{self.fold_metric}": self.fold_scores,
        }


def _folds(
    y: np.ndarray, groups: np.ndarray | None, n_folds: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    if groups is None:
        yield from StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(y, y)
    else:
        n = min(n_folds, len(np.unique(groups)))
        yield from GroupKFold(n).split(y, y, groups)


def fold_predictions(
    build: Callable[[], Any],
    X: pd.DataFrame,
    y: Any,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    predict: Callable[[Any, pd.DataFrame], np.ndarray],
    n_jobs: int = N_JOBS,
) -> list[np.ndarray]:
    """Fit a fresh model on each training fold and predict its held-out fold.

    Folds run in parallel processes while each model fits single-threaded, so
    results are bit-for-bit the same on every run (threaded forests sum their
    trees in whatever order the threads finish). `y` may be any array that
    indexes by rows (a structured survival target works).
    """
    from joblib import Parallel, delayed

    def fold(train_idx: np.ndarray, test_idx: np.ndarray) -> np.ndarray:
        model = build().fit(X.iloc[train_idx], y[train_idx])
        return np.asarray(predict(model, X.iloc[test_idx]))

    return list(Parallel(n_jobs=n_jobs)(delayed(fold)(tr, te) for tr, te in splits))


def cross_validate(
    build: Callable[[], Any],
    X: pd.DataFrame,
    y: np.ndarray,
    n_folds: int,
    seed: int,
    groups: np.ndarray | None = None,
    n_jobs: int = N_JOBS,
) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold probabilities and the per-fold ROC AUC."""
    splits = list(_folds(y, groups, n_folds, seed))
    preds = fold_predictions(
        build, X, y, splits, lambda m, Xt: m.predict_proba(Xt)[:, 1], n_jobs=n_jobs
    )
    oof = np.full(len(y), np.nan)
    for (_, test_idx), p in zip(splits, preds, strict=True):
        oof[test_idx] = p
    return oof, fold_roc_auc(y, oof, splits)


def fold_roc_auc(
    y: np.ndarray, oof: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]]
) -> list[float]:
    """ROC AUC of each held-out fold that holds both classes."""
    from sklearn.metrics import roc_auc_score

    return [
        float(roc_auc_score(y[test_idx], oof[test_idx]))
        for _, test_idx in splits
        if len(np.unique(y[test_idx])) == 2
    ]


def soft_vote(members: Sequence[CVResult]) -> np.ndarray:
    """The out-of-fold probabilities of an equal-weight soft vote of `members`,
    each cross-validated on the same folds.

    VotingClassifier(voting="soft") fits clones of its members on each fold, which
    are the very fits the members' own cross-validation made (same folds, same
    seeds), and averages their probabilities the way `np.average` does here: the
    vote's out-of-fold output without fitting anything again.
    """
    return np.average(np.stack([m.oof for m in members]), axis=0)


def _configs(grid: dict[str, list[Any]], n_iter: int, seed: int) -> list[dict[str, Any]]:
    full = list(ParameterGrid(grid)) if grid else [{}]
    if len(full) <= n_iter:
        return full
    return list(ParameterSampler(grid, n_iter=n_iter, random_state=seed))


def _summary(y: np.ndarray, oof: np.ndarray, fold_auc: list[float], bins: int) -> dict[str, float]:
    metrics = classification_metrics(y, oof, threshold=0.5, bins=bins)
    metrics["roc_auc_fold_std"] = float(np.std(fold_auc)) if fold_auc else float("nan")
    return metrics


@dataclass
class TrainResult:
    pipeline: Pipeline
    chosen: CVResult
    search: list[CVResult]
    calibration: str
    calibration_scores: dict[str, float]
    cv_metrics: dict[str, float]
    cv_group_metrics: dict[str, float]
    oof: np.ndarray
    oof_group: np.ndarray
    seconds: float

    def report(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen.to_dict(),
            "calibration": {
                "method": self.calibration,
                "oof_brier_by_method": self.calibration_scores,
            },
            "cv": self.cv_metrics,
            "cv_group": self.cv_group_metrics,
            "search": [r.to_dict() for r in self.search],
        }


def cross_fit_calibration(
    y: np.ndarray, score: np.ndarray, method: str, n_folds: int, seed: int
) -> np.ndarray:
    """Calibrated out-of-fold scores: each fold's calibrator is fit on the others.

    This is how the calibration is checked on data it was not fit on.
    """
    out = np.empty_like(score)
    for train_idx, test_idx in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(
        score, y
    ):
        if method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
            out[test_idx] = iso.fit(score[train_idx], y[train_idx]).predict(score[test_idx])
        else:
            platt = _SigmoidCalibration().fit(score[train_idx], y[train_idx])
            out[test_idx] = platt.predict(score[test_idx])
    return out


def feature_columns(params: Params) -> tuple[tuple[str, ...], bool]:
    """The model's input features and whether trait cell z-scores are added."""
    features = params.features.columns or schema.FEATURE_NAMES
    leaked = set(features) & set(schema.LEAKY)
    if leaked:
        raise ParamsError(f"outcome columns can never be features: {sorted(leaked)}")
    unknown = [f for f in features if f not in schema.FEATURES_BY_NAME]
    if unknown:
        raise ParamsError(f"unknown feature(s): {unknown}")
    return tuple(features), params.features.cell_z


def train(
    frame: pd.DataFrame, params: Params, log_fn: Callable[[str], None] = log.info
) -> TrainResult:
    """Search every candidate, pick the best by stratified CV, calibrate, fit on all rows."""
    start = time.perf_counter()
    seed, tp, bins = params.seed, params.train, params.evaluate.calibration_bins
    features, cell_z = feature_columns(params)
    X = frame[list(features)]
    y = frame[schema.TARGET].to_numpy(dtype=int)
    groups = frame[schema.GROUP].to_numpy() if schema.GROUP in frame.columns else None

    def builder(model: Any) -> Callable[[], Pipeline]:
        return pipeline_builder(model, features, cell_z)

    search = _search(X, y, tp, seed, bins, builder, log_fn)
    best_by: dict[str, CVResult] = {}
    for res in search:
        if res.candidate not in best_by or _key(res, tp.select_by) > _key(
            best_by[res.candidate], tp.select_by
        ):
            best_by[res.candidate] = res
    if not best_by:
        raise ParamsError("train.candidates: no candidates to train")
    chosen = max(best_by.values(), key=lambda r: _key(r, tp.select_by))
    model = _model_for(chosen, seed)

    calibrated, method, scores = _calibration(y, chosen.oof, model, tp, seed, bins)
    oof = calibrated(chosen.oof, method)
    cv_metrics = _summary(y, oof, chosen.fold_scores, bins)

    # The same candidate, folds grouped by plot: generalisation to a new site.
    oof_g_raw, fold_auc_g = (
        cross_validate(builder(model), X, y, tp.group_folds, seed, groups)
        if groups is not None
        else (chosen.oof, chosen.fold_scores)
    )
    oof_group = calibrated(oof_g_raw, method)
    cv_group_metrics = _summary(y, oof_group, fold_auc_g, bins)

    final_model: Any = model
    if method != "none":
        final_model = CalibratedClassifierCV(
            model,
            method=method,
            ensemble=False,
            cv=StratifiedKFold(tp.calibration_folds, shuffle=True, random_state=seed),
        )
    pipeline = make_pipeline(final_model, features, cell_z).fit(X, y)
    log_fn(
        f"chosen {chosen.candidate} {chosen.params} calibration={method}: "
        f"CV ROC AUC {cv_metrics['roc_auc']:.4f} Brier {cv_metrics['brier']:.4f}; "
        f"by plot {cv_group_metrics['roc_auc']:.4f} / {cv_group_metrics['brier']:.4f}"
    )
    return TrainResult(
        pipeline,
        chosen,
        search,
        method,
        scores,
        cv_metrics,
        cv_group_metrics,
        oof,
        oof_group,
        time.perf_counter() - start,
    )


def _search(
    X: pd.DataFrame,
    y: np.ndarray,
    tp: TrainParams,
    seed: int,
    bins: int,
    builder: Callable[[Any], Callable[[], Pipeline]],
    log_fn: Callable[[str], None],
) -> list[CVResult]:
    """Cross-validate every configuration of every candidate, in order."""

    def result(name: str, cfg: dict[str, Any], oof: np.ndarray, fold_auc: list[float]) -> CVResult:
        res = CVResult(name, cfg, _summary(y, oof, fold_auc, bins), fold_auc, oof)
        log_fn(
            f"{name} {cfg}: ROC AUC {res.metrics['roc_auc']:.4f} Brier {res.metrics['brier']:.4f}"
        )
        return res

    def evaluate(name: str, cfg: dict[str, Any], model: Any) -> CVResult:
        return result(name, cfg, *cross_validate(builder(model), X, y, tp.cv_folds, seed))

    search = [
        evaluate(name, cfg, make_estimator(name, cfg, seed))
        for name in tp.candidates
        if name != "forest_hgb"
        for cfg in _configs(tp.grids.get(name, {}), tp.search_iterations, seed)
    ]
    if "forest_hgb" in tp.candidates:
        # Soft vote of the best forest and boosting configurations (top k of each).
        ranked = {
            c: sorted(
                (r for r in search if r.candidate == c), key=lambda r: -_key(r, tp.select_by)
            )[: tp.vote_top]
            for c in ("forest", "hgb")
        }
        if not (ranked["forest"] and ranked["hgb"]):
            raise ParamsError("candidate forest_hgb needs forest and hgb among the candidates")
        splits = list(_folds(y, None, tp.cv_folds, seed))
        for f_res in ranked["forest"]:
            for h_res in ranked["hgb"]:
                cfg = {"forest": f_res.params, "hgb": h_res.params}
                oof = soft_vote((f_res, h_res))  # the members' folds: nothing is refitted
                search.append(result("forest_hgb", cfg, oof, fold_roc_auc(y, oof, splits)))
    return search


def _calibration(
    y: np.ndarray, oof: np.ndarray, model: Any, tp: TrainParams, seed: int, bins: int
) -> tuple[Callable[[np.ndarray, str], np.ndarray], str, dict[str, float]]:
    """How to calibrate: chosen on out-of-fold scores, never on the rows it is scored
    on. Returns the cross-fitted calibration, the method and each method's Brier."""

    # CalibratedClassifierCV calibrates the decision function where there is one.
    def response(p: np.ndarray) -> np.ndarray:
        if not _has_decision_function(model):
            return p
        q = np.clip(p, 1e-15, 1 - 1e-15)
        return np.log(q / (1 - q))

    def calibrated(p: np.ndarray, m: str) -> np.ndarray:
        if m == "none":
            return p
        return cross_fit_calibration(y, response(p), m, tp.calibration_folds, seed)

    scores = {
        m: classification_metrics(y, calibrated(oof, m), 0.5, bins)["brier"] for m in CALIBRATIONS
    }
    method: str = tp.calibration
    if method == "auto":
        # Recalibrate only when it measurably helps: a calibrator fit on noise
        # adds variance, and isotonic steps create ties that cost ROC AUC.
        best = min(("sigmoid", "isotonic"), key=lambda m: scores[m])
        gain = scores["none"] - scores[best]
        method = best if gain > tp.calibration_min_gain else "none"
    return calibrated, method, scores


def _voting(cfg: dict[str, dict[str, Any]], seed: int) -> VotingClassifier:
    return VotingClassifier(
        [
            ("forest", make_estimator("forest", cfg["forest"], seed)),
            ("hgb", make_estimator("hgb", cfg["hgb"], seed)),
        ],
        voting="soft",
    )


def _model_for(result: CVResult, seed: int) -> Any:
    if result.candidate == "forest_hgb":
        return _voting(result.params, seed)
    return make_estimator(result.candidate, result.params, seed)


def _has_decision_function(model: Any) -> bool:
    est = model.steps[-1][1] if isinstance(model, Pipeline) else model
    return hasattr(est, "decision_function") and not isinstance(est, VotingClassifier)


def _key(result: CVResult, select_by: str) -> float:
    value = result.metrics[select_by]
    # Lower is better for the loss-type metrics.
    return -value if select_by in ("brier", "log_loss", "ece") else value
