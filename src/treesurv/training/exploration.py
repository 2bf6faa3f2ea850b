"""The study report (`treesurv explore`, the `explore` stage): what the data says,
beside what the model learnt from it.

Pure functions compute each section's numbers from the study (the validated rows),
the raw file (for its empty cells) and the chosen classifier on the held-out test
split; each section's sentence is composed from those numbers, never typed in.
`render_figures` draws the figures from the report alone (matplotlib, PNG with fixed
metadata), `render_html` writes the page that shows them, and `stage_explore` writes
the files:

    reports/explore/explore.html     the page; its figures beside it, linked by name
    reports/explore/explore.json     every section: title, sentence, numbers, table
    reports/explore/explore-*.png    the figures
    plots/explore/*.json             the series `dvc plots` draws (dvc.yaml)

The names are flat and start with `explore`, so the `package` stage copies them
into the model bundle as they are, and the service answers `/explore`,
`/explore.json` and `/explore-*.png` with the same relative links as on disk.
Every random step has a fixed seed: a second run writes the same bytes.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from treesurv.core import schema
from treesurv.core.config import Params
from treesurv.core.files import read_table, write_json
from treesurv.core.split import model_frame
from treesurv.inference.bundle import EXPLORE_HTML as HTML_FILE
from treesurv.inference.bundle import EXPLORE_JSON as JSON_FILE
from treesurv.inference.bundle import EXPLORE_PREFIX as PREFIX

TITLE = "The seedling study: what separates the seedlings that died"
# The groupings of the Kaplan-Meier curves: (section id, column, title).
KM_GROUPS = (
    ("km-species", "Species", "Survival by species"),
    ("km-soil", "Soil", "Survival by soil inoculum"),
    ("km-sterile", "Sterile", "Survival in sterile and live soil"),
)
CORRELATED = ("Light_ISF", *schema.TRAITS)
OUTCOME = {0: "survived", 1: "died"}

Section = dict[str, Any]


# ------------------------------------------------------------------ formatting


def _r(value: Any, digits: int = 4) -> Any:
    """A number rounded for the JSON (NaN -> None), so re-runs compare equal."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else round(value, digits)


def pct(share: float) -> str:
    return f"{100 * share:.0f}%"


def p_text(p: float) -> str:
    """A p-value as a person reads it."""
    if p < 1e-4:
        return "p < 0.0001"
    return f"p = {p:.4f}" if p < 0.01 else f"p = {p:.2f}"


