"""Survival curves, planning routing, death by a horizon and what-if comparisons,
against a real four-model bundle; answers are checked against the compiled models."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.helpers import API_KEY, instances, place
from treesurv.core import schema
from treesurv.inference.bundle import read_bundle
from treesurv.inference.predictor import FastPredictor, SurvivalPredictor
from treesurv.serving.model_choice import MAX_HORIZONS
from treesurv.serving.schemas import DESIGN_EXAMPLE

ACER = {**DESIGN_EXAMPLE, "Species": "Acer saccharum"}


@pytest.fixture(scope="module")
def models(bundle_four: Path) -> dict[str, Any]:
    b = read_bundle(bundle_four)
    return {
        "max_days": b.survival("full").max_days,
        "full": FastPredictor(b.classifier("full")),
        "planning": FastPredictor(b.classifier("planning")),
        "surv_full": SurvivalPredictor(b.survival("full")),
        "surv_planning": SurvivalPredictor(b.survival("planning")),
    }


@pytest.fixture
def four(make_client: Callable[..., Any], bundle_four: Path) -> TestClient:
    return make_client(bundle_four)


def post(client: TestClient, path: str, body: Any, status: int = 200) -> Any:
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    return r.json()


def fields(detail: list[dict[str, Any]]) -> list[str]:
    return [d["field"] for d in detail]


def test_survival_curves_in_input_order(
    four: TestClient, models: dict[str, Any], study: pd.DataFrame
) -> None:
    rows = instances(study.sample(25, random_state=3))
    days = [0, 10, 30.5, 60, 90, models["max_days"]]
    body = post(four, "/v1/survival", {"instances": rows, "horizons": days})
    assert body["model"] == "full" and body["model_version"] == "3.0.0"
    expected = models["surv_full"].survival_at(rows, days)
    medians = models["surv_full"].median_survival_days(rows)
    for i, pred in enumerate(body["predictions"]):
        assert [p["day"] for p in pred["survival"]] == days
        got = [p["survival_probability"] for p in pred["survival"]]
        np.testing.assert_allclose(got, expected[i], atol=1e-12)
        assert got[0] == 1.0 and all(a >= b for a, b in itertools.pairwise(got))
        m = medians[i]
        assert pred["median_survival_days"] == (None if np.isnan(m) else m)
    # A different seedling order gives the same answers, reordered.
    again = post(four, "/v1/survival", {"instances": rows[::-1], "horizons": days})
    assert again["predictions"] == body["predictions"][::-1]


def test_default_days_stay_within_the_follow_up(four: TestClient, models: dict[str, Any]) -> None:
    body = post(four, "/v1/survival", {"instances": [schema.EXAMPLE]})
    days = [p["day"] for p in body["predictions"][0]["survival"]]
    assert len(days) >= 5 and days == sorted(days) and days[-1] == models["max_days"]


def test_planning_model_answers_when_all_traits_are_omitted(
    four: TestClient, models: dict[str, Any], study: pd.DataFrame
) -> None:
    rows = [{k: r[k] for k in schema.DESIGN} for r in instances(study.head(12))]
    body = post(four, "/v1/predictions", {"instances": rows})
    assert body["model"] == "planning"
    got = [p["death_probability"] for p in body["predictions"]]
    np.testing.assert_allclose(got, models["planning"].predict_rows(rows), atol=1e-12)
    assert not np.allclose(got, models["full"].predict_rows(instances(study.head(12))))
    full = post(four, "/v1/predictions", {"instances": [schema.EXAMPLE]})
    assert full["model"] == "full"
    assert full["predictions"][0]["death_probability"] == pytest.approx(
        models["full"].predict_one(schema.EXAMPLE), abs=1e-12
    )
    surv = post(four, "/v1/survival", {"instances": rows[:2], "horizons": [40]})
    assert surv["model"] == "planning"
    expected = models["surv_planning"].survival_at(rows[:2], [40])[:, 0]
    got_s = [p["survival"][0]["survival_probability"] for p in surv["predictions"]]
    np.testing.assert_allclose(got_s, expected, atol=1e-12)


def test_horizon_days_gives_death_by_that_day(four: TestClient, models: dict[str, Any]) -> None:
    plain = post(four, "/v1/predictions", {"instances": [schema.EXAMPLE]})
    assert "horizon_days" not in plain  # unchanged without it
    for inst, kind in ((schema.EXAMPLE, "full"), (DESIGN_EXAMPLE, "planning")):
        body = post(four, "/v1/predictions", {"instances": [inst], "horizon_days": 45})
        assert body["model"] == kind and body["horizon_days"] == 45
        p = body["predictions"][0]
        s = models[f"surv_{kind}"].survival_at([inst], [45])[0, 0]
        assert p["death_probability"] == pytest.approx(1 - s, abs=1e-12)
        assert p["survival_probability"] == pytest.approx(s, abs=1e-12)
    late = post(four, "/v1/predictions", {"instances": [schema.EXAMPLE], "horizon_days": 100})
    early = post(four, "/v1/predictions", {"instances": [schema.EXAMPLE], "horizon_days": 20})
    assert (
        late["predictions"][0]["death_probability"] >= early["predictions"][0]["death_probability"]
    )


def test_partial_traits_are_refused_naming_the_missing_ones(four: TestClient) -> None:
    detail = post(four, "/v1/predictions", {"instances": [{**ACER, "AMF": 20.0}]}, 422)["detail"]
    assert fields(detail) == [f"instances[0].{t}" for t in ("Phenolics", "Lignin", "NSC")]
    assert all("planning model" in d["msg"] for d in detail)
    oak = {**DESIGN_EXAMPLE, "NSC": 10.0}
    detail = post(four, "/v1/survival", {"instances": [oak]}, 422)["detail"]
    assert fields(detail) == [f"instances[0].{t}" for t in ("AMF", "EMF", "Phenolics", "Lignin")]
    # Explicit nulls are not omissions.
    detail = post(four, "/v1/predictions", {"instances": [{**ACER, "AMF": None}]}, 422)["detail"]
    assert fields(detail) == ["instances[0].AMF"] and "not a number" in detail[0]["msg"]


def test_a_batch_is_answered_by_one_model(four: TestClient) -> None:
    body = {"instances": [schema.EXAMPLE, DESIGN_EXAMPLE, schema.EXAMPLE]}
    [d] = post(four, "/v1/predictions", body, 422)["detail"]
    assert d["field"] == "instances[1]" and d["type"] == "mixed_models"
    assert "separate requests" in d["allowed"]


@pytest.mark.parametrize(
    ("horizons", "field", "words"),
    [
        ([-1], "horizons[0]", "negative"),
        ([10, 500], "horizons[1]", "beyond the study's follow-up"),
        ([30, 20, 30], "horizons[2]", "given twice"),
        ([30.0, 30], "horizons[1]", "given twice"),
        (["60"], "horizons[0]", "not allowed"),
        ([], "horizons", "at least one day"),
        (list(range(MAX_HORIZONS + 1)), "horizons", f"at most {MAX_HORIZONS}"),
    ],
)
def test_invalid_horizons(four: TestClient, horizons: list[Any], field: str, words: str) -> None:
    detail = post(four, "/v1/survival", {"instances": [schema.EXAMPLE], "horizons": horizons}, 422)
    item = detail["detail"][0]
    assert item["field"] == field and words in item["msg"]
    assert item["allowed"]


def test_horizons_in_any_order_are_answered_by_day(four: TestClient) -> None:
    body = {"instances": [schema.EXAMPLE], "horizons": [90, 15, 60]}
    [curve] = post(four, "/v1/survival", body)["predictions"]
    days = [p["day"] for p in curve["survival"]]
    assert days == [15.0, 60.0, 90.0]
    sorted_body = {**body, "horizons": [15, 60, 90]}
    assert post(four, "/v1/survival", sorted_body)["predictions"] == [curve]


def test_the_openapi_document_states_the_bundle_limits(
    four: TestClient, models: dict[str, Any]
) -> None:
    spec = four.get("/openapi.json").json()["components"]["schemas"]
    horizons = spec["SurvivalRequest"]["properties"]["horizons"]["anyOf"][0]
    assert horizons["items"] == {"type": "number", "minimum": 0, "maximum": models["max_days"]}
    assert horizons["uniqueItems"] is True and horizons["maxItems"] == MAX_HORIZONS
    varied = {b["properties"]["vary"]["const"] for b in spec["CompareRequest"]["anyOf"]}
    assert varied == set(schema.FEATURE_NAMES) - set(schema.IMPLIED)


def test_the_follow_up_limit_comes_from_the_bundle(
    four: TestClient, models: dict[str, Any]
) -> None:
    top = models["max_days"]
    assert post(four, "/v1/survival", {"instances": [schema.EXAMPLE], "horizons": [top]})
    [d] = post(
        four, "/v1/predictions", {"instances": [schema.EXAMPLE], "horizon_days": top + 0.5}, 422
    )["detail"]
    assert d["field"] == "horizon_days" and f"from 0 to {top:g}" in d["allowed"]


def test_compare_soils_with_the_planning_model(four: TestClient, models: dict[str, Any]) -> None:
    body = post(four, "/v1/compare", {"instance": DESIGN_EXAMPLE, "vary": "Soil"})
    assert body["model"] == "planning" and body["vary"] == "Soil"
    assert [v["value"] for v in body["variants"]] == list(schema.SOIL_SOURCES)
    rows = []
    for soil in schema.SOIL_SOURCES:  # Sterile and Conspecific follow the soil
        rows.append(
            {**DESIGN_EXAMPLE, "Soil": soil, **schema.implied_values("Quercus rubra", soil)}
        )
    expected = models["planning"].predict_rows(rows)
    got = [v["death_probability"] for v in body["variants"]]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    best = int(np.argmin(expected))
    assert body["best"] == schema.SOIL_SOURCES[best]
    assert [v["best"] for v in body["variants"]] == [i == best for i in range(len(rows))]


def test_compare_light_over_a_grid_and_values(four: TestClient, models: dict[str, Any]) -> None:
    body = post(
        four,
        "/v1/compare",
        {"instance": DESIGN_EXAMPLE, "vary": "Light_ISF", "steps": 5, "horizon_days": 60},
    )
    values = [v["value"] for v in body["variants"]]
    assert len(values) == 5 and values == sorted(values)
    assert 0 <= values[0] < values[-1] <= 1 and body["horizon_days"] == 60
    rows = [{**DESIGN_EXAMPLE, "Light_ISF": v} for v in values]
    expected = 1 - models["surv_planning"].survival_at(rows, [60])[:, 0]
    np.testing.assert_allclose([v["death_probability"] for v in body["variants"]], expected)
    chosen = post(
        four,
        "/v1/compare",
        {"instance": schema.EXAMPLE, "vary": "Light_ISF", "values": [0.05, 0.1]},
    )
    assert chosen["model"] == "full" and [v["value"] for v in chosen["variants"]] == [0.05, 0.1]


def test_compare_reports_variants_that_break_a_rule(four: TestClient) -> None:
    # With traits given, an oak's EMF makes the AMF species impossible variants.
    body = post(four, "/v1/compare", {"instance": schema.EXAMPLE, "vary": "Species"})
    by = {v["value"]: v for v in body["variants"]}
    assert by["Acer saccharum"]["death_probability"] is None
    assert "EMF" in by["Acer saccharum"]["error"]
    assert by["Quercus alba"]["death_probability"] is not None
    assert body["best"] in ("Quercus alba", "Quercus rubra")


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"vary": "AMF"}, "vary", "one of Species, Light_ISF, Soil"),
        ({"vary": "Sterile"}, "vary", "cannot be varied"),
        ({"vary": "Soil", "values": ["Oak"]}, "values[0]", "not a possible Soil"),
        ({"vary": "Light_ISF", "values": [2.0]}, "values[0]", "from 0 to 1"),
        ({"vary": "Light_ISF", "steps": 1}, "steps", "from 2 to"),
        ({"vary": "Soil", "horizon_days": -3}, "horizon_days", "negative"),
        ({"vary": "Soil", "colour": 1}, "colour", "allowed are instance, vary"),
    ],
)
def test_invalid_compare(four: TestClient, changes: dict[str, Any], field: str, words: str) -> None:
    detail = post(four, "/v1/compare", {"instance": DESIGN_EXAMPLE, **changes}, 422)["detail"]
    assert detail[0]["field"] == field and words in detail[0]["msg"] + detail[0]["allowed"]


def test_a_bundle_without_survival_or_planning_models(client: TestClient) -> None:
    r = client.post("/v1/survival", json={"instances": [schema.EXAMPLE]})
    assert r.status_code == 501 and "no full survival model" in r.json()["detail"]
    # Without a planning model the traits stay required, as before.
    detail = post(client, "/v1/predictions", {"instances": [DESIGN_EXAMPLE]}, 422)["detail"]
    assert {d["field"] for d in detail} == {
        f"instances[0].{t}" for t in ("AMF", "Phenolics", "Lignin", "NSC")
    }
    assert post(client, "/v1/predictions", {"instances": [schema.EXAMPLE]})["model"] == "full"


def test_openapi_documents_the_new_routes(four: TestClient) -> None:
    spec = four.get("/openapi.json").json()
    for path in ("/v1/survival", "/v1/compare", "/v1/predictions"):
        content = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert content["examples"]
        name = content["schema"]["$ref"].rsplit("/", 1)[1]
        assert name in spec["components"]["schemas"]
    props = spec["components"]["schemas"]["PredictionRequest"]["properties"]
    assert "horizon_days" in props
    for path in ("/v1/compare", "/v1/survival"):
        examples = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        for example in examples["examples"].values():
            assert four.post(path, json=example["value"]).status_code == 200, example
    plot = spec["components"]["schemas"]["PredictionInstance"]["properties"]["Plot"]
    assert {"type": "integer", "minimum": 1, "maximum": 18} in plot["anyOf"]


def test_page_and_its_form_description(four: TestClient, models: dict[str, Any]) -> None:
    page = four.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/ui/app.js">' in page.text and "http" not in page.text.split("<body>")[0]
    for asset, kind in (("app.js", "javascript"), ("style.css", "css")):
        r = four.get(f"/ui/{asset}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    assert four.get("/ui/secrets.txt").status_code == 404
    form = four.get("/ui/form.json").json()
    assert form["features"] == schema.schema_document()["features"]
    assert form["traits"] == list(schema.TRAITS)
    assert form["implied_values"]["Quercus alba"]["Sterile"] == {
        "Sterile": "Sterile",
        "Conspecific": "Sterilized",
    }
    assert form["model"]["max_days"] == models["max_days"] and form["model"]["planning"]
    assert four.get("/ui/model-card").text.startswith("# Test model 3.0.0")


def test_a_reload_swaps_all_four_models_together(
    make_client: Callable[..., Any], bundle_four: Path, bundle_v1: Path, tmp_path: Path
) -> None:

    model_dir = tmp_path / "served"
    place(bundle_v1, model_dir)
    client = make_client(model_dir)
    assert client.post("/v1/survival", json={"instances": [schema.EXAMPLE]}).status_code == 501
    place(bundle_four, model_dir)
    r = client.post("/v1/admin/reload", headers={"X-API-Key": API_KEY})
    assert r.status_code == 200 and r.json()["model_version"] == "3.0.0"
    served = client.app.state.model.current
    assert set(served.survival) == {"full", "planning"} and served.classifier("planning")
    body = post(client, "/v1/survival", {"instances": [DESIGN_EXAMPLE], "horizons": [30]})
    assert body["model"] == "planning" and body["model_version"] == "3.0.0"
    # Back to the classifier-only bundle: its lack of the other models comes with it.
    place(bundle_v1, model_dir)
    assert client.post("/v1/admin/reload", headers={"X-API-Key": API_KEY}).status_code == 200
    assert client.post("/v1/survival", json={"instances": [schema.EXAMPLE]}).status_code == 501
    post(client, "/v1/predictions", {"instances": [DESIGN_EXAMPLE]}, 422)


def test_predictions_are_counted_by_model_and_kept_out_of_the_histogram(
    four: TestClient,
) -> None:
    post(four, "/v1/predictions", {"instances": [schema.EXAMPLE] * 2})
    post(four, "/v1/predictions", {"instances": [DESIGN_EXAMPLE] * 3})
    post(four, "/v1/predictions", {"instances": [schema.EXAMPLE], "horizon_days": 0})
    post(four, "/v1/predictions", {"instances": [DESIGN_EXAMPLE], "horizon_days": 60})
    post(four, "/v1/survival", {"instances": [schema.EXAMPLE] * 4})
    post(four, "/v1/compare", {"instance": DESIGN_EXAMPLE, "vary": "Soil"})
    text = four.get("/metrics").text

    def sample(name: str, **labels: str) -> float:
        for line in text.splitlines():
            if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    counted = {
        e: sample("treesurv_predictions_total", endpoint=e)
        for e in ("v1", "v1_planning", "v1_full_horizon", "v1_planning_horizon")
    }
    # A horizon of day 0 is a horizon: counted with the survival answers.
    assert counted == {"v1": 2, "v1_planning": 3, "v1_full_horizon": 1, "v1_planning_horizon": 1}
    assert sample("treesurv_predictions_total", endpoint="v1_survival_full") == 4
    assert sample("treesurv_predictions_total", endpoint="v1_compare_planning") == len(
        schema.FEATURES_BY_NAME["Soil"].categories
    )
    # Only the full classifier's probabilities are in the histogram.
    assert sample("treesurv_predicted_death_probability_count") == 2


def test_the_plot_is_an_optional_input_of_the_survival_models(
    four: TestClient, models: dict[str, Any], study: pd.DataFrame
) -> None:
    base = instances(study.head(1))[0]
    days = [30, 60, 90]
    each = [{**base, "Plot": p} for p in schema.PLOTS]
    body = post(four, "/v1/survival", {"instances": each, "horizons": days})
    got = np.array(
        [[p["survival_probability"] for p in r["survival"]] for r in body["predictions"]]
    )
    np.testing.assert_allclose(got, models["surv_full"].survival_at(each, days), atol=1e-12)
    # The site effect: the same seedling's answer depends on its plot.
    assert len({tuple(r) for r in got.round(12)}) > 1
    # Omitted or null: a typical site, the same answer either way.
    omitted = post(four, "/v1/survival", {"instances": [base], "horizons": days})
    null = post(four, "/v1/survival", {"instances": [{**base, "Plot": None}], "horizons": days})
    assert omitted["predictions"] == null["predictions"]
    # JSON Schema's integer: 4.0 is plot 4.
    four_0 = post(four, "/v1/survival", {"instances": [{**base, "Plot": 4.0}], "horizons": days})
    assert four_0["predictions"] == [body["predictions"][3]]
    typical = [p["survival_probability"] for p in omitted["predictions"][0]["survival"]]
    np.testing.assert_allclose(typical, models["surv_full"].survival_at([base], days)[0])
    # Death by a horizon and the what-if use it too; the classifier ignores it.
    for inst in (base, DESIGN_EXAMPLE):
        at = {**inst, "Plot": 5}
        kind = "full" if "AMF" in inst else "planning"
        h = post(four, "/v1/predictions", {"instances": [at], "horizon_days": 60})
        s = models[f"surv_{kind}"].survival_at([at], [60])[0, 0]
        assert h["predictions"][0]["death_probability"] == pytest.approx(1 - s, abs=1e-12)
        c = post(four, "/v1/compare", {"instance": at, "vary": "Soil", "horizon_days": 60})
        soils = [{**at, **v} for v in ({"Soil": x["value"]} for x in c["variants"])]
        ok = [v["death_probability"] is not None for v in c["variants"]]
        valid = [r for r, good in zip(soils, ok, strict=True) if good]
        assert valid and c["model"] == kind
        plain = post(four, "/v1/predictions", {"instances": [at]})
        no_plot = post(four, "/v1/predictions", {"instances": [inst]})
        assert plain["predictions"] == no_plot["predictions"]


@pytest.mark.parametrize(
    ("plot", "words"),
    [
        (0, "0 is out of range; must be a whole number from 1 to 18"),
        (19, "19 is out of range"),
        (3.5, "3.5 is not a whole number"),
        (-2.0, "-2 is out of range"),
        (1e300, "is out of range"),
        ("3", "'3' is not a whole number"),
        (True, "True is not a whole number"),
    ],
)
def test_invalid_plots_are_refused_naming_the_field(
    four: TestClient, plot: Any, words: str
) -> None:
    for path, body in (
        ("/v1/survival", {"instances": [{**schema.EXAMPLE, "Plot": plot}]}),
        ("/v1/predictions", {"instances": [{**DESIGN_EXAMPLE, "Plot": plot}], "horizon_days": 9}),
        ("/v1/compare", {"instance": {**DESIGN_EXAMPLE, "Plot": plot}, "vary": "Soil"}),
    ):
        detail = post(four, path, body, 422)["detail"]
        assert fields(detail)[0].endswith("Plot"), detail
        assert words in detail[0]["msg"], detail[0]["msg"]
        assert "(or null/omitted for a typical site)" in detail[0]["allowed"]


def test_the_original_route_keeps_its_ten_fields(four: TestClient) -> None:
    detail = post(four, "/v1/predic", {**schema.EXAMPLE, "Plot": 3}, 422)["detail"]
    assert fields(detail) == ["Plot"]
    assert detail[0]["allowed"] == "only the fields " + ", ".join(schema.FEATURE_NAMES)
    detail = post(four, "/v1/predictions", {"instances": [{**schema.EXAMPLE, "Plots": 3}]}, 422)
    assert detail["detail"][0]["allowed"] == "only the fields " + ", ".join(schema.INPUT_NAMES)
