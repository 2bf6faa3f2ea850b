"""The survival model: probability of being alive by a given day, censoring handled.

`Time` is the day of death (`Event` = 1) or of harvest / the end of the study
(`Event` = 0, censored). A seedling harvested on day 24.5 was alive then and
says nothing about later days; a survival model uses it for exactly that.

Candidates are Cox models whose risk score is a linear function of the encoded
features (`cox`, penalised) or a gradient-boosted tree ensemble (`gbsa`,
scikit-survival's GradientBoostingSurvivalAnalysis with the Cox partial
likelihood). Both give S(t|x) = S0(t) ** exp(risk(x)) with Breslow's baseline,
which `treesurv.training.compiler` turns into arrays the service evaluates without
scikit-survival. They are compared by cross-validated concordance (Harrell's C,
mean over stratified folds) and integrated Brier score; the held-out test split
is never touched here. With `survival.site` the models also take the field
plot (schema.SITE) as an optional input, and every concordance is reported
with and without it. Evaluation helpers (Kaplan-Meier against the mean
prediction, calibration at fixed days by risk group) are pure functions too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from treesurv.core import schema
from treesurv.core.config import Params, ParamsError
from treesurv.core.errors import InputError
from treesurv.training.classifier import (
    CVResult,
    _configs,
    _folds,
    feature_columns,
    fold_predictions,
    make_pipeline,
    pipeline_builder,
)
from treesurv.training.evaluation import save_figure

log = logging.getLogger(__name__)

SURVIVAL_CANDIDATES = ("cox", "gbsa")
SELECT_BY = ("concordance", "integrated_brier")


def survival_target(frame: pd.DataFrame) -> np.ndarray:
    """The structured (event, time) array scikit-survival expects."""
    from sksurv.util import Surv

    if schema.TIME not in frame.columns:
        raise InputError(f"survival models need the {schema.TIME!r} column")
    t = frame[schema.TIME].to_numpy(dtype=float)
    if np.isnan(t).any() or (t <= 0).any():
        raise InputError(f"{schema.TIME} must be a positive number of days on every row")
    return Surv.from_arrays(frame[schema.TARGET].to_numpy(dtype=int) == 1, t)


def make_survival_estimator(name: str, params: Mapping[str, Any], seed: int) -> Any:
    """A fresh, unfitted survival estimator for a candidate name and its hyperparameters."""
    from sksurv.ensemble import GradientBoostingSurvivalAnalysis
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    if name == "cox":
        # Scaled so that one ridge penalty treats every column alike.
        return Pipeline(
            [("scale", StandardScaler()), ("cox", CoxPHSurvivalAnalysis(**dict(params)))]
        )
    if name == "gbsa":
        return GradientBoostingSurvivalAnalysis(loss="coxph", random_state=seed, **dict(params))
    raise ParamsError(
        f"unknown survival candidate {name!r}; known: {', '.join(SURVIVAL_CANDIDATES)}"
    )


def evaluation_days(times: np.ndarray, horizons: Sequence[float] | np.ndarray) -> np.ndarray:
    """Days the models are scored on: every observed day plus the calibration horizons."""
    days = np.union1d(np.unique(times), np.asarray(horizons, dtype=float))
    return days[(days >= times.min()) & (days <= times.max())]


def predict_risk_and_survival(model: Any, X: pd.DataFrame, days: np.ndarray) -> np.ndarray:
    """Column 0: the risk score (log hazard ratio); then S(day | x) for each day."""
    risk = np.asarray(model.predict(X), dtype=float)
    fns = model.predict_survival_function(X)
    surv = np.vstack([fn(days) for fn in fns]) if len(fns) else np.empty((0, len(days)))
    return np.column_stack([risk, surv])


def without_plot(X: pd.DataFrame) -> pd.DataFrame:
    """The same rows as seedlings outside the study: no field plot given."""
    return X.assign(**{schema.SITE.name: np.nan})


def concordance(y: np.ndarray, risk: np.ndarray) -> float:
    from sksurv.metrics import concordance_index_censored

    return float(concordance_index_censored(y["event"], y["time"], risk)[0])


def integrated_brier(
    y_train: np.ndarray, y_eval: np.ndarray, surv: np.ndarray, days: np.ndarray
) -> float:
    """Integrated Brier score over the days inside the evaluation rows' follow-up.

    Censoring is weighted by the Kaplan-Meier estimate of the censoring
    distribution of the training rows (inverse probability of censoring weights).
    """
    from sksurv.metrics import integrated_brier_score

    t = y_eval["time"]
    inside = (days >= t.min()) & (days < t.max())
    if inside.sum() < 2:
        return float("nan")
    return float(integrated_brier_score(y_train, y_eval, surv[:, inside], days[inside]))


def survival_metrics(
    y_train: np.ndarray, y_eval: np.ndarray, risk: np.ndarray, surv: np.ndarray, days: np.ndarray
) -> dict[str, float]:
    """Concordance and IBS of a model; the IBS of the training rows' Kaplan-Meier curve
    (the same curve for everyone) is the no-information reference."""
    km = kaplan_meier(y_train["time"], y_train["event"], days)
    return {
        "concordance": concordance(y_eval, risk),
        "integrated_brier": integrated_brier(y_train, y_eval, surv, days),
        "integrated_brier_km": integrated_brier(
            y_train, y_eval, np.tile(km, (len(y_eval), 1)), days
        ),
        "rows": len(y_eval),
        "events": int(y_eval["event"].sum()),
    }


def cross_validate_survival(
    build: Callable[[], Any],
    X: pd.DataFrame,
    y: np.ndarray,
    days: np.ndarray,
    n_folds: int,
    seed: int,
    site: bool = False,
) -> tuple[np.ndarray, dict[str, float], list[float]]:
    """Out-of-fold risk and survival, and the fold-averaged concordance and IBS.

    Folds are stratified by the event, like the classifier's, so the two are
    compared on the same kind of split. With `site` (the models take the field
    plot), the held-out rows are also scored without it, as for a seedling
    outside the study: `concordance_without_plot`.
    """
    event = y["event"].astype(int)
    splits = list(_folds(event, None, n_folds, seed))

    def predict(model: Any, Xt: pd.DataFrame) -> np.ndarray:
        out = predict_risk_and_survival(model, Xt, days)
        if not site:
            return out
        return np.column_stack([out, model.predict(without_plot(Xt))])

    preds = fold_predictions(build, X, y, splits, predict)
    oof = np.full((len(y), 1 + len(days)), np.nan)
    folds = []
    fold_c_no_plot = []
    for (train_idx, test_idx), p in zip(splits, preds, strict=True):
        oof[test_idx] = p[:, : 1 + len(days)]
        folds.append(
            survival_metrics(y[train_idx], y[test_idx], p[:, 0], p[:, 1 : 1 + len(days)], days)
        )
        if site:
            fold_c_no_plot.append(concordance(y[test_idx], p[:, -1]))
    fold_c = [m["concordance"] for m in folds]
    metrics = {
        "concordance": float(np.mean(fold_c)),
        "concordance_fold_std": float(np.std(fold_c)),
        "integrated_brier": float(np.nanmean([m["integrated_brier"] for m in folds])),
        "integrated_brier_km": float(np.nanmean([m["integrated_brier_km"] for m in folds])),
        "rows": len(y),
        "events": int(y["event"].sum()),
    }
    if site:
        metrics["concordance_without_plot"] = float(np.mean(fold_c_no_plot))
    return oof, metrics, fold_c


@dataclass
class SurvivalTrainResult:
    pipeline: Pipeline
    chosen: CVResult
    search: list[CVResult]
    days: np.ndarray
    features: tuple[str, ...]
    seconds: float

    @property
    def cv_metrics(self) -> dict[str, float]:
        return self.chosen.metrics

    def report(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen.to_dict(),
            "cv": self.cv_metrics,
            "features": list(self.features),
            "days": self.days.tolist(),
            "search": [r.to_dict() for r in self.search],
        }


def _select(results: Sequence[CVResult], select_by: str, tolerance: float) -> Any:
    """Best by the chosen metric; near-ties on concordance go to the lower IBS."""
    if select_by == "integrated_brier":
        return min(results, key=lambda r: r.metrics["integrated_brier"])
    if select_by != "concordance":
        raise ParamsError(f"survival.select_by must be one of {SELECT_BY}")
    best = max(r.metrics["concordance"] for r in results)
    close = [r for r in results if r.metrics["concordance"] >= best - tolerance]
    return min(close, key=lambda r: r.metrics["integrated_brier"])


def train_survival(
    frame: pd.DataFrame,
    params: Params,
    log_fn: Callable[[str], None] = log.info,
) -> SurvivalTrainResult:
    """Search the survival candidates by stratified CV, then fit the chosen one on all rows.

    `params` is the whole parameter set of a variant (see `Params.variant`):
    its `features` say which inputs the model sees, `survival` how it is searched.
    """
    start = time.perf_counter()
    seed = params.seed
    sp = params.survival
    features, cell_z = feature_columns(params)
    site = sp.site
    if site and schema.SITE.name not in frame.columns:
        raise InputError(f"survival.site is on but the data has no {schema.SITE.name!r} column")
    X = frame[list(features) + ([schema.SITE.name] if site else [])]
    if site:
        unknown = int((~frame[schema.SITE.name].isin(schema.PLOTS)).sum())
        if unknown:
            log_fn(
                f"survival: {unknown} training row(s) have no plot of the study "
                f"({schema.SITE.allowed()}); they count as a typical site"
            )
    y = survival_target(frame)
    days = evaluation_days(y["time"], sp.horizons)
    n_folds = sp.cv_folds

    search: list[CVResult] = []
    for name in sp.candidates:
        if name not in SURVIVAL_CANDIDATES:
            raise ParamsError(
                f"unknown survival candidate {name!r}; known: {', '.join(SURVIVAL_CANDIDATES)}"
            )
        for cfg in _configs(sp.grids.get(name, {}), sp.search_iterations, seed):
            oof, metrics, fold_c = cross_validate_survival(
                pipeline_builder(make_survival_estimator(name, cfg, seed), features, cell_z, site),
                X,
                y,
                days,
                n_folds,
                seed,
                site,
            )
            search.append(CVResult(name, cfg, metrics, fold_c, oof, "concordance"))
            log_fn(
                f"survival {name} {cfg}: concordance {metrics['concordance']:.4f} "
                f"IBS {metrics['integrated_brier']:.4f}"
            )
    if not search:
        raise ParamsError("survival.candidates: no survival candidates to train")
    chosen = _select(search, sp.select_by, sp.concordance_tolerance)
    pipeline = make_pipeline(
        make_survival_estimator(chosen.candidate, chosen.params, seed), features, cell_z, site
    ).fit(X, y)
    seconds = time.perf_counter() - start
    log_fn(
        f"survival chosen {chosen.candidate} {chosen.params}: "
        f"CV concordance {chosen.metrics['concordance']:.4f} "
        f"IBS {chosen.metrics['integrated_brier']:.4f} ({seconds:.0f} s)"
    )
    return SurvivalTrainResult(pipeline, chosen, search, days, tuple(X.columns), seconds)


# ------------------------------------------------------------------ evaluation


def kaplan_meier(
    time_: np.ndarray, event: np.ndarray, days: np.ndarray, conf_int: bool = False
) -> np.ndarray:
    """Kaplan-Meier S(day); with conf_int, rows (estimate, lower, upper) (log-log 95%)."""
    from sksurv.nonparametric import kaplan_meier_estimator

    event = np.asarray(event, dtype=bool)
    if conf_int:
        x, s, ci = kaplan_meier_estimator(event, time_, conf_type="log-log")
        curves = np.vstack([s, ci])
    else:
        x, s = kaplan_meier_estimator(event, time_)
        curves = s[None, :]
    idx = np.searchsorted(x, days, side="right") - 1
    out = np.where(idx >= 0, curves[:, np.maximum(idx, 0)], 1.0)
    return out if conf_int else out[0]


def km_vs_predicted(
    y: np.ndarray, predicted: Mapping[str, np.ndarray], days: np.ndarray
) -> list[dict[str, float]]:
    """Kaplan-Meier of the rows against each model's mean predicted survival, by day."""
    km = kaplan_meier(y["time"], y["event"], days, conf_int=True)
    rows = []
    for j, day in enumerate(days):
        row = {
            "day": float(day),
            "kaplan_meier": round(float(km[0, j]), 5),
            "kaplan_meier_lower": round(float(km[1, j]), 5),
            "kaplan_meier_upper": round(float(km[2, j]), 5),
        }
        for name, surv in predicted.items():
            row[f"predicted_{name}"] = round(float(surv[:, j].mean()), 5)
        rows.append(row)
    return rows