def _names(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _value(value: float) -> str:
    return f"{value:.3g}"


def _named(name: str) -> str:
    """A numeric input with its unit, as a sentence names it: "NSC (% dry mass)"."""
    unit = schema.FEATURES_BY_NAME[name].unit
    return f"{name} ({unit})" if unit and unit != "fraction" else name


def _group_label(column: str, value: str) -> str:
    """Seedlings of a group, as a sentence names them."""
    if column == "Species":
        return f"{value} seedlings"
    return f"seedlings in {value.lower() if column == 'Sterile' else value} soil"


# -------------------------------------------------------------------- sections


def design_counts(study: pd.DataFrame) -> Section:
    """Rows per species, per species x soil, and per species x soil x plot."""
    species = [s for s in schema.SPECIES if (study["Species"] == s).any()]
    soils = [s for s in schema.SOIL_SOURCES if (study["Soil"] == s).any()]
    plots = sorted(int(p) for p in study[schema.GROUP].dropna().unique())
    cells = study.groupby(["Species", "Soil"]).size()
    grid = [[int(cells.get((sp, so), 0)) for so in soils] for sp in species]
    by_plot = study.groupby(["Species", "Soil", schema.GROUP]).size()
    counted = by_plot.reset_index(name="rows").sort_values(["Species", "Soil", schema.GROUP])
    records = [
        {"Species": sp, "Soil": so, "Plot": int(pl), "rows": int(n)}
        for sp, so, pl, n in zip(
            counted["Species"], counted["Soil"], counted[schema.GROUP], counted["rows"], strict=True
        )
    ]
    species_plot = study.groupby(["Species", schema.GROUP]).size()
    plot_grid = [[int(species_plot.get((sp, pl), 0)) for pl in plots] for sp in species]
    planted = [n for row in grid for n in row if n]
    plot_rows = study.groupby(schema.GROUP).size()
    plots_per_cell = by_plot.groupby(level=[0, 1]).size()
    per_species = {sp: int((study["Species"] == sp).sum()) for sp in species}
    data: dict[str, Any] = {
        "rows": len(study),
        "species": species,
        "soils": soils,
        "plots": plots,
        "per_species": per_species,
        "species_soil": grid,
        "species_plot": plot_grid,
        "species_soil_plot": records,
        "planted_cells": len(planted),
        "cell_rows": [min(planted), max(planted)],
        "plot_rows": [int(plot_rows.min()), int(plot_rows.max())],
        "plots_per_cell": [int(plots_per_cell.min()), int(plots_per_cell.max())],
    }
    sentence = (
        f"The study has {len(study):,} seedlings of {len(species)} species in "
        f"{len(plots)} field plots ({_names([f'{n:,} {sp}' for sp, n in per_species.items()])}). "
        f"The {len(planted)} species × soil combinations that were planted hold "
        f"{min(planted):,}–{max(planted):,} seedlings each, spread over "
        f"{data['plots_per_cell'][0]}–{data['plots_per_cell'][1]} plots; each plot holds "
        f"{data['plot_rows'][0]:,}–{data['plot_rows'][1]:,} seedlings."
    )
    table = {
        "columns": ["species", *soils, "all soils"],
        "rows": [[sp, *row, sum(row)] for sp, row in zip(species, grid, strict=True)],
    }
    return _section("design", "Seedlings per species, soil and plot", sentence, data, table)


def missingness(raw: pd.DataFrame, study: pd.DataFrame) -> Section:
    """Empty cells of the raw file by column, and how EMF's empties follow the species."""
    empty = {str(c): int(raw[c].isna().sum()) for c in raw.columns}
    with_empty = {c: n for c, n in empty.items() if n}
    emf: list[dict[str, Any]] = []
    for sp in schema.SPECIES:
        rows = study[study["Species"] == sp]
        if rows.empty:
            continue
        emf.append(
            {
                "species": sp,
                "myco": schema.SPECIES_MYCO[sp],
                "rows": len(rows),
                "empty": int(rows["EMF"].isna().sum()),
                "measured": int(rows["EMF"].notna().sum()),
            }
        )
    breaks = sum(
        schema.RULES[0] in schema.rule_violations({"Species": sp, "EMF": emf_value})
        for sp, emf_value in zip(study["Species"], study["EMF"], strict=True)
    )
    data = {
        "raw_rows": len(raw),
        "empty_cells": empty,
        "emf_by_species": emf,
        "emf_rule_breaks": breaks,
    }
    amf = [e for e in emf if e["myco"] == "AMF"]
    ecto = [e for e in emf if e["myco"] == "EMF"]
    listed = _names([f"{c} ({n:,})" for c, n in with_empty.items()]) or "none"
    sentence = (
        f"Of the {len(raw):,} rows of the study's file, the columns with empty cells are "
        f"{listed}. EMF is empty on {sum(e['empty'] for e in amf):,} of the "
        f"{sum(e['rows'] for e in amf):,} seedlings of the AMF species "
        f"({_names([e['species'] for e in amf])}) and on {sum(e['empty'] for e in ecto):,} of "
        f"the {sum(e['rows'] for e in ecto):,} of the EMF species "
        f"({_names([e['species'] for e in ecto])}): {breaks:,} validated rows break the "
        "schema's rule that EMF is empty exactly for the AMF species, so an empty EMF says "
        "which kind of species the seedling is, not that a measurement was lost."
    )
    table = {
        "columns": ["species", "mycorrhiza", "seedlings", "EMF measured", "EMF empty"],
        "rows": [[e["species"], e["myco"], e["rows"], e["measured"], e["empty"]] for e in emf],
    }
    return _section("missing", "Empty cells and the EMF rule", sentence, data, table)


def _box(values: np.ndarray) -> dict[str, Any]:
    """Box-plot statistics (whiskers at 1.5 IQR within the data) and the mean."""
    if len(values) == 0:
        return {"n": 0}
    q1, med, q3 = np.quantile(values, [0.25, 0.5, 0.75])
    iqr = q3 - q1
    inside = values[(values >= q1 - 1.5 * iqr) & (values <= q3 + 1.5 * iqr)]
    return {
        "n": len(values),
        "mean": _r(values.mean()),
        "median": _r(med),
        "q1": _r(q1),
        "q3": _r(q3),
        "low": _r(inside.min()),
        "high": _r(inside.max()),
    }


def trait_distribution(study: pd.DataFrame, trait: str) -> Section:
    """A trait by species and by outcome (died or survived)."""
    groups = []
    for sp in schema.SPECIES:
        for event, outcome in OUTCOME.items():
            sel = (study["Species"] == sp) & (study[schema.TARGET] == event)
            values = study.loc[sel, trait].dropna().to_numpy(dtype=float)
            groups.append({"species": sp, "outcome": outcome, **_box(values)})
    overall = {
        outcome: _box(study.loc[study[schema.TARGET] == e, trait].dropna().to_numpy(dtype=float))
        for e, outcome in OUTCOME.items()
    }
    measured = [
        sp for sp in schema.SPECIES if study.loc[study["Species"] == sp, trait].notna().any()
    ]
    gaps = []
    for sp in measured:
        died, lived = (
            next(g for g in groups if g["species"] == sp and g["outcome"] == o)
            for o in ("died", "survived")
        )
        if died["n"] and lived["n"]:
            gaps.append((sp, died["median"], lived["median"]))
    data = {
        "trait": trait,
        "unit": schema.FEATURES_BY_NAME[trait].unit,
        "groups": groups,
        "overall": overall,
    }
    only = f" (measured on {_names(measured)} only)" if len(measured) < len(schema.SPECIES) else ""
    sentence = (
        f"Seedlings that died had a median {_named(trait)} of "
        f"{_value(overall['died']['median'])} against "
        f"{_value(overall['survived']['median'])} in those that survived{only}."
    )
    if gaps:
        sp, d, s = max(gaps, key=lambda g: abs(g[1] - g[2]))
        sentence += (
            f" Within one species the medians differ most in {sp}: "
            f"{_value(d)} (died) against {_value(s)} (survived)."
        )
    table = {
        "columns": ["species", "outcome", "seedlings", "median", "quartiles", "mean"],
        "rows": [
            [
                g["species"],
                g["outcome"],
                g["n"],
                g.get("median"),
                f"{g['q1']:.3g}–{g['q3']:.3g}" if g["n"] else None,
                g.get("mean"),
            ]
            for g in groups
        ],
    }
    description = re.split(r"[;(]", schema.FEATURES_BY_NAME[trait].description)[0]
    description = description.strip().rstrip(".")
    return _section(
        f"trait-{trait.lower()}",
        f"{trait}: {description}, by species and outcome",
        sentence,
        data,
        table,
    )


def death_by_light(study: pd.DataFrame, bins: int) -> Section:
    """Share that died in equal-sized light groups, overall and per species."""
    light = study["Light_ISF"].to_numpy(dtype=float)
    edges = np.unique(np.quantile(light, np.linspace(0, 1, bins + 1)))
    index = np.clip(np.searchsorted(edges, light, side="right") - 1, 0, len(edges) - 2)
    died = study[schema.TARGET].to_numpy(dtype=int)
    series: dict[str, list[dict[str, Any]]] = {}
    for name in ("all", *schema.SPECIES):
        keep = np.ones(len(study), bool) if name == "all" else (study["Species"] == name).to_numpy()
        rows = []
        for b in range(len(edges) - 1):
            sel = keep & (index == b)
            if sel.any():
                rows.append(
                    {
                        "bin": b + 1,
                        "light_low": _r(edges[b]),
                        "light_high": _r(edges[b + 1]),
                        "light_median": _r(np.median(light[sel])),
                        "rows": int(sel.sum()),
                        "deaths": int(died[sel].sum()),
                        "death_rate": _r(died[sel].mean()),
                    }
                )
        series[name] = rows
    data = {"bins": len(edges) - 1, "series": series}
    first, last = series["all"][0], series["all"][-1]
    changes = [
        (sp, s[0]["death_rate"], s[-1]["death_rate"])
        for sp, s in series.items()
        if sp != "all" and len(s) > 1
    ]
    sentence = (
        f"Split into {len(edges) - 1} equal-sized light groups, {pct(first['death_rate'])} of "
        f"the seedlings in the darkest (Light_ISF {first['light_low']:.3f}–"
        f"{first['light_high']:.3f}) died against {pct(last['death_rate'])} in the "
        f"brightest ({last['light_low']:.3f}–{last['light_high']:.3f})."
    )
    if changes:
        sp, a, b = max(changes, key=lambda c: abs(c[2] - c[1]))
        sentence += (
            f" The change is largest for {sp}: {pct(a)} in the darkest group, {pct(b)} in "
            "the brightest."
        )
    table = {
        "columns": ["light group", "Light_ISF", *("all", *schema.SPECIES)],
        "rows": [
            [
                b + 1,
                f"{edges[b]:.3f}–{edges[b + 1]:.3f}",
                *(_rate_of(series[name], b + 1) for name in ("all", *schema.SPECIES)),
            ]
            for b in range(len(edges) - 1)
        ],
    }
    return _section("light", "Death rate against light", sentence, data, table)


def _rate_of(rows: Sequence[Mapping[str, Any]], b: int) -> str | None:
    for r in rows:
        if r["bin"] == b:
            return f"{pct(r['death_rate'])} of {r['rows']:,}"
    return None


def kaplan_meier_steps(time_: np.ndarray, event: np.ndarray) -> list[dict[str, float]]:
    """The Kaplan-Meier curve as its steps: (day, share alive) from day 0."""
    from sksurv.nonparametric import kaplan_meier_estimator

    days, alive = kaplan_meier_estimator(np.asarray(event, dtype=bool), np.asarray(time_, float))
    return [{"day": 0.0, "survival": 1.0}] + [
        {"day": _r(d), "survival": _r(s, 5)} for d, s in zip(days, alive, strict=True)
    ]


def survival_at(steps: Sequence[Mapping[str, float]], day: float) -> float:
    """A step curve's value on a day (the last step at or before it)."""
    value = 1.0
    for step in steps:
        if step["day"] > day:
            break
        value = step["survival"]
    return value


def log_rank(time_: np.ndarray, event: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """The log-rank test that the groups' survival curves are the same."""
    from sksurv.compare import compare_survival
    from sksurv.util import Surv

    y = Surv.from_arrays(np.asarray(event, dtype=bool), np.asarray(time_, dtype=float))
    chisq, p = compare_survival(y, np.asarray(groups))
    return {"chi2": _r(chisq), "df": len(np.unique(groups)) - 1, "p_value": float(f"{p:.4g}")}


def survival_by(study: pd.DataFrame, column: str, section_id: str, title: str) -> Section:
    """Kaplan-Meier curves of the groups of a column and their log-rank test."""
    time_ = study[schema.TIME].to_numpy(dtype=float)
    event = study[schema.TARGET].to_numpy(dtype=int)
    values = study[column].astype(str).to_numpy()
    order = [v for v in schema.FEATURES_BY_NAME[column].categories if (values == v).any()]
    horizon = min(float(time_[values == v].max()) for v in order)
    curves: list[dict[str, Any]] = []
    for v in order:
        sel = values == v
        steps = kaplan_meier_steps(time_[sel], event[sel])
        below = [s["day"] for s in steps if s["survival"] <= 0.5]
        curves.append(
            {
                "group": v,
                "rows": int(sel.sum()),
                "deaths": int(event[sel].sum()),
                "survival_at_horizon": survival_at(steps, horizon),
                "median_day": below[0] if below else None,
                "steps": steps,
            }
        )
    test = log_rank(time_, event, values)
    best = max(curves, key=lambda c: c["survival_at_horizon"])
    worst = min(curves, key=lambda c: c["survival_at_horizon"])
    sentence = (
        f"By day {horizon:g}, {pct(best['survival_at_horizon'])} of the "
        f"{_group_label(column, best['group'])} were still alive against "
        f"{pct(worst['survival_at_horizon'])} of the {_group_label(column, worst['group'])} "
        "(Kaplan-Meier; a harvested seedling counts as alive up to its harvest). "
        f"The log-rank test across the {len(curves)} groups gives "
        f"χ² = {test['chi2']:.1f} on {test['df']} degree{'s' if test['df'] != 1 else ''} of "
        f"freedom, {p_text(test['p_value'])}."
    )
    data = {"column": column, "horizon": horizon, "curves": curves, "log_rank": test}
    table = {
        "columns": [column, "seedlings", "died", f"alive on day {horizon:g}", "median day"],
        "rows": [
            [
                c["group"],
                c["rows"],
                c["deaths"],
                pct(c["survival_at_horizon"]),
                "not reached" if c["median_day"] is None else f"{c['median_day']:g}",
            ]
            for c in curves
        ],
    }
    return _section(section_id, title, sentence, data, table)


def trait_correlations(study: pd.DataFrame) -> Section:
    """Spearman correlations between light and the traits (pairwise complete rows)."""
    cols = list(CORRELATED)
    matrix = study[cols].corr(method="spearman").to_numpy()
    pairs = []
    for i, a in enumerate(cols):
        for j in range(i + 1, len(cols)):
            b = cols[j]
            n = int(study[[a, b]].dropna().shape[0])
            pairs.append({"a": a, "b": b, "rho": _r(matrix[i, j], 3), "rows": n})
    pairs.sort(key=lambda p: (-abs(p["rho"]), p["a"], p["b"]))
    strong = [p for p in pairs if abs(p["rho"]) >= 0.3]
    top = pairs[0]
    sentence = (
        f"The strongest association is between {top['a']} and {top['b']} "
        f"(Spearman ρ = {top['rho']:+.2f} over {top['rows']:,} seedlings); "
        f"{len(strong)} of the {len(pairs)} pairs have |ρ| of 0.3 or more"
    )
    rest = strong[1:3]
    sentence += (
        ", the next being " + _names([f"{p['a']}–{p['b']} ({p['rho']:+.2f})" for p in rest]) + "."
        if rest
        else "."
    )
    data = {
        "columns": cols,
        "matrix": [[_r(v, 3) for v in row] for row in matrix],
        "pairs": pairs,
    }
    table = {
        "columns": ["", *cols],
        "rows": [[a, *(f"{v:+.2f}" for v in row)] for a, row in zip(cols, matrix, strict=True)],
    }
    return _section("correlations", "Correlations between the traits", sentence, data, table)


def permutation_effects(
    model: Any, test: pd.DataFrame, *, seed: int, repeats: int
) -> dict[str, Any]:
    """Permutation importance of each input (held-out ROC AUC lost when it is shuffled,
    `sklearn.inspection.permutation_importance`) and the direction of its effect.

    Direction, numeric inputs: `model_shift`, the mean change in predicted P(death)
    when the input is raised by one standard deviation (of these rows) with the
    others held, over the rows where it is measured; and `died_minus_survived`, the
    difference of its means between the seedlings that died and those that survived.
    Categorical inputs: each category's observed death rate and mean predicted risk.
    """
    from threadpoolctl import threadpool_limits

    # Many small predictions: OpenMP's spinning threads (histogram boosting) cost
    # more than they give on a few hundred rows, and far more on a busy machine.
    with threadpool_limits(limits=1, user_api="openmp"):
        return _permutation_effects(model, test, seed, repeats)


def _permutation_effects(model: Any, test: pd.DataFrame, seed: int, repeats: int) -> dict[str, Any]:
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import roc_auc_score

    X = test[list(schema.FEATURE_NAMES)].reset_index(drop=True)
    y = test[schema.TARGET].to_numpy(dtype=int)

    def auc(estimator: Any, X_: pd.DataFrame, y_: np.ndarray) -> float:
        return float(roc_auc_score(y_, estimator.predict_proba(X_)[:, 1]))

    result = permutation_importance(
        model, X, y, scoring=auc, n_repeats=repeats, random_state=seed, n_jobs=1
    )
    p = model.predict_proba(X)[:, 1]
    features = []
    for k, name in enumerate(schema.FEATURE_NAMES):
        entry: dict[str, Any] = {
            "feature": name,
            "kind": schema.FEATURES_BY_NAME[name].kind,
            "importance": _r(result.importances_mean[k], 5),
            "importance_std": _r(result.importances_std[k], 5),
        }
        if entry["kind"] == "numeric":
            values = X[name].to_numpy(dtype=float)
            measured = ~np.isnan(values)
            sd = float(np.std(values[measured], ddof=1)) if measured.sum() > 1 else 0.0
            shifted = X.copy()
            shifted[name] = values + sd
            moved = model.predict_proba(shifted)[:, 1] - p
            died, lived = values[measured & (y == 1)], values[measured & (y == 0)]
            entry |= {
                "sd": _r(sd),
                "model_shift": _r(moved[measured].mean() if measured.any() else 0.0, 5),
                "died_mean": _r(died.mean()) if len(died) else None,
                "survived_mean": _r(lived.mean()) if len(lived) else None,
                "died_minus_survived": _r(died.mean() - lived.mean())
                if len(died) and len(lived)
                else None,
            }
        else:
            cats = []
            for c in schema.FEATURES_BY_NAME[name].categories:
                sel = (X[name] == c).to_numpy()
                if sel.any():
                    cats.append(
                        {
                            "category": c,
                            "rows": int(sel.sum()),
                            "death_rate": _r(y[sel].mean()),
                            "predicted": _r(p[sel].mean()),
                        }
                    )
            entry["categories"] = cats
        features.append(entry)
    features.sort(key=lambda f: (-f["importance"], f["feature"]))
    return {
        "rows": len(X),
        "roc_auc": _r(auc(model, X, y)),
        "repeats": repeats,
        "features": features,
    }


def _direction(f: Mapping[str, Any]) -> str:
    """The direction of one input's effect, in words."""
    if f["kind"] == "numeric":
        shift = 100 * f["model_shift"]
        moves = (
            f"{'raises' if shift > 0 else 'lowers'} the predicted risk by {abs(shift):.1f} points"
            if round(abs(shift), 1)
            else "leaves the predicted risk as it is (less than 0.05 points)"
        )
        text = f"raising it by one SD ({f['sd']:.3g}) {moves}"
        if f.get("died_minus_survived") is not None:
            higher = "higher" if f["died_minus_survived"] > 0 else "lower"
            text += (
                f"; the seedlings that died had a {higher} mean ({f['died_mean']:.3g} against "
                f"{f['survived_mean']:.3g})"
            )
        return text
    cats = sorted(f["categories"], key=lambda c: -c["death_rate"])
    hi, lo = cats[0], cats[-1]
    return (
        f"died most with {hi['category']} ({pct(hi['death_rate'])}), least with "
        f"{lo['category']} ({pct(lo['death_rate'])})"
    )


def importance_section(effects: Mapping[str, Any]) -> Section:
    feats = effects["features"]
    top = feats[:3]
    sentence = (
        f"On the {effects['rows']:,} held-out seedlings (ROC AUC {effects['roc_auc']:.3f}), "
        "shuffling an input costs the model the most ROC AUC for "
        + _names([f"{f['feature']} ({f['importance']:.3f})" for f in top])
        + f". {top[0]['feature']}: {_direction(top[0])}."
    )
    numeric = [f for f in feats if f["kind"] == "numeric"]
    if numeric and numeric[0] is not top[0]:
        sentence += f" {numeric[0]['feature']}: {_direction(numeric[0])}."
    table = {
        "columns": ["input", "ROC AUC lost (mean ± SD)", "direction of the effect"],
        "rows": [
            [f["feature"], f"{f['importance']:.3f} ± {f['importance_std']:.3f}", _direction(f)]
            for f in feats
        ],
    }
    note = (
        "Importance: the drop in held-out ROC AUC when one input is shuffled across the "
        f"test rows ({effects['repeats']} shuffles, fixed seed; EMF's shuffle also moves its "
        "empty cells, so its importance includes telling the two kinds of species apart). "
        "Direction, numeric inputs: the mean change in the model's predicted probability "
        "of death (in percentage points) when the input is raised by one standard "
        "deviation of the test rows, the other inputs held, and the sign of the difference "
        "between the means of the seedlings that died and those that survived. "
        "Categorical inputs: the observed death rate of each category on the test rows. "
        "The two numeric directions can disagree: the model's holds the other inputs "
        "(the species first) fixed, the difference of means does not."
    )
    return _section(
        "importance",
        "What separates the seedlings that died (the chosen model)",
        sentence,
        dict(effects),
        table,
        note=note,
    )


def _section(
    sid: str,
    title: str,
    sentence: str,
    data: Mapping[str, Any],
    table: Mapping[str, Any],
    note: str = "",
) -> Section:
    out: Section = {
        "id": sid,
        "title": title,
        "sentence": sentence,
        "figure": f"{PREFIX}-{sid}.png",
        "data": dict(data),
        "table": dict(table),
    }
    if note:
        out["note"] = note
    return out


def build_report(
    raw: pd.DataFrame,
    study: pd.DataFrame,
    test: pd.DataFrame,
    model: Any,
    *,
    seed: int,
    light_bins: int = 5,
    repeats: int = 10,
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every section of the report, from the raw file, the model frame of the study
    (features, Event, Plot, Time) and the chosen classifier on the test split."""
    sections = [
        design_counts(study),
        missingness(raw, study),
        *(trait_distribution(study, t) for t in schema.TRAITS),
        death_by_light(study, light_bins),
        *(survival_by(study, col, sid, title) for sid, col, title in KM_GROUPS),
        trait_correlations(study),
        importance_section(permutation_effects(model, test, seed=seed, repeats=repeats)),
    ]
    return {
        "title": TITLE,
        "source": {
            "rows": len(study),
            "test_rows": len(test),
            "seed": seed,
            **(source or {}),
        },
        "sections": sections,
    }


# ---------------------------------------------------------------- dvc plots


def dvc_plots(report: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The series `dvc plots` draws, one file each (names as in dvc.yaml)."""
    by_id = {s["id"]: s for s in report["sections"]}
    out: dict[str, list[dict[str, Any]]] = {}
    light = by_id["light"]["data"]["series"]
    out["death_by_light.json"] = [
        {
            "light": r["light_median"],
            **{name: _rate(light[name], r["bin"]) for name in light},
        }
        for r in light["all"]
    ]
    for sid, _, _ in KM_GROUPS:
        curves = by_id[sid]["data"]["curves"]
        days = sorted({s["day"] for c in curves for s in c["steps"]})
        out[f"{sid.replace('-', '_')}.json"] = [
            {"day": d, **{c["group"]: survival_at(c["steps"], d) for c in curves}} for d in days
        ]
    out["importance.json"] = [
        {"feature": f["feature"], "importance": f["importance"]}
        for f in by_id["importance"]["data"]["features"]
    ]
    return out


def _rate(rows: Sequence[Mapping[str, Any]], b: int) -> float | None:
    return next((r["death_rate"] for r in rows if r["bin"] == b), None)


# ------------------------------------------------------------------- figures


def render_figures(report: Mapping[str, Any]) -> dict[str, bytes]:
    """Every section's figure as PNG bytes, drawn from the report's numbers alone."""
    import matplotlib

    matplotlib.use("Agg")
    draw: dict[str, Callable[[Any, Mapping[str, Any]], None]] = {
        "design": _draw_design,
        "missing": _draw_missing,
        "light": _draw_light,
        "correlations": _draw_correlations,
        "importance": _draw_importance,
    }
    out = {}
    for section in report["sections"]:
        sid = section["id"]
        fn = draw.get(sid) or (_draw_trait if sid.startswith("trait-") else _draw_km)
        out[section["figure"]] = _png(fn, section["data"])
    return out


def _png(fn: Callable[[Any, Mapping[str, Any]], None], data: Mapping[str, Any]) -> bytes:
    import io

    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(7.5, 4.2))
    try:
        fn(fig, data)
        fig.tight_layout()
        buf = io.BytesIO()
        # Fixed metadata keeps the bytes identical between runs.
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)
    return buf.getvalue()


def _heatmap(ax: Any, grid: Any, rows: Sequence[str], cols: Sequence[Any], **kw: Any) -> None:
    values = np.asarray(grid, dtype=float)
    ax.imshow(values, cmap=kw.get("cmap", "Greens"), aspect="auto", **kw.get("range", {}))
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, kw.get("fmt", "{:g}").format(v), ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xticks(range(len(cols)), [str(c) for c in cols], fontsize=7, rotation=kw.get("rot", 0))


def _draw_design(fig: Any, d: Mapping[str, Any]) -> None:
    fig.set_size_inches(11, 3.6)
    a, b = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    _heatmap(a, d["species_soil"], d["species"], d["soils"], rot=35)
    a.set(title="seedlings per species × soil", xlabel="soil inoculum")
    _heatmap(b, d["species_plot"], d["species"], d["plots"])
    b.set(title="seedlings per species × field plot", xlabel="plot")
    b.set_yticks([])


def _draw_missing(fig: Any, d: Mapping[str, Any]) -> None:
    a, b = fig.subplots(1, 2)
    empty = {c: n for c, n in d["empty_cells"].items() if n} or {"(none)": 0}
    bars = a.barh(list(empty), list(empty.values()), color="grey")
    a.bar_label(bars, [f"{n:,}" for n in empty.values()], padding=2, fontsize=8)
    a.margins(x=0.2)
    a.set(title=f"empty cells of the {d['raw_rows']:,} rows", xlabel="empty cells")
    names = [e["species"] for e in d["emf_by_species"]]
    measured = [e["measured"] for e in d["emf_by_species"]]
    empties = [e["empty"] for e in d["emf_by_species"]]
    b.barh(names, measured, color="tab:green", label="EMF measured")
    b.barh(names, empties, left=measured, color="lightgrey", label="EMF empty")
    b.set(title="EMF by species", xlabel="seedlings")
    b.legend(fontsize="small", loc="lower right")


def _draw_trait(fig: Any, d: Mapping[str, Any]) -> None:
    ax = fig.subplots()
    stats, positions, colours = [], [], []
    for i, sp in enumerate(schema.SPECIES):
        for k, outcome in enumerate(("survived", "died")):
            g = next(g for g in d["groups"] if g["species"] == sp and g["outcome"] == outcome)
            if not g["n"]:
                continue
            stats.append(
                {
                    "med": g["median"],
                    "q1": g["q1"],
                    "q3": g["q3"],
                    "whislo": g["low"],
                    "whishi": g["high"],
                    "mean": g["mean"],
                    "fliers": [],
                }
            )
            positions.append(3 * i + k)
            colours.append("tab:blue" if outcome == "survived" else "tab:red")
    boxes = ax.bxp(stats, positions=positions, showmeans=True, patch_artist=True, widths=0.7)
    for patch, colour in zip(boxes["boxes"], colours, strict=True):
        patch.set(facecolor=colour, alpha=0.45)
    ax.set_xticks([3 * i + 0.5 for i in range(len(schema.SPECIES))], schema.SPECIES)
    unit = f" ({d['unit']})" if d["unit"] else ""
    ax.set(ylabel=f"{d['trait']}{unit}", title=f"{d['trait']}: survived (blue) and died (red)")


def _draw_light(fig: Any, d: Mapping[str, Any]) -> None:
    ax = fig.subplots()
    for name, rows in d["series"].items():
        style = {"c": "k", "lw": 2.5} if name == "all" else {"lw": 1.2}
        ax.plot(
            [r["light_median"] for r in rows],
            [r["death_rate"] for r in rows],
            marker="o",
            label=name,
            **style,
        )
    ax.set(
        xlabel="Light_ISF (median of each light group)",
        ylabel="share that died",
        ylim=(0, 1),
        title="death rate by light group",
    )
    # Beside the axes: inside, it would hide a point wherever it went.
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))


