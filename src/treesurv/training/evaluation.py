"""Metrics, plot data and the model card. Pure functions; the CLI writes the files."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from treesurv.core import schema

METRIC_NAMES = ("roc_auc", "brier", "log_loss", "accuracy", "ece")


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed - predicted| over equal-width probability bins, weighted by count."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.sum() * abs(y[sel].mean() - p[sel].mean())
    return float(total / len(y)) if len(y) else float("nan")


def classification_metrics(
    y: np.ndarray, p: np.ndarray, threshold: float = 0.5, bins: int = 10
) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, brier_score_loss, log_loss

    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    return {
        "roc_auc": _roc_auc(y, p),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "accuracy": float(accuracy_score(y, (p >= threshold).astype(int))),
        "ece": expected_calibration_error(y, p, bins),
        "rows": len(y),
    }


def rounded(metrics: Mapping[str, Any], digits: int = 4) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, Mapping):
            out[k] = rounded(v, digits)
        elif isinstance(v, float):
            out[k] = None if math.isnan(v) else round(v, digits)
        else:
            out[k] = v
    return out


# ------------------------------------------------------------------------ plots


def roc_points(y: np.ndarray, p: np.ndarray) -> list[dict[str, float]]:
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=True)
    return [
        {
            "fpr": round(float(a), 5),
            "tpr": round(float(b), 5),
            "threshold": round(float(min(t, 1.0)), 5),
        }
        for a, b, t in zip(fpr, tpr, thr, strict=True)
    ]


def calibration_points(y: np.ndarray, p: np.ndarray, bins: int, split: str) -> list[dict[str, Any]]:
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            out.append(
                {
                    "predicted": round(float(p[sel].mean()), 5),
                    "observed": round(float(y[sel].mean()), 5),
                    "count": int(sel.sum()),
                    "split": split,
                }
            )
    return out


def confusion_rows(y: np.ndarray, p: np.ndarray, threshold: float) -> list[dict[str, str]]:
    label = {0: "survived", 1: "died"}
    pred = (p >= threshold).astype(int)
    return [
        {"actual": label[int(a)], "predicted": label[int(b)]} for a, b in zip(y, pred, strict=True)
    ]


def confusion_matrix(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, int]:
    pred = (p >= threshold).astype(int)
    return {
        "true_negative": int(((y == 0) & (pred == 0)).sum()),
        "false_positive": int(((y == 0) & (pred == 1)).sum()),
        "false_negative": int(((y == 1) & (pred == 0)).sum()),
        "true_positive": int(((y == 1) & (pred == 1)).sum()),
    }


def save_png_plots(
    y: np.ndarray,
    p: np.ndarray,
    oof_y: np.ndarray,
    oof_p: np.ndarray,
    threshold: float,
    bins: int,
    directory: Any,
) -> list[str]:
    """ROC, calibration and confusion-matrix images, for the card and CML reports."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    directory.mkdir(parents=True, exist_ok=True)
    written = []

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, yy, pp in (("test", y, p), ("cross-validation", oof_y, oof_p)):
        fpr, tpr, _ = roc_curve(yy, pp)
        ax.plot(fpr, tpr, label=f"{name} (AUC {_roc_auc(yy, pp):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right")
    written.append(save_figure(fig, directory / "roc.png"))

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, yy, pp in (("test", y, p), ("cross-validation", oof_y, oof_p)):
        pts = calibration_points(yy, pp, bins, name)
        ax.plot([q["predicted"] for q in pts], [q["observed"] for q in pts], marker="o", label=name)
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(
        xlabel="predicted probability of death",
        ylabel="observed share that died",
        title="Calibration",
    )
    ax.legend(loc="upper left")
    written.append(save_figure(fig, directory / "calibration.png"))

    cm = confusion_matrix(y, p, threshold)
    grid = np.array(
        [[cm["true_negative"], cm["false_positive"]], [cm["false_negative"], cm["true_positive"]]]
    )
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(grid, cmap="Blues")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set_xticks([0, 1], ["survived", "died"])
    ax.set_yticks([0, 1], ["survived", "died"])
    ax.set(xlabel="predicted", ylabel="actual", title=f"Test split (threshold {threshold:g})")
    written.append(save_figure(fig, directory / "confusion.png"))
    return written


