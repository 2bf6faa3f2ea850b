"""A body over the limit gets a 413 that every client can read: the server reads the
rest of the body (up to a bound) before it answers and closes, so a client still
sending is not reset. Checked with `requests` and `urllib`, with and without a
Content-Length, against a real server process; and for the web page's file upload,
whose own limit is larger."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import serving

pytestmark = pytest.mark.slow

LIMIT = 65536
UPLOAD_LIMIT = 1024 * 1024
# About 5.8 MB: far past the limit and past what socket buffers absorb, so a server
# that answered without reading would reset the connection under the client.
BIG = b'{"instances": [' + b'{"Species": "Quercus rubra"},' * 200_000 + b"{}]}"


def _chunks() -> Iterator[bytes]:
    for i in range(0, len(BIG), 65536):
        yield BIG[i : i + 65536]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, bundle_four: Path) -> Iterator[str]:
    with serving(
        bundle_four,
        tmp_path_factory.mktemp("limit"),
        max_body_bytes=str(LIMIT),
        max_upload_bytes=str(UPLOAD_LIMIT),
    ) as base:
        yield base


def _check(status: int, body: dict[str, Any], length: int | None) -> None:
    assert status == 413
    item = body["detail"][0]
    assert item["type"] == "body_too_large" and item["value"] == length
    assert f"at most {LIMIT} bytes" == item["allowed"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_requests_reads_the_413(server: str, chunked: bool) -> None:
    data: Any = _chunks() if chunked else BIG
    r = requests.post(
        f"{server}/v1/predictions",
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    _check(r.status_code, r.json(), None if chunked else len(BIG))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_urllib_reads_the_413(server: str, chunked: bool) -> None:
    data: Any = _chunks() if chunked else BIG
    req = urllib.request.Request(
        f"{server}/v1/predictions", data=data, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=60)
    _check(caught.value.code, json.loads(caught.value.read()), None if chunked else len(BIG))


def test_the_server_still_answers_after_refusing(server: str) -> None:
    for _ in range(3):
        requests.post(f"{server}/v1/predictions", data=BIG, timeout=60)
    assert requests.get(f"{server}/readyz", timeout=10).status_code == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_requests_reads_the_uploads_413(server: str, chunked: bool) -> None:
    data: Any = _chunks() if chunked else BIG
    r = requests.post(
        f"{server}/ui/score?filename=big.csv",
        data=data,
        headers={"Content-Type": "text/csv"},
        timeout=60,
    )
    assert r.status_code == 413
    item = r.json()["detail"][0]
    assert item["type"] == "file_too_large" and item["value"] == (None if chunked else len(BIG))
    assert f"the limit is {UPLOAD_LIMIT} bytes (1.0 MiB)" in item["msg"]
    if not chunked:
        assert f"file too large: {len(BIG)} bytes (5.5 MiB)" in item["msg"]


def test_an_upload_past_the_api_limit_is_read(server: str) -> None:
    # Over the API's limit, under the upload's: read and judged on its content.
    r = requests.post(
        f"{server}/ui/score?filename=plain.csv",
        data=b"x" * (LIMIT * 2),
        headers={"Content-Type": "text/csv"},
        timeout=60,
    )
    assert r.status_code == 422, r.text
    assert "missing required column(s)" in r.json()["detail"][0]["msg"]
