"""Short runs of bench/soak.py against the real server process on the pipeline's bundle:
steady mixed load with zero errors and flat memory, and twenty model swaps under
load (tampered bundles in between) without a failed request. The long figures come
from `python bench/soak.py soak|swaps --record`."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import soak

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_steady_load_has_no_errors_and_flat_memory(bundle_dir: Path) -> None:
    duration, rate = 25.0, 150.0
    summary = soak.soak(bundle_dir, duration, rate, batch_share=0.1, batch_size=50, warmup=8.0)
    assert summary["errors"] == 0, summary["first_errors"]
    # The generator kept the rate (open loop): every scheduled request was sent.
    assert summary["requests"] == int(duration * rate)
    assert summary["batches"] > 0 and summary["instances"] > summary["requests"]
    memory = summary["memory"]
    assert memory["samples"] >= 20
    assert memory["growth"] < 0.10, memory


def test_twenty_swaps_under_load_drop_nothing_and_never_serve_a_tampered_bundle(
    bundle_dir: Path,
) -> None:
    good = ("1.0.0", "1.1.0")
    summary = soak.swaps(bundle_dir, 20, 100.0, versions=good, tampered_version="9.9.9-bad")
    assert summary["errors"] == 0, summary["first_errors"]
    assert summary["requests"] > 200
    # Both good versions answered, and only they did: the tampered one never served.
    assert set(summary["versions"]) == set(good), summary["versions"]
    assert summary["tampered_served"] == 0
    # 20 swaps, half through the admin API and half through the watcher.
    assert [s["to"] for s in summary["swap_log"]] == [good[(i + 1) % 2] for i in range(20)]
    assert {s["by"] for s in summary["swap_log"]} == {"admin", "watcher"}
    # Every tampered bundle was refused, counted in /metrics and logged.
    assert summary["reload_failures_metric"] >= 20
    assert summary["refusals_logged"] >= 20
    assert summary["reloads_metric"] == 21  # the first load and the twenty swaps
