"""A one-second run of the HTTP benchmark: both apps start, answer, and nothing fails.
(The figures themselves come from `make bench`, not from tests.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, run

pytestmark = pytest.mark.slow


def test_load_benchmark_runs_without_errors(bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    args = ["--rounds", "1", "--duration", "1", "--model", str(bundle_dir), "--json", str(out)]
    proc = run([sys.executable, str(ROOT / "bench" / "load.py"), *args], ROOT, timeout=300)
    assert "ratio real/bare" in proc.stdout
    summary = json.loads(out.read_text())
    for kind in ("real", "bare"):
        assert summary[kind]["errors"] == 0
        assert summary[kind]["requests"] > 0 and summary[kind]["rps"] > 0
    assert summary["ratio"] > 0