def save_figure(fig: Any, path: Any) -> str:
    """Write a matplotlib figure as PNG with fixed metadata, then close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    # Fixed metadata keeps the PNG bytes identical between runs.
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return str(path)


# ------------------------------------------------------------------- model card


def _metric_row(name: str, m: Mapping[str, Any]) -> str:
    cells = [f"{m.get(k):.3f}" if isinstance(m.get(k), float) else "-" for k in METRIC_NAMES]
    return f"| {name} | " + " | ".join(cells) + f" | {m.get('rows', '-')} |"


def model_card(
    *,
    name: str,
    metrics: Mapping[str, Any],
    train_report: Mapping[str, Any],
    data_md5: str,
    rows: Mapping[str, int],
    threshold: float,
    light_range: tuple[float, float],
    plots: int,
    planning_report: Mapping[str, Any] | None = None,
    survival_reports: Mapping[str, Any] | None = None,
) -> str:
    extra = _planning_section(metrics, planning_report) + _survival_section(
        metrics, survival_reports
    )
    chosen = train_report["chosen"]
    feature_rows = []
    for f in schema.FEATURES:
        allowed = (
            ", ".join(f.categories)
            if f.kind == "categorical"
            else f"{f.minimum:g} to {f.maximum:g} {f.unit}".strip()
        )
        when = "at harvest or death" if f.trait else "at planting (design)"
        feature_rows.append(f"| {f.name} | {allowed} | {when} | {f.description} |")
    search = sorted(train_report["search"], key=lambda r: -r["metrics"]["roc_auc"])
    best_per: dict[str, Any] = {}
    for r in search:
        best_per.setdefault(r["candidate"], r)
    cand_rows = [
        f"| {c} | {r['metrics']['roc_auc']:.3f} | {r['metrics']['brier']:.3f} |"
        for c, r in best_per.items()
    ]
    return f"""# Model card: {name}

Probability that a tree seedling dies, from its species, light, soil inoculum and
root/tissue measurements. Generated by the treesurv pipeline (`dvc repro`).

## Model
- Chosen by stratified cross-validated ROC AUC among: {", ".join(best_per)}.
- Chosen: **{chosen["candidate"]}** with `{chosen["params"]}`.
- Calibration: **{train_report["calibration"]["method"]}**, chosen by the Brier score of
  out-of-fold predictions (cross-fitted: a calibrator is never scored on rows it was fit on).
- Decision threshold for `predicted_event`: {threshold:g}.

| candidate (best configuration) | CV ROC AUC | CV Brier |
|---|---|---|
{chr(10).join(cand_rows)}

## Data
- Wood et al. (2023), seedling survival study, released CC0. File md5 `{data_md5}`.
- {rows.get("train", 0)} training rows, {rows.get("test", 0)} held-out test rows (split by a hash
  of the seedling id, so the split is stable when rows are added).
- Target `Event`: 1 = died, 0 = harvested or alive at the end of the study (censored).
  Rows without a recorded outcome are dropped.

## Features
| feature | allowed values | measured | meaning |
|---|---|---|---|
{chr(10).join(feature_rows)}

Never used as features: {", ".join(schema.LEAKY)} (they record the outcome) and the
field plot (kept only to group the cross-validation).

## Metrics
| evaluation | ROC AUC | Brier | log loss | accuracy | ECE | rows |
|---|---|---|---|---|---|---|
{_metric_row("cross-validation (stratified)", metrics["cv"])}
{_metric_row("cross-validation (grouped by plot)", metrics["cv_group"])}
{_metric_row("held-out test split", metrics["test"])}

Grouped-by-plot figures estimate performance at a field site the model has not seen.
{extra}
## Intended use
- Estimating how likely a seedling in a comparable nursery or field experiment is to die,
  for seedlings of the four species and seven soil sources of the study.
- Comparing risk between treatments (soil inoculum, light) when the trait
  measurements are available.

## Limits
- **The trait measurements (AMF, EMF, Phenolics, Lignin, NSC) were taken at harvest
  or at death**, not at planting. They partly reflect the seedling's fate, so this
  model describes the association between traits and death; it is not a
  forecast that can be made before planting, and its accuracy overstates what is
  possible from planting-time information.
- The classifiers count harvested seedlings as survivors (censoring is ignored): their
  probability is of death during the study, not by a given day. The survival models
  handle censoring (a seedling harvested on day 24.5 counts as alive up to then) and
  give the probability of being alive on a given day, **up to day {_max_days(metrics):g}, the
  study's longest follow-up**; later days are refused, not extrapolated.