def _draw_km(fig: Any, d: Mapping[str, Any]) -> None:
    ax = fig.subplots()
    for c in d["curves"]:
        days = [s["day"] for s in c["steps"]]
        ax.step(
            days,
            [s["survival"] for s in c["steps"]],
            where="post",
            label=f"{c['group']} ({c['rows']:,})",
        )
    test = d["log_rank"]
    ax.set(
        xlabel="days since planting",
        ylabel="share alive (Kaplan-Meier)",
        ylim=(0, 1.02),
        title=f"by {d['column']}: log-rank χ² = {test['chi2']:.1f}, {p_text(test['p_value'])}",
    )
    ax.legend(fontsize="small", loc="lower left")


def _draw_correlations(fig: Any, d: Mapping[str, Any]) -> None:
    ax = fig.subplots()
    _heatmap(
        ax,
        d["matrix"],
        d["columns"],
        d["columns"],
        cmap="RdBu_r",
        range={"vmin": -1, "vmax": 1},
        fmt="{:+.2f}",
    )
    ax.set(title="Spearman correlation (pairwise complete rows)")


def _draw_importance(fig: Any, d: Mapping[str, Any]) -> None:
    ax = fig.subplots()
    feats = list(reversed(d["features"]))
    colours = [
        "grey" if f["kind"] != "numeric" else ("tab:red" if f["model_shift"] > 0 else "tab:blue")
        for f in feats
    ]
    ax.barh(
        [f["feature"] for f in feats],
        [f["importance"] for f in feats],
        xerr=[f["importance_std"] for f in feats],
        color=colours,
    )
    ax.set(
        xlabel="held-out ROC AUC lost when the input is shuffled",
        title="raising the input raises the predicted risk (red) or lowers it (blue)",
    )


