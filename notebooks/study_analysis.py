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
# # The seedling study
#
# How species, soil, sterilisation and light relate to which seedlings died and when.
# The `explore` stage writes the same analysis as a report (`reports/explore/`,
# served at `/explore`); this notebook computes it again with the same functions
# (`treesurv.training.exploration`), checks that it finds what the stage wrote, and
# goes further where the report stops: other groupings, other cuts.
#
# Run it from the repository's root after `make pipeline`; `make test` executes it on
# the real data.

# %%
import json
import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from treesurv.core import schema
from treesurv.core.config import Params
from treesurv.core.files import read_table
from treesurv.core.split import model_frame
from treesurv.inference.bundle import EXPLORE_JSON
from treesurv.training import exploration as ex

# The repository's root (where params.yaml is): the working directory or above it.
ROOT = next(d for d in (Path.cwd(), *Path.cwd().parents) if (d / "params.yaml").is_file())
os.chdir(ROOT)
params = Params.load()
paths = params.paths
raw = read_table(paths.raw)
study = model_frame(pd.read_parquet(paths.validated))
written = json.loads((paths.explore / EXPLORE_JSON).read_text())
stage = {s["id"]: s for s in written["sections"]}


def show(section: dict[str, Any]) -> pd.DataFrame:
    """A section's sentence, and its table as a frame."""
    display(Markdown(f"**{section['title']}.** {section['sentence']}"))
    return pd.DataFrame(section["table"]["rows"], columns=section["table"]["columns"])


def same_as_the_stage(section: dict[str, Any]) -> None:
    """What this notebook computed equals what the explore stage wrote."""
    assert json.loads(json.dumps(section)) == stage[section["id"]], section["id"]


# %% [markdown]
# ## The design
#
# Four species grown in soil from under seven sources (one of them sterilised),
# spread over field plots. Each species × soil cell should hold about the same
# number of seedlings.

# %%
design = ex.design_counts(study)
same_as_the_stage(design)
show(design)

# %% [markdown]
# ## Empty cells and the EMF rule
#
# EMF (ectomycorrhizal colonisation) is measured only on the species that form
# ectomycorrhizae; for the others it is empty by design, which the schema's rule
# states. An empty EMF therefore names the kind of species, not a lost measurement.

# %%
missing = ex.missingness(raw, study)
same_as_the_stage(missing)
show(missing)

# %% [markdown]
# ## The traits, by species and by outcome
#
# Medians of each root and tissue measurement for the seedlings that died and those
# that survived, within each species. Between species the traits differ far more
# than within one, so a comparison that pools the species mostly compares species.

# %%
traits = {t: ex.trait_distribution(study, t) for t in schema.TRAITS}
for section in traits.values():
    same_as_the_stage(section)
    display(Markdown(f"- {section['sentence']}"))

fig, axes = plt.subplots(1, len(schema.TRAITS), figsize=(15, 3.2))
for ax, trait in zip(axes, schema.TRAITS, strict=True):
    data = study.dropna(subset=[trait])
    groups = [
        data.loc[(data["Species"] == sp) & (data[schema.TARGET] == e), trait]
        for sp in schema.SPECIES
        for e in (0, 1)
    ]
    ax.boxplot(groups, showfliers=False)
    ax.set_title(trait)
    ax.set_xticks(range(1, 2 * len(schema.SPECIES) + 1))
    ax.set_xticklabels(
        [f"{sp.split()[1][:4]} {o}" for sp in schema.SPECIES for o in ("S", "D")], rotation=90
    )
fig.suptitle("Each trait by species, S = survived, D = died")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Light
#
# Death rate in equal-sized groups of light (the share of full sun reaching the
# seedling), overall and per species.

# %%
light = ex.death_by_light(study, params.explore.light_bins)
same_as_the_stage(light)
table = show(light)
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, rows in light["data"]["series"].items():
    ax.plot(
        [r["light_median"] for r in rows],
        [r["death_rate"] for r in rows],
        marker="o",
        label=name,
        linewidth=3 if name == "all" else 1,
    )
ax.set_xlabel("Light_ISF (median of the group)")
ax.set_ylabel("share that died")
ax.legend(fontsize="small")
plt.show()
display(table)

# %% [markdown]
# ## Survival over time
#
# Kaplan-Meier curves by species, by soil and by sterilisation, with the log-rank
# test that the curves of a grouping are the same. A harvested seedling counts as
# alive up to its harvest (censored).

# %%
fig, axes = plt.subplots(1, len(ex.KM_GROUPS), figsize=(15, 3.8), sharey=True)
for ax, (sid, column, title) in zip(axes, ex.KM_GROUPS, strict=True):
    section = ex.survival_by(study, column, sid, title)
    same_as_the_stage(section)
    display(Markdown(f"- **{title}.** {section['sentence']}"))
    for curve in section["data"]["curves"]:
        steps = curve["steps"]
        ax.step([s["day"] for s in steps], [s["survival"] for s in steps], where="post")
    ax.set_title(title)
    ax.set_xlabel("days since planting")
    ax.legend([c["group"] for c in section["data"]["curves"]], fontsize="x-small")
axes[0].set_ylabel("share alive")
plt.show()

# %% [markdown]
# The same functions take any grouping. Whether the soil came from under the same
# species (conspecific) is a design variable the report does not draw:

# %%
conspecific = ex.survival_by(study, "Conspecific", "km-conspecific", "Survival by soil origin")
show(conspecific)

# %% [markdown]
# And within one species, where the species' own large effect is held fixed:

# %%
for species in schema.SPECIES:
    one = study[study["Species"] == species]
    section = ex.survival_by(one, "Sterile", "km-sterile", f"{species}: sterile or not")
    test = section["data"]["log_rank"]
    print(f"{species:<16} sterile or live soil: chi2 {test['chi2']:7.2f}, p {test['p_value']:.3g}")

# %% [markdown]
# ## Correlations between the traits

# %%
correlations = ex.trait_correlations(study)
same_as_the_stage(correlations)
show(correlations)

# %% [markdown]
# ## What the model relies on
#
# Permutation importance of the chosen model on the held-out test split, as the
# stage computed it (it refits nothing, but scores the test split a few hundred
# times, so it is read here rather than recomputed).

# %%
importance = stage["importance"]
frame = show(importance)
features = importance["data"]["features"]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.barh(
    [f["feature"] for f in features][::-1],
    [f["importance"] for f in features][::-1],
    xerr=[f["importance_std"] for f in features][::-1],
)
ax.set_xlabel("held-out ROC AUC lost when shuffled")
plt.show()
display(frame)
