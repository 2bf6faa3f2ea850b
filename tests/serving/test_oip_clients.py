"""The Open Inference Protocol (V2) as its real clients speak it, against a real
`treesurv serve` process on 127.0.0.1: Triton's `tritonclient.http` (its defaults,
binary tensors both ways, and `binary_data=False`) and the KServe SDK's v2 REST
client. Every call of the protocol's HTTP API; every answer equals `/v1/predictions`
to 1e-9. One server for the module."""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pandas as pd
import pytest

from tests.helpers import OIP_MODEL, instances, request, serving
from treesurv.core import schema

pytestmark = pytest.mark.slow

NAME = "tree-survival"
VERSION = "3.0.0"  # bundle_four's
TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def server(bundle_four: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`treesurv serve` on the four-model bundle; its base URL."""
    with serving(bundle_four, tmp_path_factory.mktemp("oip-server")) as base:
        yield base


@pytest.fixture(scope="module")
def rows(study: pd.DataFrame) -> pd.DataFrame:
    """40 seedlings of every species: the AMF species' EMF is missing (NaN)."""
    picked = study.groupby("Species", observed=True).head(10)
    assert picked[schema.FEATURES_BY_NAME["EMF"].name].isna().any()
    return picked


@pytest.fixture(scope="module")
def expected(server: str, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """What /v1/predictions answers for `rows`."""
    status, body = request(f"{server}/v1/predictions", {"instances": instances(rows)})
    assert status == 200, body
    items = body["predictions"]
    return {
        name: np.array([p[name] for p in items])
        for name in ("death_probability", "survival_probability", "predicted_event")
    }


def triton_client(base: str) -> Any:
    import tritonclient.http as triton

    return triton.InferenceServerClient(base.removeprefix("http://"), connection_timeout=10.0)


def columns(rows: pd.DataFrame, nested: bool) -> dict[str, np.ndarray]:
    """One array per feature: text as bytes objects, numbers as float64 (NaN missing)."""
    out = {}
    for f in schema.FEATURES:
        if f.kind == "categorical":
            arr = np.array([v.encode() for v in rows[f.name].astype(str)], dtype=object)
        else:
            arr = rows[f.name].to_numpy(dtype=np.float64, na_value=np.nan)
        out[f.name] = arr.reshape(-1, 1) if nested else arr
    return out


def triton_inputs(rows: pd.DataFrame, binary: bool, nested: bool = True) -> list[Any]:
    import tritonclient.http as triton

    inputs = []
    for name, arr in columns(rows, nested).items():
        kind = "BYTES" if arr.dtype == object else "FP64"
        tensor = triton.InferInput(name, list(arr.shape), kind)
        tensor.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(tensor)
    return inputs


def assert_outputs(result: Any, names: list[str], expected: dict[str, np.ndarray]) -> None:
    got = {o["name"] for o in result.get_response()["outputs"]}
    assert got == set(names)
    for name in names:
        values = result.as_numpy(name)
        np.testing.assert_allclose(values, expected[name], rtol=0, atol=TOLERANCE)
    if "predicted_event" in names:
        assert result.as_numpy("predicted_event").dtype == np.int64


# ------------------------------------------------------------------ tritonclient


def test_triton_server_and_model_calls(server: str) -> None:
    from tritonclient.utils import InferenceServerException

    client = triton_client(server)
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "treesurv" and "binary_tensor_data" in meta["extensions"]
    assert client.is_model_ready(NAME)
    assert client.is_model_ready(NAME, VERSION)
    assert not client.is_model_ready(NAME, "9.9.9")
    assert not client.is_model_ready("iris")
    model = client.get_model_metadata(NAME)
    assert model["name"] == NAME and model["versions"] == [VERSION]
    assert [t["name"] for t in model["inputs"]] == list(schema.FEATURE_NAMES)
    assert client.get_model_metadata(NAME, VERSION) == model
    with pytest.raises(InferenceServerException, match=r"no version '9\.9\.9'") as raised:
        client.get_model_metadata(NAME, "9.9.9")
    assert raised.value.status() == "404"
    client.close()


@pytest.mark.parametrize(
    ("binary_inputs", "version", "outputs"),
    [
        # The client's defaults: binary inputs, every output as binary data.
        (True, None, None),
        (False, VERSION, None),
        (True, VERSION, [("survival_probability", False), ("predicted_event", True)]),
        (False, None, [("death_probability", True)]),
        (False, None, [("predicted_event", False), ("death_probability", False)]),
    ],
)
def test_triton_infer_equals_v1(
    server: str,
    rows: pd.DataFrame,
    expected: dict[str, np.ndarray],
    binary_inputs: bool,
    version: str | None,
    outputs: list[tuple[str, bool]] | None,
) -> None:
    import tritonclient.http as triton

    client = triton_client(server)
    requested = [triton.InferRequestedOutput(n, binary_data=b) for n, b in outputs or []]
    result = client.infer(
        NAME,
        triton_inputs(rows, binary_inputs, nested=binary_inputs),
        model_version=version or "",
        outputs=requested or None,
        request_id="seedlings-1",
    )
    names = [n for n, _ in outputs] if outputs else list(expected)
    assert_outputs(result, names, expected)
    answer = result.get_response()
    assert answer["model_name"] == NAME and answer["model_version"] == VERSION
    assert answer["id"] == "seedlings-1"
    for output, (_, as_binary) in zip(answer["outputs"], outputs or [], strict=False):
        assert ("binary_data_size" in output.get("parameters", {})) is as_binary
    client.close()


@pytest.mark.parametrize("binary_inputs", [True, False])
def test_triton_nan_outside_emf_is_refused(
    server: str, rows: pd.DataFrame, binary_inputs: bool
) -> None:
    from tritonclient.utils import InferenceServerException

    broken = rows.head(4).copy()
    broken.iloc[2, cast(int, broken.columns.get_loc("AMF"))] = np.nan  # a unique column
    with pytest.raises(InferenceServerException) as raised:
        triton_client(server).infer(NAME, triton_inputs(broken, binary_inputs))
    assert raised.value.status() == "400"
    message = raised.value.message()
    assert "row[2].AMF: NaN (a missing value) is not allowed" in message
    assert "a number from 0 to 100" in message


def test_triton_nan_emf_for_an_emf_species_breaks_the_rule(server: str, rows: pd.DataFrame) -> None:
    from tritonclient.utils import InferenceServerException

    oaks = rows[rows["Species"].astype(str).str.startswith("Quercus")].head(3).copy()
    oaks.iloc[1, cast(int, oaks.columns.get_loc("EMF"))] = np.nan
    with pytest.raises(InferenceServerException) as raised:
        triton_client(server).infer(NAME, triton_inputs(oaks, True))
    assert raised.value.status() == "400"
    assert "row[1]" in raised.value.message() and "EMF" in raised.value.message()


# ------------------------------------------------------------------- the KServe SDK


def kserve_inputs(rows: pd.DataFrame, binary: bool) -> list[Any]:
    from kserve import InferInput

    inputs = []
    for name, arr in columns(rows, nested=False).items():
        kind = "BYTES" if arr.dtype == object else "FP64"
        tensor = InferInput(name, list(arr.shape), kind)
        tensor.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize(
    ("binary_inputs", "outputs"),
    [
        (False, None),
        (True, None),
        (True, [("death_probability", True), ("predicted_event", False)]),
    ],
)
def test_kserve_sdk_equals_v1(
    server: str,
    rows: pd.DataFrame,
    expected: dict[str, np.ndarray],
    binary_inputs: bool,
    outputs: list[tuple[str, bool]] | None,
) -> None:
    from kserve import InferenceRESTClient, InferRequest, RESTConfig
    from kserve.protocol.infer_type import RequestedOutput

    async def talk() -> tuple[bool, bool, bool, Any]:
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=10))
        try:
            live = await client.is_server_live(server)
            ready = await client.is_server_ready(server)
            model_ready = await client.is_model_ready(server, NAME)
            request_outputs = [
                RequestedOutput(n, parameters={"binary_data": b}) for n, b in outputs or []
            ]
            infer_request = InferRequest(
                NAME,
                kserve_inputs(rows, binary_inputs),
                request_id="kserve-1",
                request_outputs=request_outputs or None,
            )
            answer = await client.infer(server, infer_request, model_name=NAME)
        finally:
            await client.close()
        return live, ready, model_ready, answer

    live, ready, model_ready, answer = asyncio.run(talk())
    assert live and ready and model_ready
    assert answer.model_name == NAME and answer.id == "kserve-1"
    names = [n for n, _ in outputs] if outputs else list(expected)
    assert [o.name for o in answer.outputs] == names
    for output in answer.outputs:
        got = output.as_numpy()
        np.testing.assert_allclose(got, expected[output.name], rtol=0, atol=TOLERANCE)