# ---------------------------------------------------------------------- page


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def render_html(report: Mapping[str, Any]) -> str:
    """One page, no script: each section's title, sentence, figure and table."""
    parts = []
    for s in report["sections"]:
        table = s["table"]
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table["columns"])
        body = "".join(
            "<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in table["rows"]
        )
        note = f'<p class="note">{html.escape(s["note"])}</p>' if s.get("note") else ""
        parts.append(
            f'<section id="{s["id"]}">\n<h2>{html.escape(s["title"])}</h2>\n'
            f'<figure><img src="{s["figure"]}" alt="{html.escape(s["title"])}">\n'
            f"<figcaption>{html.escape(s['sentence'])}</figcaption></figure>\n{note}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n</section>"
        )
    src = report["source"]
    toc = "".join(
        f'<li><a href="#{s["id"]}">{html.escape(s["title"])}</a></li>' for s in report["sections"]
    )
    intro = (
        f"{src['rows']:,} seedlings of the study (Wood et al. 2023), validated; the model's "
        f"part on the {src['test_rows']:,} held-out test seedlings. Every number on this page "
        "is computed by <code>treesurv explore</code> (the pipeline's <code>explore</code> "
        f'stage); the numbers are also in <a href="{JSON_FILE}">{JSON_FILE}</a>.'
    )
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(report['title'])}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<h1>{html.escape(report['title'])}</h1>\n<p>{intro}</p>\n"
        f"<nav><ol>{toc}</ol></nav>\n" + "\n".join(parts) + "\n</body>\n</html>\n"
    )


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:64rem;margin:1rem auto;padding:0 1rem;"
    "color:#1b1b1b;line-height:1.45}figure{margin:0}img{max-width:100%;height:auto}"
    "figcaption{font-size:1.05rem;margin:.4rem 0 .8rem}table{border-collapse:collapse;"
    "font-size:.85rem;margin-bottom:2rem}th,td{border:1px solid #ccc;padding:.2rem .5rem;"
    "text-align:left}.note{font-size:.85rem;color:#444}"
)


