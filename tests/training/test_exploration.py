"""The study report's pure functions on small frames with known answers."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from tests.helpers import EXPLORE_SECTIONS
from treesurv.core import schema
from treesurv.training import exploration as ex


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Model-frame rows: defaults for every column a row does not give."""
    base: dict[str, Any] = {
        "No": 1,
        "Species": "Quercus rubra",
        "Light_ISF": 0.1,
        "Soil": "Prunus serotina",
        "Sterile": "Non-Sterile",
        "Conspecific": "Heterospecific",
        "AMF": 20.0,
        "EMF": 30.0,
        "Phenolics": 3.0,
        "Lignin": 20.0,
        "NSC": 15.0,
        "Event": 0,
        "Plot": 1,
        "Time": 100.0,
    }
    out = pd.DataFrame([{**base, "No": i + 1, **r} for i, r in enumerate(rows)])
    out["Plot"] = out["Plot"].astype("Int64")
    return out


# --------------------------------------------------------------- survival


def test_kaplan_meier_steps_match_a_hand_computation() -> None:
    # Deaths on days 1, 2, 3; censored on days 2 and 4. At risk: 5, 4, 2.
    steps = ex.kaplan_meier_steps(np.array([1, 2, 2, 3, 4.0]), np.array([1, 1, 0, 1, 0]))
    assert [s["day"] for s in steps] == [0, 1, 2, 3, 4]
    expected = [1.0, 4 / 5, 4 / 5 * 3 / 4, 4 / 5 * 3 / 4 * 1 / 2, 4 / 5 * 3 / 4 * 1 / 2]
    assert [s["survival"] for s in steps] == pytest.approx(expected, abs=1e-5)
    assert ex.survival_at(steps, 2.5) == pytest.approx(0.6)
    assert ex.survival_at(steps, 0.5) == 1.0


def test_log_rank_matches_a_hand_computation() -> None:
    # A dies on days 1 and 3, B on days 2 and 4. Observed - expected deaths of A and
    # its variance, summed over the death days (n at risk, nA of them in A):
    #   day 1: n 4, nA 2 -> E 1/2, V 1/4;  day 2: n 3, nA 1 -> E 1/3, V 2/9;
    #   day 3: n 2, nA 1 -> E 1/2, V 1/4;  day 4: n 1, nA 0 -> E 0, V 0.
    # chi2 = (2 - 4/3)^2 / (13/18) = 8/13, one degree of freedom.
    test = ex.log_rank(np.array([1, 3, 2, 4.0]), np.ones(4, int), np.array(list("AABB")))
    assert test["chi2"] == pytest.approx(8 / 13, abs=1e-4)
    assert test["df"] == 1
    assert test["p_value"] == pytest.approx(0.4328, abs=1e-3)  # chi2(1) tail of 8/13


def test_survival_section_names_the_groups_and_the_test() -> None:
    rows = [{"Species": "Acer saccharum", "Time": t, "Event": 1} for t in (10, 20, 30, 40)]
    rows += [{"Species": "Quercus alba", "Time": t, "Event": e} for t, e in ((50, 1), (60, 0))]
    rows += [{"Species": "Quercus alba", "Time": 60, "Event": 0}]
    section = ex.survival_by(frame(rows), "Species", "km-species", "by species")
    curves = {c["group"]: c for c in section["data"]["curves"]}
    assert set(curves) == {"Acer saccharum", "Quercus alba"}
    assert section["data"]["horizon"] == 40  # the shortest group's follow-up
    assert curves["Acer saccharum"]["survival_at_horizon"] == 0.0
    assert curves["Acer saccharum"]["median_day"] == 20
    assert curves["Quercus alba"]["median_day"] is None
    assert "100% of the Quercus alba seedlings were still alive" in section["sentence"]
    assert "0% of the Acer saccharum seedlings" in section["sentence"]
    assert f"χ² = {section['data']['log_rank']['chi2']:.1f} on 1 degree of" in section["sentence"]


# ----------------------------------------------------------------- counts


