"""POST /v1/predictions and the original POST /v1/predic, on the study's real rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
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


def test_the_column_path_answers_byte_for_byte_what_the_instance_path_does(
    client: TestClient, study: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of valid full-model instances is checked and scored as columns; the
    answer, the metrics and the prediction log are those of the per-instance path."""
    from treesurv.serving import scoring

    rows = instances(study.sample(500, random_state=8))
    rows[3] = {k: v for k, v in rows[3].items() if not (k == "EMF" and v is None)}  # omitted
    bodies = [{"instances": rows}, {"instances": rows[:2], "horizon_days": None}]
    taken: list[bool] = []
    check = scoring.full_model_batch

    def spy(body: bytes, max_batch: int) -> dict[str, Any] | None:
        columns = check(body, max_batch)
        taken.append(columns is not None)
        return columns

    monkeypatch.setattr(scoring, "full_model_batch", spy)
    fast = [client.post("/v1/predictions", json=b) for b in bodies]
    assert taken == [True, True]
    monkeypatch.setattr(scoring, "full_model_batch", lambda body, n: None)
    slow = [client.post("/v1/predictions", json=b) for b in bodies]
    for a, b in zip(fast, slow, strict=True):
        assert a.status_code == b.status_code == 200
        assert a.content == b.content


@pytest.mark.parametrize(
    "change",
    [
        {"Light_ISF": "0.1"},
        {"Sterile": "Sterile"},
        {"Species": "Quercus velutina"},
        {"extra": 1},
    ],
)
def test_a_batch_with_one_bad_instance_gets_the_field_level_error(
    client: TestClient, study: pd.DataFrame, change: dict[str, Any]
) -> None:
    rows = instances(study.head(50))
    rows[17] = {**rows[17], **change}
    r = client.post("/v1/predictions", json={"instances": rows})
    assert r.status_code == 422
    (item,) = r.json()["detail"]
    assert item["loc"][:3] == ["body", "instances", 17]