# ---------------------------------------------------------------------- stage


def _write_bytes(data: bytes, path: Path) -> None:
    """Write beside, then rename: a crash leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_report(report: Mapping[str, Any], directory: Path, plots: Path) -> list[str]:
    """The page, its JSON and figures in `directory`; the dvc plot series in `plots`.
    Files of an earlier report that this one no longer has are removed."""
    directory.mkdir(parents=True, exist_ok=True)
    figures = render_figures(report)
    for name, data in figures.items():
        _write_bytes(data, directory / name)
    write_json(report, directory / JSON_FILE)
    _write_bytes(render_html(report).encode(), directory / HTML_FILE)
    series = dvc_plots(report)
    for name, rows in series.items():
        write_json(rows, plots / name)
    keep = {*figures, JSON_FILE, HTML_FILE}
    for old in directory.glob(f"{PREFIX}*"):
        if old.name not in keep:
            old.unlink()
    for old in plots.glob("*.json"):
        if old.name not in series:
            old.unlink()
    return sorted(keep)


def stage_explore(params: Params) -> dict[str, Any]:
    from treesurv.core.files import file_md5
    from treesurv.training.stages import load_pipeline

    paths = params.paths
    raw = read_table(paths.raw)
    study = model_frame(pd.read_parquet(paths.validated))
    test = pd.read_parquet(paths.test)
    model = load_pipeline(paths.model)
    report = build_report(
        raw,
        study,
        test,
        model,
        seed=params.seed,
        light_bins=params.explore.light_bins,
        repeats=params.explore.importance_repeats,
        source={"data_md5": file_md5(paths.raw)},
    )
    write_report(report, paths.explore, paths.explore_plots)
    return report
