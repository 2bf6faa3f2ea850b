"""The protocols other servers' clients speak, against a real server process: KServe V1
and MLflow's scoring server with payloads written by pandas' own serialisers (sent
with `requests`), and the original API with the bodies its clients sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from tests.helpers import instances, serving
from treesurv.core import schema

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, bundle_four: Path) -> Iterator[str]:
    with serving(bundle_four, tmp_path_factory.mktemp("protocols")) as base:
        yield base


@pytest.fixture(scope="module")
def table(study: pd.DataFrame) -> pd.DataFrame:
    """Forty rows of the ten features, AMF species (EMF missing: NaN) among them."""
    frame = study[list(schema.FEATURE_NAMES)].head(40).reset_index(drop=True)
    assert frame["EMF"].isna().any() and frame["EMF"].notna().any()
    return frame


@pytest.fixture(scope="module")
def expected(server: str, table: pd.DataFrame) -> list[dict[str, Any]]:
    r = requests.post(f"{server}/v1/predictions", json={"instances": instances(table)}, timeout=30)
    assert r.status_code == 200
    return list(r.json()["predictions"])


def _close(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    np.testing.assert_allclose(
        [g["death_probability"] for g in got],
        [w["death_probability"] for w in want],
        atol=1e-9,
        rtol=0,
    )
    assert [g["predicted_event"] for g in got] == [w["predicted_event"] for w in want]


def _json_of(text: str) -> Any:
    return json.loads(text)


def _records(frame: pd.DataFrame) -> Any:
    return json.loads(frame.to_json(orient="records"))


@pytest.mark.parametrize(
    ("layout", "payload"),
    [
        ("dataframe_split", lambda t: {"dataframe_split": _json_of(t.to_json(orient="split"))}),
        (
            "dataframe_records",
            lambda t: {"dataframe_records": _json_of(t.to_json(orient="records"))},
        ),
        ("instances", lambda t: {"instances": _records(t)}),
        ("inputs as records", lambda t: {"inputs": _records(t)}),
        (
            "inputs as columns",
            lambda t: {"inputs": {c: list(v.values()) for c, v in _json_of(t.to_json()).items()}},
        ),
        ("rows in feature order", lambda t: {"instances": _json_of(t.to_json(orient="values"))}),
    ],
)
def test_mlflow_invocations_take_what_pandas_writes(
    server: str, table: pd.DataFrame, expected: list[dict[str, Any]], layout: str, payload: Any
) -> None:
    body = json.dumps(payload(table))
    assert "NaN" not in body  # pandas writes a missing EMF as null
    r = requests.post(
        f"{server}/invocations",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    _close(r.json()["predictions"], expected)


def test_mlflow_invocations_take_csv_with_empty_cells(
    server: str, table: pd.DataFrame, expected: list[dict[str, Any]]
) -> None:
    text = table.to_csv(index=False)
    assert ",," in text  # the AMF rows' EMF is an empty cell
    r = requests.post(
        f"{server}/invocations", data=text, headers={"Content-Type": "text/csv"}, timeout=30
    )
    assert r.status_code == 200, r.text
    _close(r.json()["predictions"], expected)


def test_mlflow_errors_name_the_row_and_field_in_the_clients_layout(
    server: str, table: pd.DataFrame
) -> None:
    bad = table.head(3).copy()
    bad.loc[1, "Soil"] = "Oak"
    split = {"dataframe_split": json.loads(bad.to_json(orient="split"))}
    r = requests.post(f"{server}/invocations", json=split, timeout=30)
    assert r.status_code == 422
    item = r.json()["detail"][0]
    assert item["field"] == "dataframe_split.data[1].Soil" and item["value"] == "Oak"
    assert "Quercus rubra" in item["allowed"]
    r = requests.post(
        f"{server}/invocations",
        data=bad.to_csv(index=False),
        headers={"Content-Type": "text/csv"},
        timeout=30,
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "csv[1].Soil"
    for body, field in (
        ({"dataframe_records": [], "instances": []}, "body"),
        ({"records": []}, "records"),
        ({"instances": [[1, 2]]}, "instances[0]"),
    ):
        r = requests.post(f"{server}/invocations", json=body, timeout=30)
        assert r.status_code == 422, body
        assert r.json()["detail"][0]["field"] == field
    r = requests.post(
        f"{server}/invocations", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"


def test_mlflow_health_and_version(server: str) -> None:
    assert requests.get(f"{server}/ping", timeout=10).status_code == 200
    assert requests.get(f"{server}/health", timeout=10).status_code == 200
    version = requests.get(f"{server}/version", timeout=10)
    assert version.status_code == 200 and version.text.count(".") == 2


def test_kserve_v1_predict_and_readiness(
    server: str, table: pd.DataFrame, expected: list[dict[str, Any]]
) -> None:
    ready = requests.get(f"{server}/v1/models/tree-survival", timeout=10)
    assert ready.status_code == 200 and ready.json() == {"name": "tree-survival", "ready": True}
    assert requests.get(f"{server}/v1/models/another", timeout=10).status_code == 404
    records = json.loads(table.to_json(orient="records"))
    r = requests.post(
        f"{server}/v1/models/tree-survival:predict", json={"instances": records}, timeout=30
    )
    assert r.status_code == 200, r.text
    _close(r.json()["predictions"], expected)
    bad = [{**records[0], "Light_ISF": 7}]
    r = requests.post(f"{server}/v1/models/tree-survival:predict", json={"instances": bad})
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "instances[0].Light_ISF"


def test_planning_rows_are_answered_by_the_planning_model(server: str, table: pd.DataFrame) -> None:
    design = json.loads(table[list(schema.DESIGN)].head(5).to_json(orient="split"))
    r = requests.post(f"{server}/invocations", json={"dataframe_split": design}, timeout=30)
    assert r.status_code == 200, r.text
    want = requests.post(
        f"{server}/v1/predictions",
        json={
            "instances": json.loads(table[list(schema.DESIGN)].head(5).to_json(orient="records"))
        },
        timeout=30,
    ).json()
    assert want["model"] == "planning"
    _close(r.json()["predictions"], want["predictions"])


# The original application's requests: one flat seedling, EMF sent as 0 for the AMF
# species (Acer saccharum, Prunus serotina), or null, or left out.
ORIGINAL_BODIES = [
    {
        "Species": "Acer saccharum",
        "Light_ISF": 0.106,
        "Soil": "Prunus serotina",
        "Sterile": "Non-Sterile",
        "Conspecific": "Heterospecific",
        "AMF": 22.0,
        "EMF": 0.0,
        "Phenolics": -0.56,
        "Lignin": 13.86,
        "NSC": 12.15,
    },
    {
        "Species": "Prunus serotina",
        "Light_ISF": 0.054,
        "Soil": "Sterile",
        "Sterile": "Sterile",
        "Conspecific": "Sterilized",
        "AMF": 0,
        "EMF": 0,
        "Phenolics": 1.2,
        "Lignin": 20.5,
        "NSC": 16.1,
    },
    {**schema.EXAMPLE},
]


@pytest.mark.parametrize("index", range(len(ORIGINAL_BODIES)))
def test_the_original_api_accepts_what_its_clients_sent(server: str, index: int) -> None:
    body = ORIGINAL_BODIES[index]
    r = requests.post(f"{server}/v1/predic", json=body, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() in ({"Event": 1.0}, {"Event": 0.0})
    if schema.SPECIES_MYCO[body["Species"]] == "AMF":
        # 0, null and omitted mean the same thing there: no EMF.
        for emf in ({"EMF": None}, {}):
            same = {**{k: v for k, v in body.items() if k != "EMF"}, **emf}
            assert requests.post(f"{server}/v1/predic", json=same).json() == r.json()
        # The new routes keep the strict rule: EMF is empty for AMF species.
        strict = requests.post(f"{server}/v1/predictions", json={"instances": [body]})
        assert strict.status_code == 422
        assert "EMF" in strict.json()["detail"][0]["field"]


def test_the_original_api_still_refuses_a_real_emf_for_amf_species(server: str) -> None:
    body = {**ORIGINAL_BODIES[0], "EMF": 12.5}
    r = requests.post(f"{server}/v1/predic", json=body, timeout=10)
    assert r.status_code == 422 and "EMF" in r.json()["detail"][0]["field"]


def test_the_kserve_sdk_speaks_v1_to_it(
    server: str, table: pd.DataFrame, expected: list[dict[str, Any]]
) -> None:
    import asyncio

    from kserve import InferenceRESTClient, RESTConfig

    async def talk() -> tuple[bool, Any]:
        client = InferenceRESTClient(RESTConfig(protocol="v1", timeout=10))
        try:
            ready = await client.is_model_ready(server, "tree-survival")
            answer = await client.infer(
                server,
                {"instances": json.loads(table.to_json(orient="records"))},
                model_name="tree-survival",
            )
        finally:
            await client.close()
        return ready, answer

    ready, answer = asyncio.run(talk())
    assert ready is True
    _close(answer["predictions"], expected)


def test_a_missing_emf_written_as_nan_is_missing(
    server: str, table: pd.DataFrame, expected: list[dict[str, Any]]
) -> None:
    # Python's json writes pandas' NaN as the token NaN (not strict JSON): still missing.
    body = json.dumps({"dataframe_records": table.to_dict(orient="records")})
    assert "NaN" in body
    for url in (f"{server}/invocations", f"{server}/v1/models/tree-survival:predict"):
        if url.endswith(":predict"):
            body = json.dumps({"instances": table.to_dict(orient="records")})
        r = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 200, r.text
        _close(r.json()["predictions"], expected)
    # Infinity is not a missing value: a 422 naming the field.
    bad = json.dumps({"dataframe_records": [{**table.iloc[0].to_dict(), "NSC": float("inf")}]})
    r = requests.post(
        f"{server}/invocations", data=bad, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "dataframe_records[0].NSC"
