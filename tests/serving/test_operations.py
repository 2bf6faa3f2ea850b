"""GET /v1/model, /healthz, /readyz, /metrics and the OpenAPI docs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from treesurv.core import schema


def test_model_info(client: TestClient) -> None:
    r = client.get("/v1/model")
    assert r.status_code == 200
    info = r.json()
    assert info["name"] == "tree-survival" and info["version"] == "1.0.0"
    assert info["metrics"] == {"test": {"roc_auc": 0.9}}
    assert info["decision_threshold"] == 0.5
    assert info["card"].startswith("# Test model 1.0.0")
    features = {f["name"]: f for f in info["schema"]["features"]}
    assert features["Soil"]["categories"] == list(schema.SOIL_SOURCES)
    assert features["EMF"]["nullable"] is True
    assert info["manifest"]["files"]["predictor.npz"]["sha256"]


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model_version": "1.0.0", "last_reload_error": None}


def test_without_a_model_the_process_stays_up_and_says_why(
    make_client: Any, tmp_path: Path
) -> None:
    client = make_client(tmp_path / "nothing-here")
    assert client.get("/healthz").status_code == 200
    r = client.get("/readyz")
    assert r.status_code == 503
    assert "no model bundle here" in r.json()["reason"]
    p = client.post("/v1/predictions", json={"instances": [schema.EXAMPLE]})
    assert p.status_code == 503 and "not ready" in p.json()["detail"]
    assert client.get("/v1/model").status_code == 503
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/v2/health/live").status_code == 200
    metrics = client.get("/metrics").text
    assert "treesurv_model_reload_failures_total 1.0" in metrics


def _sample(text: str, metric: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(metric) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{metric} {labels} not in metrics")


def test_metrics(client: TestClient) -> None:
    client.post("/v1/predictions", json={"instances": [schema.EXAMPLE] * 3})
    client.post("/v1/predictions", json={"instances": []})
    client.post("/v1/predic", json=schema.EXAMPLE)
    client.get("/no/such/path")
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    req = "treesurv_http_requests_total"
    assert _sample(text, req, route="/v1/predictions", method="POST", status="200") == 1
    assert _sample(text, req, route="/v1/predictions", method="POST", status="422") == 1
    assert _sample(text, req, route="/v1/predic", status="200") == 1
    assert _sample(text, req, route="unmatched", status="404") == 1
    count = "treesurv_http_request_duration_seconds_count"
    assert _sample(text, count, route="/v1/predictions", status="200") == 1
    assert _sample(text, "treesurv_predicted_death_probability_count") == 4
    assert _sample(text, "treesurv_predicted_death_probability_bucket", le="1.0") == 4
    assert _sample(text, "treesurv_predictions_total", endpoint="v1") == 3
    assert _sample(text, "treesurv_model_info", name="tree-survival", version="1.0.0") == 1
    assert _sample(text, "treesurv_model_reload_failures_total") == 0
    assert re.search(r"^treesurv_model_reloads_total 1\.0$", text, re.M)


def test_openapi_docs(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/predictions", "/v1/predic", "/v1/model", "/healthz", "/readyz"):
        assert path in paths
    assert paths["/v1/predic"]["post"]["deprecated"] is True
    body = paths["/v1/predictions"]["post"]["requestBody"]["content"]["application/json"]
    example = next(iter(body["examples"].values()))["value"]
    assert example == {"instances": [schema.EXAMPLE]}
    # The documented example is a working request.
    assert client.post("/v1/predictions", json=example).status_code == 200
    schemas = spec["components"]["schemas"]
    assert schemas["PredictionRequest"]["properties"]["instances"]["maxItems"] == 1000
    assert schemas["Instance"]["properties"]["Species"]["enum"] == list(schema.SPECIES)
    assert schemas["Instance"]["additionalProperties"] is False


def test_opentelemetry_hook_is_a_setting(tmp_path: Path) -> None:
    """FastAPI's native OpenTelemetry hook is off by default (it costs a lookup of the
    global providers on every request) and `TREESURV_OPENTELEMETRY=true` turns it on."""
    from treesurv.serving.app import create_app
    from treesurv.serving.settings import Settings

    # The config FastAPI keeps is private; it is the one thing this setting changes.
    off = create_app(Settings(model_dir=tmp_path, watch_interval=0))
    assert not any(off._telemetry[s] for s in ("tracing", "metrics", "logs"))
    on = create_app(Settings(model_dir=tmp_path, watch_interval=0, opentelemetry=True))
    assert all(on._telemetry[s] for s in ("tracing", "metrics", "logs"))


def test_a_batch_fills_the_histogram_as_one_observation_per_value_does() -> None:
    import numpy as np

    from treesurv.serving.metrics import BULK_MIN, Metrics

    values = np.random.default_rng(5).random(1000).tolist()
    values[:5] = [0.0, 1.0, 0.1, 0.5, 0.95]  # on and at the bucket bounds
    one_by_one, bulk = Metrics(), Metrics()
    for v in values:
        one_by_one.observe_predictions("v1", [v])
    assert len(values) >= BULK_MIN
    bulk.observe_predictions("v1", values)
    name = "treesurv_predicted_death_probability"
    expected, got = one_by_one.render().decode(), bulk.render().decode()
    counts = [x for x in expected.splitlines() if x.startswith((f"{name}_bucket", f"{name}_count"))]
    assert len(counts) > 5
    assert set(counts) <= set(got.splitlines())
    assert _sample(got, f"{name}_sum") == pytest.approx(sum(values), rel=1e-12)
    assert _sample(got, "treesurv_predictions_total", endpoint="v1") == 1000
