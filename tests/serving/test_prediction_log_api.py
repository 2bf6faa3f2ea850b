"""The prediction log inside the real app: every endpoint, request ids, failing disks,
the drift gauges. The app runs with its lifespan (log opened at startup, flushed at
shutdown); the log files are read back with the same reader as the drift job."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.helpers import OIP_MODEL as MODEL
from tests.helpers import instances, tensors
from treesurv.core import schema
from treesurv.monitoring.prediction_log.lines import RotatingJsonlSink
from treesurv.monitoring.prediction_log.queue import ERRORS_METRIC
from treesurv.monitoring.prediction_log.reader import read_log
from treesurv.serving.app import create_app
from treesurv.serving.settings import Settings


@contextmanager
def app_client(model_dir: Path, **settings: Any) -> Iterator[TestClient]:
    app = create_app(Settings(model_dir=model_dir, watch_interval=0, **settings))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def sample_value(client: TestClient, name: str, labels: str = "") -> float | None:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.split()[-1])
    return None


def wait_for(client: TestClient, name: str, value: float, timeout: float = 10) -> float | None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = sample_value(client, name)
        if seen == value:
            break
        time.sleep(0.02)
    return seen


def test_every_prediction_endpoint_is_logged_with_its_request_id(
    bundle_v1: Path, study: pd.DataFrame, tmp_path: Path
) -> None:
    rows = instances(study.sample(6, random_state=3))
    log_dir = tmp_path / "predictions"
    before = datetime.now(UTC)
    with app_client(bundle_v1, prediction_log_dir=log_dir) as client:
        v1 = client.post(
            "/v1/predictions", json={"instances": rows[:3]}, headers={"X-Request-ID": "client-42"}
        )
        legacy = client.post("/v1/predic", json=rows[3])
        v2 = client.post(f"{MODEL}/infer", json={"inputs": tensors(rows[4:])})
        bad = client.post("/v1/predictions", json={"instances": [{**rows[0], "Soil": "Mars"}]})
        odd = client.post(
            "/v1/predictions", json={"instances": rows[:1]}, headers={"X-Request-ID": "a b"}
        )
        assert [r.status_code for r in (v1, legacy, v2, bad, odd)] == [200, 200, 200, 422, 200]
        # Every answer carries an id: the client's, or a new one (also on errors).
        assert v1.headers["x-request-id"] == "client-42"
        ids = [r.headers["x-request-id"] for r in (legacy, v2, bad, odd)]
        assert len(set(ids)) == 4 and "a b" not in ids and all(ids)
    # The client is closed: the lifespan flushed and closed the log.
    read = read_log(log_dir)
    frame = read.frame
    assert read.bad_lines == 0 and len(frame) == 3 + 1 + 2 + 1
    assert frame["request_id"].tolist() == ["client-42"] * 3 + [ids[0]] + [ids[1]] * 2 + [ids[3]]
    assert frame["item"].tolist() == [0, 1, 2, 0, 0, 1, 0]
    assert set(frame["model_version"]) == {"1.0.0"}
    expected = [p["death_probability"] for p in v1.json()["predictions"]]
    expected.append(None)  # /v1/predic answers only the event; compare below
    expected += v2.json()["outputs"][0]["data"]
    logged = frame["death_probability"].tolist()
    assert logged[:3] == expected[:3] and logged[4:6] == expected[4:6]
    threshold = client.app.state.model.current.bundle.threshold  # type: ignore[attr-defined]
    assert (logged[3] >= threshold) == (legacy.json()["Event"] == 1.0)
    for i, row in enumerate(rows[:6]):
        for name in schema.FEATURE_NAMES:
            got = frame[name].iloc[i]
            if row[name] is None:
                assert pd.isna(got), (i, name)
            else:
                assert got == row[name], (i, name)
    assert (frame["latency_ms"] > 0).all()
    assert (frame["time"] >= pd.Timestamp(before)).all()


def test_log_is_off_unless_configured(
    bundle_v1: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TREESURV_PREDICTION_LOG_DIR", "")
    assert Settings().prediction_log_dir is None  # empty turns it off
    monkeypatch.setenv("TREESURV_PREDICTION_LOG_DIR", str(tmp_path / "x"))
    assert Settings().prediction_log_dir == tmp_path / "x"
    monkeypatch.delenv("TREESURV_PREDICTION_LOG_DIR")
    monkeypatch.chdir(tmp_path)
    with app_client(bundle_v1) as client:
        r = client.post("/v1/predictions", json={"instances": [schema.EXAMPLE]})
        assert r.status_code == 200 and r.headers["x-request-id"]
        assert client.app.state.prediction_log.current is None  # type: ignore[attr-defined]
        assert sample_value(client, "treesurv_prediction_log_records_total") is None
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere


def test_log_survives_a_second_lifespan(bundle_v1: Path, tmp_path: Path) -> None:
    app = create_app(Settings(model_dir=bundle_v1, watch_interval=0, prediction_log_dir=tmp_path))
    for _ in range(2):
        with TestClient(app) as client:
            assert client.post("/v1/predic", json=schema.EXAMPLE).status_code == 200
            assert wait_for(client, "treesurv_prediction_log_records_total", 1.0) == 1.0
    assert len(read_log(tmp_path).frame) == 2


def failing_log(
    client: TestClient, caplog: pytest.LogCaptureFixture, requests: int
) -> list[logging.LogRecord]:
    """Send requests while the log cannot write; every one must be answered."""
    with caplog.at_level(logging.INFO, logger="treesurv"):
        for i in range(requests):
            r = client.post("/v1/predictions", json={"instances": [schema.EXAMPLE] * 2})
            assert r.status_code == 200, r.text
            assert len(r.json()["predictions"]) == 2
            if i == 0:  # let the writer fail once before the rest arrive
                assert wait_for(client, "treesurv_prediction_log_write_errors_total", 2.0) == 2
        assert wait_for(client, ERRORS_METRIC, 2.0 * requests) == 2.0 * requests
    assert sample_value(client, "treesurv_prediction_log_records_total") == 0
    assert sample_value(client, "treesurv_prediction_log_dropped_total") == 0
    return [
        r for r in caplog.records if r.name.startswith("treesurv") and r.levelno >= logging.WARNING
    ]


def test_unwritable_log_directory_keeps_predictions_working(
    bundle_v1: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A directory below a regular file cannot be created, even by root.
    blocker = tmp_path / "volume"
    blocker.write_text("a file where the log volume should be")
    with app_client(bundle_v1, prediction_log_dir=blocker / "predictions") as client:
        problems = failing_log(client, caplog, 25)
    (record,) = problems  # logged once, not per request
    assert record.levelno == logging.ERROR and "Not a directory" in record.getMessage()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_keeps_predictions_working(
    bundle_v1: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def dev_full(self: RotatingJsonlSink, path: Path) -> BinaryIO:
        return open("/dev/full", "wb")  # every write fails with a real ENOSPC

    monkeypatch.setattr(RotatingJsonlSink, "_open", dev_full)
    # The sink runs in this process (the thread writer) to be patched; the writer
    # process meets a failing disk the same way (tests/monitoring/test_log_writer.py).
    with app_client(
        bundle_v1, prediction_log_dir=tmp_path, prediction_log_writer="thread"
    ) as client:
        problems = failing_log(client, caplog, 25)
        # The disk is freed: logging resumes by itself, and says so once.
        monkeypatch.undo()
        r = client.post("/v1/predictions", json={"instances": [schema.EXAMPLE]})
        assert r.status_code == 200
        assert wait_for(client, "treesurv_prediction_log_records_total", 1.0) == 1.0
    (record,) = problems
    assert "No space left on device" in record.getMessage()
    resumed = [r for r in caplog.records if "writing again" in r.getMessage()]
    assert len(resumed) == 1 and "50 prediction(s) were lost" in resumed[0].getMessage()
    assert read_log(tmp_path).frame["request_id"].tolist() == [r.headers["x-request-id"]]


def test_drift_report_is_shown_as_gauges(bundle_v1: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "reports" / "drift.json"
    with app_client(bundle_v1, drift_report=report_path) as client:
        assert sample_value(client, "treesurv_drift_detected") is None  # no report yet
        report_path.parent.mkdir()
        report_path.write_text(
            json.dumps(
                {
                    "generated": datetime.now(UTC).isoformat(),
                    "status": "drift",
                    "drift_detected": True,
                    "rows": 1234,
                    "features": {
                        "Light_ISF": {"psi": 0.61, "p_value": 1e-9, "drifted": True},
                        "NSC": {"psi": 0.01, "p_value": 0.7, "drifted": False},
                    },
                    "prediction": {"psi": 0.3, "p_value": 1e-5, "drifted": True},
                }
            )
        )
        assert sample_value(client, "treesurv_drift_detected") == 1.0
        assert sample_value(client, "treesurv_drift_rows") == 1234.0
        assert sample_value(client, "treesurv_drift_psi", '{feature="Light_ISF"}') == 0.61
        assert sample_value(client, "treesurv_drift_flagged", '{feature="NSC"}') == 0.0
