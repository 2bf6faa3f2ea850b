"""Cold start: from exec to the first 200 of the readiness probe, the real service
against the bare FastAPI app, alternating, one uvicorn worker each.

For the real service the clock stops at `/readyz` 200 (a verified model answers, exactly,
through a NumPy walk of its trees) and, separately, when its Numba kernels are compiled
(`treesurv_kernels_compiled 1`, full speed). For the bare app it stops at the first 200
of `/openapi.json`. Each start is a fresh process; ten polls a second would hide
differences, so the probe asks every 10 ms.

    python bench/coldstart.py [--rounds 5] [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import load  # noqa: E402
from bench.soak import record  # noqa: E402


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _compiled(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=1) as r:
            return b"\ntreesurv_kernels_compiled 1.0" in r.read()
    except OSError:
        return False


def start_once(kind: str, model: Path) -> dict[str, float]:
    port = load.free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TREESURV_WATCH_INTERVAL": "0"}
    if kind == "real":
        cmd = [str(load.BIN / "treesurv"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--model", str(model)]
        ready = f"{base}/readyz"
    else:
        cmd = [sys.executable, "-c", load.BARE.format(port=port)]
        ready = f"{base}/openapi.json"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while not _ok(ready):
            if proc.poll() is not None or time.perf_counter() - t0 > 120:
                raise RuntimeError(f"{kind} server did not become ready")
            time.sleep(0.01)
        out = {"ready_s": time.perf_counter() - t0}
        if kind == "real":
            while not _compiled(base):
                if time.perf_counter() - t0 > 120:
                    raise RuntimeError("kernels not compiled within 120 s")
                time.sleep(0.02)
            out["full_speed_s"] = time.perf_counter() - t0
        return out
    finally:
        load.stop(proc)


def run(rounds: int, model: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {"real": [], "bare": []}
    for r in range(rounds):
        for kind in ("real", "bare") if r % 2 == 0 else ("bare", "real"):
            runs[kind].append(start_once(kind, model))
    real_ready = statistics.median(x["ready_s"] for x in runs["real"])
    bare_ready = statistics.median(x["ready_s"] for x in runs["bare"])
    return {
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "rounds": rounds,
        "real_ready_s": real_ready,
        "real_full_speed_s": statistics.median(x["full_speed_s"] for x in runs["real"]),
        "bare_ready_s": bare_ready,
        "ratio": real_ready / bare_ready,
        "runs": runs,
    }


def report(summary: dict[str, Any]) -> str:
    return (
        f"Cold start, median of {summary['rounds']}: treesurv ready in "
        f"{summary['real_ready_s']:.2f} s (full speed {summary['real_full_speed_s']:.2f} s), "
        f"bare app {summary['bare_ready_s']:.2f} s, ratio {summary['ratio']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", type=Path, default=load.DEFAULT_MODEL)
    parser.add_argument("--record", action="store_true", help="Merge into bench/results.json.")
    args = parser.parse_args()
    summary = run(args.rounds, args.model)
    print(report(summary))
    if args.record:
        record("coldstart", summary)


if __name__ == "__main__":
    main()