# ------------------------------------------------------------- on the wire itself


def post(base: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, Any]:
    """POST exactly these headers (http.client adds no Content-Type of its own)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_the_body_is_json_whatever_the_content_type(
    server: str,
    rows: pd.DataFrame,
    expected: dict[str, np.ndarray],
    content_type: str | None,
) -> None:
    from tests.helpers import tensors

    body = orjson.dumps({"inputs": tensors(instances(rows))})
    headers = {} if content_type is None else {"Content-Type": content_type}
    status, _, raw = post(server, f"{OIP_MODEL}/infer", body, headers)
    assert status == 200, raw
    out = {o["name"]: o["data"] for o in orjson.loads(raw)["outputs"]}
    np.testing.assert_allclose(
        out["death_probability"], expected["death_probability"], rtol=0, atol=TOLERANCE
    )


def test_binary_outputs_on_the_wire(server: str, rows: pd.DataFrame) -> None:
    from tests.helpers import tensors

    one = instances(rows.head(3))
    body = orjson.dumps({"inputs": tensors(one), "parameters": {"binary_data_output": True}})
    status, headers, raw = post(server, f"{OIP_MODEL}/infer", body, {})
    assert status == 200
    assert headers["Content-Type"] == "application/octet-stream"
    length = int(headers["Inference-Header-Content-Length"])
    head = orjson.loads(raw[:length])
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    assert sizes == [24, 24, 24] and len(raw) == length + sum(sizes)
    assert all("data" not in o for o in head["outputs"])


def test_unknown_v2_paths_answer_the_protocols_error(server: str) -> None:
    for path in ("/v2/nothing", "/v2/models/tree-survival/explain", "/v2/repository/index"):
        status, body = request(f"{server}{path}")
        assert status == 404, path
        assert set(body) == {"error"} and "no such path" in body["error"]
    status, body = request(f"{server}{OIP_MODEL}/versions/9.9.9/ready")
    assert status == 404 and "no version '9.9.9'" in body["error"]
    status, body = request(f"{server}{OIP_MODEL}/versions/{VERSION}/ready")
    assert status == 200 and body == {"name": NAME, "ready": True}
    # Elsewhere FastAPI's usual answer is unchanged.
    status, body = request(f"{server}/v1/nothing")
    assert status == 404 and body == {"detail": "Not Found"}