def test_design_counts() -> None:
    rows = [{"Species": "Acer saccharum", "Soil": "Sterile", "Plot": 1}] * 3
    rows += [{"Species": "Acer saccharum", "Soil": "Acer rubrum", "Plot": 2}]
    rows += [{"Species": "Quercus alba", "Soil": "Sterile", "Plot": 2}] * 2
    section = ex.design_counts(frame(rows))
    d = section["data"]
    assert d["per_species"] == {"Acer saccharum": 4, "Quercus alba": 2}
    assert d["soils"] == ["Acer rubrum", "Sterile"]
    assert d["species_soil"] == [[1, 3], [0, 2]]
    assert d["species_plot"] == [[3, 1], [0, 2]]
    assert d["planted_cells"] == 3 and d["cell_rows"] == [1, 3] and d["plot_rows"] == [3, 3]
    assert {"Species": "Acer saccharum", "Soil": "Sterile", "Plot": 1, "rows": 3} in d[
        "species_soil_plot"
    ]
    assert sum(r["rows"] for r in d["species_soil_plot"]) == 6
    assert section["sentence"].startswith("The study has 6 seedlings of 2 species in 2 field")


def test_missingness_counts_empty_cells_and_emf_rule_breaks() -> None:
    raw = pd.DataFrame({"EMF": [None, None, "3", "4"], "Event": ["1", None, "0", "1"]})
    study = frame(
        [
            {"Species": "Acer saccharum", "EMF": np.nan},
            {"Species": "Acer saccharum", "EMF": 5.0},  # breaks the rule
            {"Species": "Quercus alba", "EMF": 3.0},
            {"Species": "Quercus alba", "EMF": np.nan},  # breaks it too
        ]
    )
    section = ex.missingness(raw, study)
    assert section["data"]["empty_cells"] == {"EMF": 2, "Event": 1}
    assert section["data"]["emf_rule_breaks"] == 2
    assert "EMF (2) and Event (1)" in section["sentence"]
    assert "2 validated rows break" in section["sentence"]


def test_death_rate_by_light_group() -> None:
    # Four light levels, two seedlings each; the darker half died, the brighter lived.
    rows = [
        {"Light_ISF": light, "Event": int(light < 0.1), "Species": sp}
        for light in (0.04, 0.06, 0.12, 0.14)
        for sp in ("Acer saccharum", "Quercus alba")
    ]
    section = ex.death_by_light(frame(rows), bins=2)
    overall = section["data"]["series"]["all"]
    assert [r["death_rate"] for r in overall] == [1.0, 0.0]
    assert [r["rows"] for r in overall] == [4, 4]
    assert "100% of the seedlings in the darkest" in section["sentence"]
    assert "against 0% in the brightest" in section["sentence"]


def test_trait_distribution_by_species_and_outcome() -> None:
    rows = [{"Species": "Acer saccharum", "NSC": v, "Event": 1} for v in (1.0, 2.0, 3.0)]
    rows += [{"Species": "Acer saccharum", "NSC": v, "Event": 0} for v in (10.0, 20.0)]
    section = ex.trait_distribution(frame(rows), "NSC")
    groups = {(g["species"], g["outcome"]): g for g in section["data"]["groups"]}
    assert groups[("Acer saccharum", "died")]["median"] == 2.0
    assert groups[("Acer saccharum", "survived")]["median"] == 15.0
    assert groups[("Quercus alba", "died")]["n"] == 0
    assert "median NSC (% dry mass) of 2 against 15" in section["sentence"]
    assert "(measured on Acer saccharum only)" in section["sentence"]


def test_correlations_find_the_strongest_pair() -> None:
    rng = np.random.default_rng(0)
    n = 50
    rows = [
        {
            "Light_ISF": float(rng.uniform(0.03, 0.17)),
            "AMF": float(rng.uniform(0, 100)),
            "EMF": float(rng.uniform(0, 100)),
            "Phenolics": float(x),
            "Lignin": float(rng.uniform(0, 40)),
            "NSC": float(x**3 + 1),  # a monotone function of Phenolics: rho = 1
        }
        for x in rng.uniform(0, 5, n)
    ]
    section = ex.trait_correlations(frame(rows))
    top = section["data"]["pairs"][0]
    assert (top["a"], top["b"], top["rho"]) == ("Phenolics", "NSC", 1.0)
    assert (
        "between Phenolics and NSC (Spearman ρ = +1.00 over 50 seedlings)" in (section["sentence"])
    )


