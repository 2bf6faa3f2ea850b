"""A real `treesurv serve` at many times what its bounds let it hold: the overflow is
shed at once (503 with Retry-After, counted), the probes still answer, nothing times
out or is reset, and what is served is exact. Timings are in `bench/overload.py`."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import instances, serving
from treesurv.inference.bundle import load_verified

pytestmark = pytest.mark.slow

CLIENTS = 24  # each sends its batches back to back
BATCHES = 6


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples (with these labels) in a /metrics text."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@pytest.mark.parametrize(
    ("bounds", "reason"),
    [
        ({"max_queue": "2"}, "queue_full"),
        (
            {"max_queue": "1000", "max_pending_bytes": "1000000000", "queue_timeout": "0.02"},
            "queue_timeout",
        ),
    ],
    ids=["queue-full", "deadline"],
)
def test_overload_is_shed_and_probes_still_answer(
    bundle_four: Path, study: pd.DataFrame, tmp_path: Path, bounds: dict[str, str], reason: str
) -> None:
    _, compiled = load_verified(bundle_four)
    rows = study.head(1000)
    body = orjson.dumps({"instances": instances(rows)})
    expected = compiled.proba_columns(rows)
    answers: list[tuple[int, Any, Any]] = []
    probes: list[int] = []
    stop = threading.Event()

    with serving(bundle_four, tmp_path, max_concurrency="1", **bounds) as base:

        def client() -> None:
            with requests.Session() as session:
                for _ in range(BATCHES):
                    r = session.post(
                        f"{base}/v1/predictions",
                        data=body,
                        headers={"content-type": "application/json"},
                        timeout=60,
                    )
                    answers.append((r.status_code, r.headers, r.json()))

        def probe() -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    for path in ("/readyz", "/healthz", "/metrics"):
                        probes.append(session.get(base + path, timeout=30).status_code)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            with ThreadPoolExecutor(CLIENTS) as pool:
                for future in [pool.submit(client) for _ in range(CLIENTS)]:
                    future.result()  # a timeout or a reset fails the test here
        finally:
            stop.set()
            prober.join()
        text = requests.get(f"{base}/metrics", timeout=30).text

    assert len(answers) == CLIENTS * BATCHES
    statuses = [status for status, _, _ in answers]
    assert set(statuses) == {200, 503}, sorted(set(statuses))
    shed = [(headers, payload) for status, headers, payload in answers if status == 503]
    for headers, payload in shed:
        assert headers["Retry-After"] == "1"
        assert payload["reason"] == reason and "overloaded" in payload["detail"]
    for status, _, payload in answers:
        if status == 200:
            got = [p["death_probability"] for p in payload["predictions"]]
            np.testing.assert_allclose(got, expected, atol=1e-12)
    # Every shed request is counted, by its reason, and nothing is left held.
    assert metric(text, "treesurv_requests_shed_total", reason=reason) == len(shed)
    assert metric(text, "treesurv_requests_shed_total") == len(shed)
    assert metric(text, "treesurv_requests_in_flight") == 0
    assert metric(text, "treesurv_requests_queued") == 0
    # The probes answered throughout (GETs never wait behind the queue).
    assert probes and set(probes) == {200}
