"""What logging every prediction costs, measured side by side in one run.

    .venv/bin/python bench/prediction_log.py [--model models/tree-survival] [--n 20000]

1. `PredictionLog.record()` alone: microseconds per call, the writer thread running
   and writing real JSON Lines files to a temporary directory.
2. A request's in-process work — one instance scored by the compiled predictor —
   with and without `record()`, alternated in rounds so both see the same machine
   state; the ratio is the in-process overhead of logging.
3. How many lines per second the writer sustains (so the queue does not overflow).

The issue's target (< 5% of the service's throughput) is measured through the real
HTTP app once the service is merged; this isolates the part the log adds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from treesurv.core import schema
from treesurv.inference.bundle import load_verified
from treesurv.monitoring.prediction_log.queue import PredictionLog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/tree-survival"))
    parser.add_argument("--n", type=int, default=20_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bundle, compiled = load_verified(args.model)
    instance = dict(schema.EXAMPLE)
    columns = {k: [v] for k, v in instance.items()}
    compiled.proba_columns(columns)  # compile the kernels before timing

    with tempfile.TemporaryDirectory() as tmp:
        plog = PredictionLog(Path(tmp) / "log", max_queue=1_000_000)

        def predict_only() -> float:
            start = time.process_time()
            for _ in range(args.n):
                compiled.proba_columns(columns)
            return time.process_time() - start

        def predict_and_log() -> float:
            # CPU time of the whole process: the writer thread's encoding and I/O
            # are counted too (flushed before the clock stops).
            start = time.process_time()
            for i in range(args.n):
                p = compiled.proba_columns(columns)
                plog.record(str(i), bundle.version, [instance], [float(p[0])], 0.001)
            plog.flush(60)
            return time.process_time() - start

        def record_only() -> float:
            start = time.perf_counter()
            for i in range(args.n):
                plog.record(str(i), bundle.version, [instance], [0.5], 0.001)
            return time.perf_counter() - start

        base, logged, rec = [], [], []
        for _ in range(args.rounds):
            base.append(predict_only())
            logged.append(predict_and_log())
            rec.append(record_only())
            plog.flush(60)
        start = time.perf_counter()
        burst = 100_000
        for i in range(burst):
            plog.record(str(i), bundle.version, [instance], [0.5], 0.001)
        queued = time.perf_counter()
        plog.flush(120)
        written = time.perf_counter()
        plog.close()
        stats = plog.stats()

    per = 1e6 / args.n
    b, lg, r = statistics.median(base), statistics.median(logged), statistics.median(rec)
    print(f"record() alone:               {r * per:7.2f} µs/call (median of {args.rounds} rounds)")
    print(f"one prediction, CPU:          {b * per:7.2f} µs")
    print(f"one prediction + log, CPU:    {lg * per:7.2f} µs  ({(lg / b - 1) * 100:+.1f}%)")
    cost = (lg - b) * per
    print(
        f"writer: {burst} lines queued in {queued - start:.2f}s, written in "
        f"{written - start:.2f}s -> {burst / (written - start):,.0f} lines/s"
    )
    print(f"logged {stats.logged}, dropped {stats.dropped}, write errors {stats.write_errors}")
    budget = 1e6 / 1200  # µs per request of the bare FastAPI endpoint here (BRIEF: ~1,200/s)
    print(
        f"logging CPU per prediction {cost:.1f} µs = {cost / budget * 100:.1f}% of a "
        f"{budget:.0f} µs request of the bare endpoint; record() on the request path "
        f"{r * per / budget * 100:.2f}%"
    )


if __name__ == "__main__":
    main()
