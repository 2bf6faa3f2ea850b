# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Model comparison
#
# How the candidates of the training search compare, why the pipeline chose the
# model it serves, and how that model does on the seedlings it never saw.
#
# This notebook reads what `dvc repro` wrote (the training reports, the out-of-fold
# predictions, the held-out test split and the fitted pipelines) and recomputes the
# figures with the package's own functions. Run it from the repository's root after
# `make pipeline`; `make test` executes it on the real data.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from treesurv.core import schema
from treesurv.core.config import Params
from treesurv.training import evaluation as ev
from treesurv.training.stages import load_pipeline

# The repository's root (where params.yaml is): the working directory or above it.
ROOT = next(d for d in (Path.cwd(), *Path.cwd().parents) if (d / "params.yaml").is_file())
os.chdir(ROOT)
params = Params.load()
paths = params.paths
threshold, bins = params.evaluate.threshold, params.evaluate.calibration_bins
report = json.loads(paths.train_report.read_text())
metrics = json.loads(paths.metrics.read_text())

# %% [markdown]
# ## The search
#
# Each candidate family was tried with several configurations, each scored by
# stratified cross-validation on the training split. The table keeps each family's
# best configuration by the selection metric.

# %%
select_by = params.train.select_by
higher_is_better = select_by == "roc_auc"
search = pd.DataFrame(
    [
        {"candidate": r["candidate"], **r["metrics"], "params": json.dumps(r["params"])}
        for r in report["search"]
    ]
)
best = (
    search.sort_values(select_by, ascending=not higher_is_better)
    .groupby("candidate", sort=False)
    .head(1)
    .reset_index(drop=True)
)
best[["candidate", "roc_auc", "brier", "log_loss", "ece", "roc_auc_fold_std"]].round(4)

# %% [markdown]
# The chosen candidate is the best by the selection metric, and it is the one the
# training report names.

# %%
chosen = report["chosen"]["candidate"]
assert best.loc[0, "candidate"] == chosen, (best.loc[0, "candidate"], chosen)
print(f"selected by {select_by}: {chosen}, cross-validated ROC AUC {best['roc_auc'].iloc[0]:.3f}")

# %% [markdown]
# ## Fold to fold
#
# A difference between candidates means something only if it is larger than the
# spread across folds. Each box is one configuration's ROC AUC over the folds.

# %%
folds = [(r["candidate"], r["fold_roc_auc"]) for r in report["search"] if r.get("fold_roc_auc")]
labels = sorted({c for c, _ in folds})
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.boxplot([[a for c, f in folds if c == name for a in f] for name in labels], tick_labels=labels)
ax.set_ylabel("ROC AUC per fold")
ax.set_title("Cross-validated ROC AUC of every configuration, by candidate")
plt.show()

# %% [markdown]
# ## Random folds against folds by field plot
#
# Folds grouped by field plot score each seedling with a model that never saw its
# plot: the figure to expect at a new site. The gap to random folds is what the
# model learns about the plots themselves.

# %%
variants = {"full": report, "planning": json.loads(paths.planning_train_report.read_text())}
pd.DataFrame(
    {
        f"{variant} ({split.replace('_', ' ')})": r[split]
        for variant, r in variants.items()
        for split in ("cv", "cv_group")
    }
).T[["roc_auc", "brier", "log_loss", "ece"]].round(4)

# %% [markdown]
# ## The held-out test split
#
# The chosen pipeline scores the test split again here. The figures must equal
# those in `metrics.json`, which the `evaluate` stage wrote: the pipeline is
# reproducible from its outputs.

# %%
test = pd.read_parquet(paths.test)
y = test[schema.TARGET].to_numpy(dtype=int)
p = load_pipeline(paths.model).predict_proba(test[list(schema.FEATURE_NAMES)])[:, 1]
recomputed = ev.rounded(ev.classification_metrics(y, p, threshold, bins))
for name, value in recomputed.items():
    assert value == metrics["test"][name], (name, value, metrics["test"][name])
pd.Series(recomputed, name="test split", dtype=object)

# %% [markdown]
# ## Calibration
#
# A predicted 30% should mean that about 30% of such seedlings died. Each point is
# a bin of predictions: out-of-fold on the training split, and on the test split.

# %%
oof = pd.read_parquet(paths.oof)
points = pd.DataFrame(
    ev.calibration_points(y, p, bins, "test")
    + ev.calibration_points(oof["y"].to_numpy(dtype=int), oof["p_cv"].to_numpy(), bins, "cv")
)
fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
for split_name, group in points.groupby("split"):
    ax.plot(group["predicted"], group["observed"], marker="o", label=str(split_name))
ax.set_xlabel("predicted probability of death")
ax.set_ylabel("observed share that died")
ax.legend()
plt.show()
print(f"expected calibration error on the test split: {recomputed['ece']:.3f}")

# %% [markdown]
# ## Full model against planning model
#
# The planning model sees only what is known before planting (species, light,
# soil and the design). The difference is what the root and tissue measurements add.

# %%
planning = load_pipeline(paths.planning_model)
p_planning = planning.predict_proba(test[list(schema.DESIGN)])[:, 1]
auc = {
    "full": ev.classification_metrics(y, p, threshold, bins)["roc_auc"],
    "planning": ev.classification_metrics(y, p_planning, threshold, bins)["roc_auc"],
}
assert auc["full"] > auc["planning"], auc
print(
    f"test ROC AUC: full {auc['full']:.3f}, planning {auc['planning']:.3f} "
    f"(the measurements add {auc['full'] - auc['planning']:.3f})"
)
