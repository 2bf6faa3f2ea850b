"""Triton's binary tensor data extension: the codec (serving.binary_tensors) against
tritonclient's own serialisers, and the infer route's answers to binary requests
(in process; the real clients over the wire are in test_oip_clients.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import OIP_MODEL, instances, tensors
from treesurv.core import schema
from treesurv.serving import binary_tensors as bt

ACER = {**schema.EXAMPLE, "Species": "Acer saccharum", "EMF": None}

# ------------------------------------------------------------------------ codec


def test_fixed_types_round_trip_little_endian() -> None:
    values = np.array([0.5, -1.25, 1e-300, 3.0])
    raw = bt.encode_fixed(values, "FP64")
    assert raw == values.astype("<f8").tobytes() and len(raw) == 32
    np.testing.assert_array_equal(bt.decode_fixed(raw, "FP64", 4), values)
    assert bt.decode_fixed(bt.encode_fixed([1, 0, 7], "INT64"), "INT64", 3).tolist() == [1, 0, 7]
    assert bt.encode_fixed([1], "INT32") == b"\x01\x00\x00\x00"
    np.testing.assert_array_equal(bt.decode_fixed(b"\x00\x3c", "FP16", 1), [1.0])


def test_fixed_size_must_match_the_count() -> None:
    with pytest.raises(bt.BinaryDataError, match="3 FP64 values take 24 bytes, got 16"):
        bt.decode_fixed(b"\0" * 16, "FP64", 3)
    with pytest.raises(bt.BinaryDataError, match="'BF16' cannot be read"):
        bt.decode_fixed(b"\0\0", "BF16", 1)


def test_bytes_elements_are_length_prefixed() -> None:
    raw = bt.encode_bytes(["Acer saccharum", b"", "Sterile"])
    assert raw[:4] == (14).to_bytes(4, "little") and raw[4:18] == b"Acer saccharum"
    assert bt.decode_bytes(raw, 3) == [b"Acer saccharum", b"", b"Sterile"]
    assert bt.decode_text(raw, 3) == ["Acer saccharum", "", "Sterile"]


def test_the_codec_reads_and_writes_what_tritonclient_does() -> None:
    from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

    words = np.array([b"Quercus rubra", b"Prunus serotina", b"x"], dtype=object)
    theirs = serialize_byte_tensor(words).item()
    assert bt.encode_bytes(["Quercus rubra", "Prunus serotina", "x"]) == theirs
    assert bt.decode_bytes(theirs, 3) == list(words)
    assert list(deserialize_bytes_tensor(bt.encode_bytes(["a", "bc"]))) == [b"a", b"bc"]


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        (b"\x05\x00\x00\x00abc", 1, "element 0 declares 5 bytes but only 3 remain"),
        (b"\x01\x00\x00\x00a\x01\x00", 2, "ends at element 1 of 2"),
        (b"\x01\x00\x00\x00ab", 1, "1 bytes left after the 1 BYTES elements"),
    ],
)
def test_broken_bytes_data_is_refused(raw: bytes, count: int, message: str) -> None:
    with pytest.raises(bt.BinaryDataError, match=message):
        bt.decode_bytes(raw, count)


CATEGORIES = ("Acer saccharum", "Épicéa", "x", "Quercus rubra")  # one not ASCII, one byte
OTHER_TEXT = ["", "Quercus", "Quercus rubra ", "a\x00\x00\x00b", "é" * 70, "y" * 300]


@given(st.lists(st.sampled_from(CATEGORIES + tuple(OTHER_TEXT)), min_size=1, max_size=40))
def test_category_codes_are_the_categories_text_decoding_finds(values: list[str]) -> None:
    raw = bt.encode_bytes(values)
    codes = bt.category_codes(raw, len(values), CATEGORIES)
    if all(v in CATEGORIES for v in values):
        assert codes is not None and codes.tolist() == [CATEGORIES.index(v) for v in values]
    else:  # left to `decode_text`, which reads any text
        assert codes is None
        assert bt.decode_text(raw, len(values)) == values


@given(
    st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=12),
    st.integers(min_value=0),
    st.integers(min_value=0, max_value=255),
    st.integers(min_value=-2, max_value=2),
)
def test_category_codes_never_read_broken_data_differently(
    values: list[str], at: int, byte: int, count_off: int
) -> None:
    """One byte changed, or the wrong count: codes only when the byte-by-byte reader
    reads the same categories from the same bytes."""
    raw = bytearray(bt.encode_bytes(values))
    raw[at % len(raw)] = byte
    count = max(len(values) + count_off, 0)
    codes = bt.category_codes(bytes(raw), count, CATEGORIES)
    if codes is not None:
        read = bt.decode_text(bytes(raw), count)  # would raise if the bytes do not tile
        assert [CATEGORIES[c] for c in codes.tolist()] == read


def test_text_must_be_utf8() -> None:
    with pytest.raises(bt.BinaryDataError, match="element 1 is not UTF-8"):
        bt.decode_text(bt.encode_bytes([b"ok", b"\xff\xfe"]), 2)


def test_split_body_and_data() -> None:
    assert bt.split_body(b'{"a":1}rest', None) == (b'{"a":1}rest', b"")
    assert bt.split_body(b'{"a":1}rest', "7") == (b'{"a":1}', b"rest")
    for bad in ("0", "12", "-1", "seven", "", "1e3"):
        with pytest.raises(bt.BinaryDataError, match=bt.HEADER):
            bt.split_body(b'{"a":1}rest', bad)
    assert bt.split_data(b"aabbb", [2, 3]) == [b"aa", b"bbb"]
    with pytest.raises(bt.BinaryDataError, match=r"declare 4 bytes \(.*\) but 5 follow"):
        bt.split_data(b"aabbb", [2, 2])
    for size in (-1, True, 2.5, "8"):
        with pytest.raises(bt.BinaryDataError, match="binary_data_size"):
            bt.data_size(size)


# ------------------------------------------------------------- the infer route


def binary_request(
    rows: list[dict[str, object]], binary: set[str], extra: dict[str, object] | None = None
) -> tuple[bytes, dict[str, str]]:
    """An infer body with the named inputs as binary data (FP64 NaN for null)."""
    inputs, chunks = [], []
    for tensor in tensors(rows):
        if tensor["name"] in binary:
            data = tensor.pop("data")
            if tensor["datatype"] == "BYTES":
                raw = bt.encode_bytes(data)
            else:
                raw = bt.encode_fixed([np.nan if v is None else v for v in data], "FP64")
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        inputs.append(tensor)
    head = orjson.dumps({"inputs": inputs, **(extra or {})})
    return head + b"".join(chunks), {bt.HEADER: str(len(head))}


def test_binary_inputs_answer_as_json_ones(client: TestClient) -> None:
    rows = [schema.EXAMPLE, ACER]
    body, headers = binary_request(rows, set(schema.FEATURE_NAMES))
    r = client.post(f"{OIP_MODEL}/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    as_json = client.post(f"{OIP_MODEL}/infer", json={"inputs": tensors(rows)})
    assert r.json() == as_json.json()


def test_binary_outputs_when_asked(client: TestClient) -> None:
    rows = [schema.EXAMPLE, ACER, schema.EXAMPLE]
    outputs = [
        {"name": "predicted_event", "parameters": {"binary_data": True}},
        {"name": "death_probability"},
    ]
    body, headers = binary_request(rows, {"AMF", "Species"}, {"outputs": outputs})
    r = client.post(f"{OIP_MODEL}/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == bt.MEDIA_TYPE
    length = int(r.headers[bt.HEADER])
    head = orjson.loads(r.content[:length])
    event, death = head["outputs"]
    assert event["parameters"] == {"binary_data_size": 24} and "data" not in event
    assert bt.decode_fixed(r.content[length:], "INT64", 3).tolist() == [
        int(p >= 0.5) for p in death["data"]
    ]


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (
            lambda b, h: (b, {}),
            "(binary data after the JSON object needs the Inference-Header-Content-Length",
        ),
        (lambda b, h: (b + b"x", h), "declare 25 bytes (binary_data_size of each) but 26 follow"),
        (lambda b, h: (b, {bt.HEADER: str(len(b) + 1)}), "it must be the length of the JSON"),
        (lambda b, h: (b[:-3], h), "follow the JSON object"),
        (lambda b, h: (b, {**h, "Content-Encoding": "gzip"}), "Content-Encoding 'gzip'"),
    ],
)
def test_broken_binary_requests_get_400(
    client: TestClient, mangle: Callable[[bytes, dict[str, str]], Any], message: str
) -> None:
    body, headers = binary_request([schema.EXAMPLE], {"Species", "AMF"})
    body, headers = mangle(body, headers)
    r = client.post(f"{OIP_MODEL}/infer", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and message in r.json()["error"], r.json()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"datatype": "FP32"}, "1 FP32 values take 4 bytes, got 8"),
        ({"data": [1.0]}, "gives both `data` and binary_data_size"),
        ({"parameters": {"binary_data_size": -8}}, "binary_data_size must be a whole number"),
        ({"parameters": {"shared_memory_region": "r"}}, "shared memory extension"),
    ],
)
def test_inconsistent_binary_tensors_get_400(
    client: TestClient, change: dict[str, object], message: str
) -> None:
    body, headers = binary_request([schema.EXAMPLE], {"AMF"})
    length = int(headers[bt.HEADER])
    head = orjson.loads(body[:length])
    amf = next(t for t in head["inputs"] if t["name"] == "AMF")
    amf.update(change)
    new_head = orjson.dumps(head)
    r = client.post(
        f"{OIP_MODEL}/infer",
        content=new_head + body[length:],
        headers={bt.HEADER: str(len(new_head))},
    )
    assert r.status_code == 400, r.text
    assert message in r.json()["error"], r.json()


def test_nan_is_missing_only_where_the_schema_allows(client: TestClient) -> None:
    # EMF NaN for an AMF species: missing, as null is.
    body, headers = binary_request([ACER], {"EMF"})
    r = client.post(f"{OIP_MODEL}/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    # EMF NaN for an EMF species: the schema's rule, naming the row.
    body, headers = binary_request([schema.EXAMPLE, {**schema.EXAMPLE, "EMF": None}], {"EMF"})
    r = client.post(f"{OIP_MODEL}/infer", content=body, headers=headers)
    assert r.status_code == 400 and "row[1].Species+EMF" in r.json()["error"], r.text
    # NaN elsewhere, binary or JSON: refused, naming the input and the rows.
    rows = [schema.EXAMPLE, {**schema.EXAMPLE, "NSC": None}, {**schema.EXAMPLE, "NSC": None}]
    body, headers = binary_request(rows, {"NSC"})
    r = client.post(f"{OIP_MODEL}/infer", content=body, headers=headers)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error.startswith("row[1].NSC: NaN (a missing value) is not allowed; must be a number")
    assert "input 'NSC', NaN in rows 1, 2" in error and "only EMF (for AMF species)" in error
    inputs = tensors([{**schema.EXAMPLE, "Lignin": float("nan")}])
    r = client.post(f"{OIP_MODEL}/infer", content=orjson.dumps(inputs and {"inputs": inputs}))
    # orjson writes NaN as null: a null Lignin is refused by the schema, naming the row.
    assert r.status_code == 400 and "row[0].Lignin" in r.json()["error"]
    raw = b'{"inputs": %s}' % orjson.dumps(tensors([schema.EXAMPLE])).replace(
        b'"Lignin","shape":[1],"datatype":"FP64","data":[24.74]',
        b'"Lignin","shape":[1],"datatype":"FP64","data":[NaN]',
    )
    r = client.post(f"{OIP_MODEL}/infer", content=raw)
    assert r.status_code == 400 and "row[0].Lignin: NaN (a missing value)" in r.json()["error"]


def test_classification_outputs_are_refused(client: TestClient) -> None:
    body: dict[str, Any] = {
        "inputs": tensors([schema.EXAMPLE]),
        "outputs": [{"name": "predicted_event", "parameters": {"classification": 2}}],
    }
    r = client.post(f"{OIP_MODEL}/infer", json=body)
    assert r.status_code == 400 and "classification extension" in r.json()["error"]
    body = {"inputs": tensors([schema.EXAMPLE]), "parameters": {"binary_data_output": "yes"}}
    r = client.post(f"{OIP_MODEL}/infer", json=body)
    assert r.status_code == 400 and "binary_data_output must be true or false" in r.text


@pytest.mark.parametrize("as_binary", [False, True], ids=["json", "binary"])
def test_the_column_path_answers_byte_for_byte_what_the_row_path_does(
    client: TestClient, study: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, as_binary: bool
) -> None:
    """Valid full-model tensors are checked and scored as columns; the answer is the
    per-row path's, byte for byte, and so are the instances the prediction log gets."""
    from treesurv.monitoring.prediction_log.lines import encode_instances
    from treesurv.monitoring.service import remember
    from treesurv.serving import scoring
    from treesurv.serving.routes import open_inference as oip

    rows = instances(study.sample(300, random_state=5))
    body, headers = binary_request(rows, set(schema.FEATURE_NAMES) if as_binary else set())
    taken: list[bool] = []
    logged: list[bytes] = []
    check = oip.full_model_tensors  # `remember`: the function scoring calls to log

    def spy(columns: dict[str, list[Any]]) -> dict[str, Any] | None:
        found = check(columns)
        taken.append(found is not None)
        return found

    def log(scope: Any, version: str, request: Any, probabilities: Any) -> None:
        logged.append(encode_instances(request, len(probabilities)))
        remember(scope, version, request, probabilities)

    monkeypatch.setattr(scoring, "remember", log)
    monkeypatch.setattr(oip, "full_model_tensors", spy)
    fast = client.post(f"{OIP_MODEL}/infer", content=body, headers=headers)
    assert taken == [True]
    monkeypatch.setattr(oip, "full_model_tensors", lambda columns: None)
    slow = client.post(f"{OIP_MODEL}/infer", content=body, headers=headers)
    assert fast.status_code == slow.status_code == 200, fast.text
    assert fast.content == slow.content
    assert logged[0] == logged[1]


def test_the_column_check_declines_what_the_row_path_refuses(client: TestClient) -> None:
    # A wrong category in the second row: the row path names it, as before.
    bad = {**schema.EXAMPLE, "Soil": "Oak"}
    r = client.post(f"{OIP_MODEL}/infer", json={"inputs": tensors([schema.EXAMPLE, bad])})
    assert r.status_code == 400
    assert "row[1].Soil" in r.json()["error"] and "'Oak'" in r.json()["error"]
