"""Every kind of invalid input gets 422 (413 for size) naming the field, the value and
what is allowed; nothing a client sends can produce a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from treesurv.core import schema


def problems(client: TestClient, body: Any, status: int = 422) -> list[dict[str, Any]]:
    r = client.post("/v1/predictions", json=body)
    assert r.status_code == status, r.text
    detail: list[dict[str, Any]] = r.json()["detail"]
    for item in detail:
        assert item["msg"] and item["allowed"] and item["field"]
    return detail


def one(**changes: Any) -> dict[str, Any]:
    row = {**schema.EXAMPLE, **changes}
    return {"instances": [{k: v for k, v in row.items() if v is not ...}]}


def test_unknown_category(client: TestClient) -> None:
    [p] = problems(client, one(Species="Quercus velutina"))
    assert p["field"] == "instances[0].Species"
    assert p["value"] == "Quercus velutina"
    assert p["allowed"] == schema.FEATURES_BY_NAME["Species"].allowed()
    assert "'Quercus velutina' is not an allowed value" in p["msg"]


@pytest.mark.parametrize(("field", "value"), [("AMF", 100.5), ("Light_ISF", -0.01), ("NSC", 1e9)])
def test_out_of_range(client: TestClient, field: str, value: float) -> None:
    [p] = problems(client, one(**{field: value}))
    assert p["field"] == f"instances[0].{field}"
    assert p["value"] == value
    assert p["allowed"].startswith(schema.FEATURES_BY_NAME[field].allowed())
    assert "out of range" in p["msg"]


@pytest.mark.parametrize("value", ["0.5", True, [1], {"v": 1}])
def test_wrong_type(client: TestClient, value: Any) -> None:
    [p] = problems(client, one(Lignin=value))
    assert p["field"] == "instances[0].Lignin"
    assert "not a number" in p["msg"]
    assert "a number from 0 to 100" in p["allowed"]


def test_category_given_as_number(client: TestClient) -> None:
    [p] = problems(client, one(Sterile=1))
    assert p["field"] == "instances[0].Sterile"
    assert "'Non-Sterile'" in p["allowed"]


def test_non_finite_number(client: TestClient) -> None:
    r = client.post(
        "/v1/predictions",
        content=json.dumps(one(AMF=float("nan"))),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "instances[0].AMF"


def test_missing_field(client: TestClient) -> None:
    [p] = problems(client, one(Phenolics=...))
    assert p["field"] == "instances[0].Phenolics"
    assert p["type"] == "missing"
    assert "required field is missing" in p["msg"]
    assert p["allowed"] == schema.FEATURES_BY_NAME["Phenolics"].allowed()


def test_extra_field_in_an_instance_and_beside_instances(client: TestClient) -> None:
    [p] = problems(client, one(Census=18))
    assert p["field"] == "instances[0].Census"
    assert "Species" in p["allowed"] and "Census" not in p["allowed"]
    [q] = problems(client, {**one(), "model": "other"})
    assert q["field"] == "model"
    assert q["allowed"] == "only the fields instances, horizon_days"


def test_cross_field_rules(client: TestClient) -> None:
    # An oak without EMF, and a sterile soil said to be non-sterile.
    [p] = problems(client, one(EMF=None))
    assert p["field"] == "instances[0].Species+EMF"
    assert "Species='Quercus rubra'" in p["value"] and "EMF=None" in p["value"]
    assert "required for EMF species" in p["allowed"]
    [q] = problems(client, one(Soil="Sterile"))
    assert "Soil='Sterile'" in q["value"]
    assert "Sterile is 'Sterile' exactly when Soil is 'Sterile'" in q["allowed"]
    assert "Conspecific is 'Sterilized' for sterile soil" in q["allowed"]


def test_empty_and_oversized_batches(make_client: Any, bundle_v1: Any) -> None:
    client = make_client(bundle_v1, max_batch=3)
    [p] = problems(client, {"instances": []})
    assert p["field"] == "instances" and p["value"] == 0
    assert p["allowed"] == "a list of 1 to 3 instances"
    [q] = problems(client, {"instances": [schema.EXAMPLE] * 4})
    assert q["value"] == 4 and "got 4 instance(s)" in q["msg"]
    assert client.post("/v1/predictions", json={"instances": [schema.EXAMPLE] * 3}).is_success


def test_not_a_list_and_not_an_object(client: TestClient) -> None:
    [p] = problems(client, {"instances": schema.EXAMPLE})
    assert p["field"] == "instances"
    [q] = problems(client, [schema.EXAMPLE])
    assert q["field"] == "body" and "JSON object" in q["allowed"]


@pytest.mark.parametrize("raw", [b'{"instances": [', b"", b"{'instances': []}", b"\xff\xfe"])
def test_malformed_json(client: TestClient, raw: bytes) -> None:
    r = client.post("/v1/predictions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422
    [p] = r.json()["detail"]
    assert p["type"] == "json_invalid"
    assert p["msg"].startswith("malformed JSON")


def test_body_over_the_limit_gets_413(make_client: Any, bundle_v1: Any) -> None:
    client = make_client(bundle_v1, max_body_bytes=4096)
    big = {"instances": [schema.EXAMPLE] * 40}
    r = client.post("/v1/predictions", json=big)
    assert r.status_code == 413
    [p] = r.json()["detail"]
    assert p["allowed"] == "at most 4096 bytes"
    assert "too large" in p["msg"]

    # Without a Content-Length header (chunked upload) the limit holds as well.
    def chunks() -> Any:
        data = json.dumps(big).encode()
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    r = client.post(
        "/v1/predictions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


def test_every_problem_of_a_batch_is_reported(client: TestClient) -> None:
    body = {
        "instances": [
            schema.EXAMPLE,
            {**schema.EXAMPLE, "Soil": "Peat"},
            {**schema.EXAMPLE, "AMF": -3},
        ]
    }
    fields = [p["field"] for p in problems(client, body)]
    assert fields == ["instances[1].Soil", "instances[2].AMF"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers()
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
feature_values = st.one_of(
    json_values,
    *(st.sampled_from(f.categories) for f in schema.FEATURES if f.categories),
    st.floats(-10, 120),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        json_values,
        st.builds(
            lambda rows: {"instances": rows},
            st.lists(
                st.dictionaries(st.sampled_from(schema.FEATURE_NAMES), feature_values), max_size=3
            ),
        ),
    )
)
# orjson cannot write integers beyond 64 bits; the error that echoes them must not 500.
@example(body=-(2**63) - 1)
@example(body={"instances": [{"Light_ISF": 2**70}]})
def test_no_input_produces_a_server_error(client: TestClient, body: Any) -> None:
    for path in ("/v1/predictions", "/v1/predic", "/v2/models/tree-survival/infer"):
        r = client.post(path, json=body)
        assert r.status_code in (200, 400, 422), (path, body, r.text)
        assert r.headers["content-type"] == "application/json"