def horizon_calibration(
    y: np.ndarray, surv_at: np.ndarray, horizons: Sequence[float] | np.ndarray, groups: int
) -> list[dict[str, Any]]:
    """Predicted against observed probability of death by each horizon, by risk group.

    Rows are split into `groups` equal-sized groups by their predicted death
    probability at the horizon; the observed probability is 1 - Kaplan-Meier of
    the group at that day, so censored rows count for the time they were seen.
    """
    out = []
    for j, h in enumerate(horizons):
        p = 1.0 - surv_at[:, j]
        order = np.argsort(p, kind="mergesort")
        for g, idx in enumerate(np.array_split(order, groups)):
            if len(idx) == 0:
                continue
            observed = 1.0 - kaplan_meier(y["time"][idx], y["event"][idx], np.array([h]))[0]
            out.append(
                {
                    "horizon": float(h),
                    "group": g + 1,
                    "predicted": round(float(p[idx].mean()), 5),
                    "observed": round(float(observed), 5),
                    "count": len(idx),
                }
            )
    return out


def calibration_error(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per horizon: count-weighted mean |observed - predicted| over the risk groups."""
    out: dict[str, float] = {}
    for h in sorted({float(r["horizon"]) for r in rows}):
        sel = [r for r in rows if float(r["horizon"]) == h]
        n = sum(int(r["count"]) for r in sel)
        err = sum(int(r["count"]) * abs(r["observed"] - r["predicted"]) for r in sel) / n
        out[f"day_{h:g}"] = float(err)
    return out


def save_survival_pngs(
    km_rows: Sequence[Mapping[str, Any]],
    calibration_rows: Sequence[Mapping[str, Any]],
    directory: Any,
) -> list[str]:
    """Kaplan-Meier against the predicted survival, and the calibration at each horizon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    days = [r["day"] for r in km_rows]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.fill_between(
        days,
        [r["kaplan_meier_lower"] for r in km_rows],
        [r["kaplan_meier_upper"] for r in km_rows],
        step="post",
        alpha=0.2,
        color="grey",
        label="Kaplan-Meier 95% CI",
    )
    ax.step(days, [r["kaplan_meier"] for r in km_rows], where="post", c="k", label="Kaplan-Meier")
    for key in sorted(k for k in km_rows[0] if k.startswith("predicted_")):
        model = key.removeprefix("predicted_")
        ax.step(days, [r[key] for r in km_rows], where="post", label=f"mean predicted ({model})")
    ax.set(
        xlabel="days since planting",
        ylabel="share alive",
        ylim=(0, 1.02),
        title="Survival, held-out test split",
    )
    ax.legend(loc="lower left", fontsize="small")
    written = [save_figure(fig, directory / "survival_km.png")]

    horizons = sorted({float(r["horizon"]) for r in calibration_rows})
    fig, axes = plt.subplots(1, len(horizons), figsize=(3.4 * len(horizons), 3.6), squeeze=False)
    series = sorted({(r["model"], r["split"]) for r in calibration_rows})
    for ax, h in zip(axes[0], horizons, strict=True):
        for model, split in series:
            pts = [
                r
                for r in calibration_rows
                if float(r["horizon"]) == h and r["model"] == model and r["split"] == split
            ]
            ax.plot(
                [r["predicted"] for r in pts],
                [r["observed"] for r in pts],
                marker="o" if split == "test" else "s",
                ls="-" if model == "full" else "--",
                label=f"{model}, {split}",
            )
        ax.plot([0, 1], [0, 1], ls=":", c="grey")
        ax.set(xlabel="predicted P(death)", ylabel="observed (Kaplan-Meier)", title=f"day {h:g}")
    axes[0][0].legend(loc="upper left", fontsize="x-small")
    written.append(save_figure(fig, directory / "survival_calibration.png"))
    return written