# ------------------------------------------------------------ the model's part


class RiskFromTraits(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """P(death) rises with NSC and falls with AMF; every other input is ignored."""

    classes_ = np.array([0, 1])

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> RiskFromTraits:
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        z = 0.5 * (X["NSC"].to_numpy(float) - 15) - 0.2 * (X["AMF"].to_numpy(float) - 20)
        p = 1 / (1 + np.exp(-z))
        return np.column_stack([1 - p, p])


@pytest.fixture(scope="module")
def traits_test() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 200
    nsc, amf = rng.normal(15, 3, n), rng.normal(20, 6, n)
    p = RiskFromTraits().predict_proba(pd.DataFrame({"NSC": nsc, "AMF": amf}))[:, 1]
    rows = [
        {"NSC": a, "AMF": b, "Lignin": float(c), "Event": int(e)}
        for a, b, c, e in zip(nsc, amf, rng.normal(20, 4, n), rng.uniform(size=n) < p, strict=True)
    ]
    return frame(rows)


def test_permutation_importance_and_direction(traits_test: pd.DataFrame) -> None:
    effects = ex.permutation_effects(RiskFromTraits(), traits_test, seed=0, repeats=5)
    by = {f["feature"]: f for f in effects["features"]}
    assert {f["feature"] for f in effects["features"][:2]} == {"NSC", "AMF"}
    assert by["NSC"]["importance"] > 0.05 and by["AMF"]["importance"] > 0.05
    assert by["Lignin"]["importance"] == 0 and by["Species"]["importance"] == 0
    # The model's direction: up with NSC, down with AMF, nothing for Lignin.
    assert by["NSC"]["model_shift"] > 0 > by["AMF"]["model_shift"]
    assert by["Lignin"]["model_shift"] == 0
    # The data's direction agrees (the outcomes were drawn from the model).
    assert by["NSC"]["died_minus_survived"] > 0 > by["AMF"]["died_minus_survived"]
    assert by["NSC"]["died_minus_survived"] == pytest.approx(
        by["NSC"]["died_mean"] - by["NSC"]["survived_mean"], abs=1e-3
    )
    section = ex.importance_section(effects)
    text = {row[0]: row[2] for row in section["table"]["rows"]}
    assert "raises the predicted risk" in text["NSC"] and "higher mean" in text["NSC"]
    assert "lowers the predicted risk" in text["AMF"] and "lower mean" in text["AMF"]
    assert "leaves the predicted risk as it is" in text["Lignin"]
    # Same seed, same numbers.
    again = ex.permutation_effects(RiskFromTraits(), traits_test, seed=0, repeats=5)
    assert again == effects


def test_report_is_deterministic_and_its_page_shows_every_sentence(
    model_study: pd.DataFrame, traits_test: pd.DataFrame
) -> None:
    raw = model_study.astype(object).where(model_study.notna(), None)
    report = ex.build_report(raw, model_study, traits_test, RiskFromTraits(), seed=1, repeats=2)
    again = ex.build_report(raw, model_study, traits_test, RiskFromTraits(), seed=1, repeats=2)
    assert json.dumps(report) == json.dumps(again)
    ids = [s["id"] for s in report["sections"]]
    assert ids == EXPLORE_SECTIONS
    page = ex.render_html(report)
    for s in report["sections"]:
        assert re.search(r"\d", s["sentence"]), s["id"]  # every sentence carries numbers
        figure = f'<img src="{s["figure"]}"'
        assert figure in page
        assert f"<figcaption>{html.escape(s['sentence'])}</figcaption>" in page
    assert "<script" not in page
    series = ex.dvc_plots(report)
    assert set(series) == {
        "death_by_light.json",
        "km_species.json",
        "km_soil.json",
        "km_sterile.json",
        "importance.json",
    }
    assert set(series["km_sterile.json"][0]) == {"day", *schema.STERILE}


def test_a_figure_is_a_deterministic_png(model_study: pd.DataFrame) -> None:
    section = ex.survival_by(model_study, "Sterile", "km-sterile", "t")
    one = ex._png(ex._draw_km, section["data"])
    assert one.startswith(b"\x89PNG") and one == ex._png(ex._draw_km, section["data"])