- Light levels in the training data span {light_range[0]:.3f}-{light_range[1]:.3f}; the
  API accepts 0-1, but predictions far outside the observed span are extrapolations.
  Other species or soil sources are refused.
- One study in one region ({plots} field plots); other sites may differ.
"""


def _max_days(metrics: Mapping[str, Any]) -> float:
    return float(metrics.get("survival", {}).get("max_days") or 115.5)


def _planning_section(metrics: Mapping[str, Any], planning_report: Mapping[str, Any] | None) -> str:
    if planning_report is None or "planning" not in metrics:
        return ""
    chosen = planning_report["chosen"]
    full, plan = metrics, metrics["planning"]
    rows = "\n".join(
        f"| {label} | {full[split]['roc_auc']:.3f} | {plan[split]['roc_auc']:.3f} "
        f"| {full[split]['brier']:.3f} | {plan[split]['brier']:.3f} |"
        for split, label in (
            ("cv", "cross-validation (stratified)"),
            ("cv_group", "cross-validation (grouped by plot)"),
            ("test", "held-out test split"),
        )
    )
    return f"""
## Planning model (before planting)
Before planting, nobody knows a seedling's root colonisation or tissue chemistry.
The planning classifier sees only the design: {", ".join(schema.DESIGN)}. Chosen the
same way: **{chosen["candidate"]}** with `{chosen["params"]}`, calibration
**{planning_report["calibration"]["method"]}**.

| evaluation | ROC AUC full | ROC AUC planning | Brier full | Brier planning |
|---|---|---|---|---|
{rows}

The gap is what the traits add; they are measured at harvest or death, so the
planning figures are the honest ones for a decision taken at planting.
"""


def _survival_section(
    metrics: Mapping[str, Any], survival_reports: Mapping[str, Any] | None
) -> str:
    surv = metrics.get("survival")
    if not survival_reports or not surv:
        return ""
    rows = []
    for variant in ("full", "planning"):
        m, chosen = surv[variant], survival_reports[variant]["chosen"]
        rows.append(
            f"| {variant} | {chosen['candidate']} | {m['cv']['concordance']:.3f} "
            f"| {_without_plot(m['cv'])} "
            f"| {m['cv']['integrated_brier']:.3f} ({m['cv']['integrated_brier_km']:.3f}) "
            f"| {m['test']['concordance']:.3f} "
            f"| {m['test']['integrated_brier']:.3f} ({m['test']['integrated_brier_km']:.3f}) |"
        )
    calib = []
    for variant in ("full", "planning"):
        errs = surv[variant]["calibration_error"]["test"]
        calib.append(
            f"| {variant} | " + " | ".join(f"{errs[k]:.3f}" for k in sorted(errs, key=_day)) + " |"
        )
    days = sorted(surv["full"]["calibration_error"]["test"], key=_day)
    head = " | ".join(f"day {_day(k):g}" for k in days)
    return f"""
## Survival models
P(alive on day t | seedling), censoring handled: `Time` is the day of death or of
harvest, `Event` says which. Cox-type models, S(t|x) = S0(t) ** exp(risk(x)) with
Breslow's baseline; candidates (Cox PH, gradient-boosted Cox trees) are compared by
stratified cross-validated concordance (Harrell's C) and integrated Brier score
(IBS, censoring weighted by inverse probability). Defined up to day
{surv["max_days"]:g}, the study's longest follow-up.

| variant | model | CV concordance | CV, no plot | CV IBS (KM) | test concordance | test IBS (KM) |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

KM: the IBS of the plain Kaplan-Meier curve of the training rows (the same
curve for every seedling): what the model's features are worth.

Site: besides the design (and, for the full model, the traits) the survival
models take the seedling's field plot ({schema.SITE.name}, 1-18) as an optional
input. Seedlings in some plots died weeks later than like seedlings elsewhere, a
site effect no other input carries. With the plot, answers are for that plot of
the study; without it (any seedling outside the study), for a typical site:
"CV, no plot" scores the same held-out rows with the plot left out.

Calibration at fixed days (held-out test split): mean |observed - predicted|
probability of death over equal-sized groups by predicted risk (observed = 1 -
Kaplan-Meier of the group), weighted by group size.

| variant | {head} |
|---|{"---|" * len(days)}
{chr(10).join(calib)}
"""


def _without_plot(m: Mapping[str, Any]) -> str:
    value = m.get("concordance_without_plot")
    return "—" if value is None else f"{value:.3f}"


def _day(key: str) -> float:
    return float(key.removeprefix("day_"))
