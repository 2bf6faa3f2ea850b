"""Scaling with workers: the real service with one worker (uvicorn) and with two
(gunicorn with uvicorn workers), alternating, the same load generator and settings.

Single instances (the example seedling) and 1,000-row batches, so both the per-request
work and the model's own work are seen. The load generator runs on the same machine,
so on 2 cores it takes CPU from the workers it measures; the figures say what this
machine shows, not what two cores of a dedicated host would.

    python bench/workers.py [--rounds 3] [--duration 8] [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import load, overload  # noqa: E402
from bench.soak import record  # noqa: E402


def _measure(
    workers: int, body: str, rounds: int, duration: float, connections: int, model: Path
) -> dict[str, Any]:
    port = load.free_port()
    started = time.perf_counter()
    proc = load.start("real", port, model, overload.UNBOUNDED, workers=workers)
    full_speed = time.perf_counter() - started
    runs: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            script = load.wrk_script(Path(tmp), body)
            load.wrk(port, min(2.0, duration), connections, script)  # warm-up
            for _ in range(rounds):
                runs.append(load.wrk(port, duration, connections, script))
    finally:
        load.stop(proc)
    return {
        "workers": workers,
        "rps": statistics.median(r["rps"] for r in runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "full_speed_s": full_speed,
        "rounds": runs,
    }


def run(rounds: int, duration: float, model: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"cpus": len(os.sched_getaffinity(0)), "generator": "wrk (1 thread)"}
    for name, body, connections in (
        ("single", load.BODY, 64),
        ("batch_1000", load.batch_body(1000), 16),
    ):
        # Alternate which count runs first, so neither always gets the warmer machine.
        one: list[dict[str, Any]] = []
        two: list[dict[str, Any]] = []
        for r in range(rounds):
            order = (1, 2) if r % 2 == 0 else (2, 1)
            for workers in order:
                got = _measure(workers, body, 1, duration, connections, model)
                (one if workers == 1 else two).append(got)
        out[name] = {
            "connections": connections,
            "one": {"rps": statistics.median(x["rps"] for x in one), "runs": one},
            "two": {"rps": statistics.median(x["rps"] for x in two), "runs": two},
        }
        out[name]["ratio"] = out[name]["two"]["rps"] / out[name]["one"]["rps"]
    return out


def report(r: dict[str, Any]) -> str:
    lines = [f"Workers on {r['cpus']} cores, {r['generator']} on the same machine:"]
    for name in ("single", "batch_1000"):
        s = r[name]
        lines.append(
            f"  {name}: 1 worker {s['one']['rps']:.0f} req/s, 2 workers "
            f"{s['two']['rps']:.0f} req/s, ratio {s['ratio']:.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--model", type=Path, default=load.DEFAULT_MODEL)
    parser.add_argument("--record", action="store_true", help="Write into bench/results.json.")
    args = parser.parse_args()
    result = run(args.rounds, args.duration, args.model)
    print(report(result))
    if args.record:
        record("workers", result)


if __name__ == "__main__":
    main()
