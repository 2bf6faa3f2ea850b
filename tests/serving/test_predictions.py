"""POST /v1/predictions and the original POST /v1/predic, on the study's real rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from fastapi.testclient import TestClient

from tests.helpers import instances
from treesurv.core import schema
from treesurv.inference.bundle import load_verified


def test_batch_in_input_order_matches_the_compiled_model(
    client: TestClient, bundle_v1: Path, study: pd.DataFrame
) -> None:
    bundle, compiled = load_verified(bundle_v1)
    rows = study.sample(1000, random_state=3)  # the largest batch allowed by default
    r = client.post("/v1/predictions", json={"instances": instances(rows)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "1.0.0"
    got = np.array([p["death_probability"] for p in body["predictions"]])
    expected = compiled.proba_columns(rows)
    np.testing.assert_allclose(got, expected, atol=1e-12, rtol=0)
    for p in body["predictions"]:
        assert p["survival_probability"] == 1.0 - p["death_probability"]
        assert p["predicted_event"] == int(p["death_probability"] >= bundle.threshold)


def test_single_instance_equals_its_batch_answer(client: TestClient, study: pd.DataFrame) -> None:
    rows = instances(study.head(40))
    batch = client.post("/v1/predictions", json={"instances": rows}).json()["predictions"]
    for row, expected in zip(rows, batch, strict=True):
        one = client.post("/v1/predictions", json={"instances": [row]}).json()["predictions"]
        assert abs(one[0]["death_probability"] - expected["death_probability"]) < 1e-12


def test_emf_may_be_null_or_omitted_for_amf_species(client: TestClient) -> None:
    amf = {**schema.EXAMPLE, "Species": "Acer saccharum", "Conspecific": "Heterospecific"}
    amf["EMF"] = None
    with_null = client.post("/v1/predictions", json={"instances": [amf]})
    omitted = {k: v for k, v in amf.items() if k != "EMF"}
    without = client.post("/v1/predictions", json={"instances": [omitted]})
    assert with_null.status_code == without.status_code == 200
    assert with_null.json() == without.json()


def test_compat_endpoint_on_real_rows(
    client: TestClient, bundle_v1: Path, study: pd.DataFrame
) -> None:
    bundle, compiled = load_verified(bundle_v1)
    rows = study.sample(150, random_state=11)
    expected = compiled.proba_columns(rows) >= bundle.threshold
    answers = []
    for row in instances(rows):
        r = client.post("/v1/predic", json=row)
        assert r.status_code == 200, r.text
        assert set(r.json()) == {"Event"}
        answers.append(r.json()["Event"])
    assert answers == [1.0 if e else 0.0 for e in expected]
    assert {1.0, 0.0} == set(answers)  # both outcomes occur on these rows


def test_compat_endpoint_validates_like_the_new_one(client: TestClient) -> None:
    r = client.post("/v1/predic", json={**schema.EXAMPLE, "Soil": "Oak"})
    assert r.status_code == 422
    detail = r.json()["detail"][0]
    assert detail["field"] == "Soil"
    assert detail["value"] == "Oak"
    assert "'Sterile'" in detail["allowed"]
