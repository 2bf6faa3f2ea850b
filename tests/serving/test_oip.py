"""The Open Inference Protocol (V2) endpoints: shapes, datatypes and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.helpers import OIP_MODEL, instances, tensors
from treesurv.core import schema
from treesurv.inference.bundle import load_verified

MODEL = OIP_MODEL


def test_health_and_server_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "treesurv" and meta["extensions"] == ["binary_tensor_data"]
    assert client.get(f"{MODEL}/ready").json() == {"name": "tree-survival", "ready": True}


def test_model_metadata(client: TestClient) -> None:
    meta = client.get(MODEL).json()
    assert meta["name"] == "tree-survival"
    assert meta["versions"] == ["1.0.0"]
    assert meta["platform"]
    inputs = {t["name"]: t for t in meta["inputs"]}
    assert list(inputs) == list(schema.FEATURE_NAMES)
    assert inputs["Species"] == {"name": "Species", "datatype": "BYTES", "shape": [-1, 1]}
    assert inputs["AMF"]["datatype"] == "FP64"
    assert [o["name"] for o in meta["outputs"]] == [
        "death_probability",
        "survival_probability",
        "predicted_event",
    ]
    assert client.get(f"{MODEL}/versions/1.0.0").json() == meta
    missing = client.get(f"{MODEL}/versions/9.9.9")
    assert missing.status_code == 404 and "no version '9.9.9'" in missing.json()["error"]
    other = client.get("/v2/models/iris")
    assert other.status_code == 404 and "unknown model 'iris'" in other.json()["error"]


@pytest.mark.parametrize("nested", [False, True])
def test_infer(client: TestClient, bundle_v1: Path, study: pd.DataFrame, nested: bool) -> None:
    bundle, compiled = load_verified(bundle_v1)
    rows = study.sample(64, random_state=2)
    r = client.post(
        f"{MODEL}/infer", json={"id": "req-1", "inputs": tensors(instances(rows), nested)}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "tree-survival"
    assert body["model_version"] == "1.0.0"
    assert body["id"] == "req-1"
    out = {o["name"]: o for o in body["outputs"]}
    expected = compiled.proba_columns(rows)
    assert out["death_probability"]["datatype"] == "FP64"
    assert out["death_probability"]["shape"] == [64]
    np.testing.assert_allclose(out["death_probability"]["data"], expected, atol=1e-12)
    np.testing.assert_allclose(out["survival_probability"]["data"], 1 - expected, atol=1e-12)
    assert out["predicted_event"]["datatype"] == "INT64"
    assert out["predicted_event"]["data"] == [int(p >= bundle.threshold) for p in expected]
    versioned = client.post(
        f"{MODEL}/versions/1.0.0/infer", json={"inputs": tensors(instances(rows))}
    )
    assert versioned.json()["outputs"] == body["outputs"]


def test_requested_outputs_and_omitted_emf(client: TestClient) -> None:
    amf = {**schema.EXAMPLE, "Species": "Acer saccharum", "EMF": None}
    inputs = [t for t in tensors([amf]) if t["name"] != "EMF"]
    r = client.post(
        f"{MODEL}/infer", json={"inputs": inputs, "outputs": [{"name": "predicted_event"}]}
    )
    assert r.status_code == 200, r.text
    [out] = r.json()["outputs"]
    assert out["name"] == "predicted_event" and out["shape"] == [1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t[0].update(data=["Oak"]), "row[0].Species: 'Oak' is not an allowed value"),
        (lambda t: t[5].update(data=[500.0]), "row[0].AMF: 500.0 is out of range"),
        (lambda t: t[0].update(datatype="FP64"), "input 'Species': datatype must be BYTES"),
        (lambda t: t[1].update(datatype="BYTES"), "input 'Light_ISF': datatype must be FP64"),
        (lambda t: t[1].update(shape=[2]), "shape [2] needs 2 values, got 1"),
        (lambda t: t[1].update(shape=[1, 2], data=[1, 2]), "shape must be [N] or [N, 1]"),
        (lambda t: t.pop(3), "missing input(s) Sterile"),
        (lambda t: t.append({**t[0], "name": "Census"}), "unknown input(s) 'Census'"),
        (lambda t: t.append(dict(t[0])), "input 'Species' is given twice"),
        (lambda t: t[6].update(data=[None]), "EMF is empty for AMF species"),
    ],
)
def test_infer_errors_follow_the_protocol(client: TestClient, change: Any, message: str) -> None:
    inputs = tensors([schema.EXAMPLE])
    change(inputs)
    r = client.post(f"{MODEL}/infer", json={"inputs": inputs})
    assert r.status_code == 400
    assert set(r.json()) == {"error"}
    assert message in r.json()["error"]


def test_infer_envelope_errors(client: TestClient) -> None:
    bodies: tuple[Any, ...] = ({"inputs": []}, {"inputs": 3}, {}, [1])
    for body in bodies:
        r = client.post(f"{MODEL}/infer", json=body)
        assert r.status_code == 400, body
        assert r.json()["error"]
    rows = tensors([schema.EXAMPLE])
    r = client.post(f"{MODEL}/infer", json={"inputs": rows, "outputs": [{"name": "logit"}]})
    assert r.status_code == 400 and "unknown output(s) 'logit'" in r.json()["error"]
    big = tensors([schema.EXAMPLE] * 1001)
    r = client.post(f"{MODEL}/infer", json={"inputs": big})
    assert r.status_code == 400 and "1 to 1000 rows" in r.json()["error"]


@pytest.mark.parametrize("rows", [1, 200])  # 200 rows: read in a worker thread
def test_infer_on_a_model_not_served(client: TestClient, rows: int) -> None:
    # The protocol's order: a malformed body is a 400 whatever the model's name; a
    # well-formed one for a model or version not served is a 404.
    inputs = tensors([schema.EXAMPLE] * rows)
    r = client.post("/v2/models/iris/infer", json={"inputs": inputs})
    assert r.status_code == 404 and "unknown model 'iris'" in r.json()["error"]
    r = client.post(f"{MODEL}/versions/9.9.9/infer", json={"inputs": inputs})
    assert r.status_code == 404 and "no version '9.9.9'" in r.json()["error"]
    r = client.post("/v2/models/iris/infer", json={"inputs": 3})
    assert r.status_code == 400 and r.json()["error"]
    r = client.post("/v2/models/iris/infer", content=b'{"inputs": [' + b" " * 20_000)
    assert r.status_code == 400 and r.json()["error"]


def test_infer_without_a_model_is_503_once_parsed(make_client: Any, tmp_path: Path) -> None:
    client = make_client(tmp_path / "nothing-here")
    r = client.post(f"{MODEL}/infer", json={"inputs": tensors([schema.EXAMPLE])})
    assert r.status_code == 503 and "not ready" in r.json()["error"]
    r = client.post(f"{MODEL}/infer", json={"inputs": 3})
    assert r.status_code == 400


def _plain_cases(rows: list[dict[str, Any]]) -> list[Any]:
    """A valid infer request and what clients change in one: each is read by the
    plain path or left to the request models."""
    base: dict[str, Any] = {"id": "r1", "inputs": tensors(rows)}

    def changed(index: int, **fields: Any) -> dict[str, Any]:
        inputs = [dict(t) for t in base["inputs"]]
        inputs[index].update(fields)
        return {**base, "inputs": inputs}

    light = next(i for i, f in enumerate(schema.FEATURES) if f.name == "Light_ISF")
    return [
        base,
        {"inputs": tensors(rows)},  # no id
        {"inputs": tensors(rows, nested=True)},  # shape [n, 1]
        {**base, "extra": 1},  # unknown fields are the request models' to allow
        changed(light, extra=1),
        changed(light, data=[str(v) for v in base["inputs"][light]["data"]]),
        changed(light, data=[True] * len(rows)),
        changed(light, data=[None] * len(rows)),
        changed(light, datatype="BYTES"),
        changed(light, datatype="INT64"),
        changed(light, shape=[len(rows) + 1]),
        changed(light, shape=[len(rows), 2]),
        changed(light, shape=["3"]),
        changed(light, name="Light"),
        changed(light, parameters={}),
        changed(light, parameters={"binary_data_size": 8}),
        changed(0, data=["Quercus velutina"] * len(rows)),
        {**base, "inputs": base["inputs"][1:]},  # an input missing
        {**base, "inputs": [*base["inputs"], base["inputs"][0]]},  # an input twice
        {**base, "inputs": []},
        {**base, "id": 7},
        {**base, "parameters": {"binary_data_output": True}},
        {**base, "outputs": [{"name": "death_probability"}]},
        {**base, "outputs": None, "parameters": None},
    ]


def test_the_plain_path_reads_what_the_request_models_read(study: pd.DataFrame) -> None:
    import orjson

    from treesurv.serving.routes import open_inference as oip

    rows = instances(study.head(12))
    read = 0
    for case in _plain_cases(rows):
        head = orjson.dumps(case)
        plain = oip._plain_json(head, 1000)
        try:
            body = oip.parse_request(head)
            values = oip.tensor_values(body.inputs, 1000)  # JSON tensors: lists
        except oip.ProtocolError:
            assert plain is None, case  # an error: the request models' path names it
            continue
        if plain is None:
            continue  # left to the request models: always allowed
        read += 1
        assert plain[1] == values, case
        assert plain[0].id == body.id and oip.requested_outputs(plain[0]) == (
            oip.requested_outputs(body)
        )
    assert read >= 5  # the valid requests (and those with unknown fields) are read
