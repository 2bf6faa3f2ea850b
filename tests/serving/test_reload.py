"""Hot reload: API key, a good bundle swapped in, a tampered one refused while the old
model keeps serving, the watcher, and requests in flight during swaps."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.helpers import API_KEY, instances, place
from treesurv.core import schema
from treesurv.inference.bundle import load_verified

AUTH = {"X-API-Key": API_KEY}


@pytest.fixture
def model_dir(tmp_path: Path, bundle_v1: Path) -> Path:
    path = tmp_path / "models" / "tree-survival"
    path.parent.mkdir()
    place(bundle_v1, path)
    return path


def version(client: TestClient) -> str:
    r = client.post("/v1/predictions", json={"instances": [schema.EXAMPLE]})
    assert r.status_code == 200
    return str(r.json()["model_version"])


def failures(client: TestClient) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("treesurv_model_reload_failures_total "):
            return float(line.split()[1])
    raise AssertionError("no failure counter")


def test_reload_needs_the_key(make_client: Any, model_dir: Path) -> None:
    client = make_client(model_dir)
    r = client.post("/v1/admin/reload")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/admin/reload", headers={"X-API-Key": "wrong"}).status_code == 401
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    assert client.post("/v1/admin/reload", headers=bearer).status_code == 200
    assert client.post("/v1/admin/reload", headers=AUTH).json()["status"] == "unchanged"


def test_key_from_a_file_and_disabled_admin(
    make_client: Any, model_dir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "key"
    secret.write_text("from-a-file\n")
    client = make_client(model_dir, api_key=None, api_key_file=secret)
    ok = client.post("/v1/admin/reload", headers={"X-API-Key": "from-a-file"})
    assert ok.status_code == 200
    disabled = make_client(model_dir, api_key=None)
    r = disabled.post("/v1/admin/reload", headers=AUTH)
    assert r.status_code == 403 and "disabled" in r.json()["detail"]


def test_good_bundle_is_swapped_in(
    make_client: Any, model_dir: Path, bundle_v2: Path, study: pd.DataFrame
) -> None:
    client = make_client(model_dir)
    assert version(client) == "1.0.0"
    place(bundle_v2, model_dir)
    assert version(client) == "1.0.0"  # nothing changes until the reload
    r = client.post("/v1/admin/reload", headers=AUTH)
    assert r.status_code == 200
    assert r.json() == {"status": "reloaded", "model_version": "2.0.0", "previous_version": "1.0.0"}
    rows = study.sample(50, random_state=5)
    got = client.post("/v1/predictions", json={"instances": instances(rows)}).json()
    _, compiled = load_verified(bundle_v2)
    assert got["model_version"] == "2.0.0"
    np.testing.assert_allclose(
        [p["death_probability"] for p in got["predictions"]],
        compiled.proba_columns(rows),
        atol=1e-12,
    )
    metrics = client.get("/metrics").text
    assert 'treesurv_model_info{name="tree-survival",version="2.0.0"} 1.0' in metrics
    assert 'version="1.0.0"' not in metrics


def test_tampered_bundle_is_refused_and_the_old_model_keeps_serving(
    make_client: Any, model_dir: Path, bundle_v2: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(model_dir)
    place(bundle_v2, model_dir, tamper=True)
    r = client.post("/v1/admin/reload", headers=AUTH)
    assert r.status_code == 409
    detail = r.json()["detail"]
    assert "predictor.npz does not match its sha256" in detail
    assert "still serving 1.0.0" in detail
    assert version(client) == "1.0.0"
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert "predictor.npz does not match" in ready.json()["last_reload_error"]
    assert failures(client) == 1
    assert any("bundle refused" in rec.getMessage() for rec in caplog.records)
    # A good bundle afterwards clears the error.
    place(bundle_v2, model_dir)
    assert client.post("/v1/admin/reload", headers=AUTH).status_code == 200
    assert client.get("/readyz").json()["last_reload_error"] is None


def wait_for(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_watcher_picks_up_a_new_bundle_and_refuses_a_tampered_one(
    make_client: Any, model_dir: Path, bundle_v1: Path, bundle_v2: Path
) -> None:
    client = make_client(model_dir, watch_interval=0.1)
    place(bundle_v2, model_dir)
    wait_for(lambda: client.get("/readyz").json()["model_version"] == "2.0.0")
    place(bundle_v1, model_dir, tamper=True)
    wait_for(lambda: failures(client) == 1)
    time.sleep(0.5)  # several polls: the same refused bundle is not retried in a loop
    assert failures(client) == 1
    assert version(client) == "2.0.0"
    place(bundle_v1, model_dir)
    wait_for(lambda: version(client) == "1.0.0")


def test_requests_in_flight_finish_on_the_model_they_started_with(
    make_client: Any, model_dir: Path, bundle_v1: Path, bundle_v2: Path, study: pd.DataFrame
) -> None:
    client = make_client(model_dir)
    rows = study.sample(300, random_state=8)  # large enough to be scored in a worker thread
    expected = {
        v: load_verified(b)[1].proba_columns(rows)
        for v, b in (("1.0.0", bundle_v1), ("2.0.0", bundle_v2))
    }
    body = {"instances": instances(rows)}
    answers: list[Any] = []
    stop = threading.Event()

    def post() -> None:
        while not stop.is_set():
            answers.append(client.post("/v1/predictions", json=body))

    threads = [threading.Thread(target=post) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(6):
            place(bundle_v2 if i % 2 == 0 else bundle_v1, model_dir)
            assert client.post("/v1/admin/reload", headers=AUTH).status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(answers) > 6
    seen = set()
    for r in answers:
        assert r.status_code == 200, r.text
        got = r.json()
        seen.add(got["model_version"])
        # The version it names is the model that computed every probability.
        probs = [p["death_probability"] for p in got["predictions"]]
        np.testing.assert_allclose(probs, expected[got["model_version"]], atol=1e-12)
    assert seen == {"1.0.0", "2.0.0"}
