"""`make bench`: the HTTP load comparison and the in-process figures, in one run.

Writes `bench/results.json` (the figures the docs' benchmark tables are generated
from) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import coldstart, inprocess, load, log_overhead, overload, workers

RESULTS = Path(__file__).with_name("results.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    http = load.run(args.rounds, args.duration, 16, load.DEFAULT_MODEL)
    print(load.report(http), flush=True)
    # 1,000-row batches, the largest request, where validation costs the most; raw
    # throughput, so the real server's admission bounds are lifted (the bare app has none).
    http_batch = load.run(
        args.rounds, args.duration, 16, load.DEFAULT_MODEL, rows=1000, env=overload.UNBOUNDED
    )
    print(load.report(http_batch), flush=True)
    cold = coldstart.run(max(5, args.rounds), load.DEFAULT_MODEL)
    print(coldstart.report(cold), flush=True)
    over = overload.run(15.0, 10.0, 4, load.DEFAULT_MODEL)
    print(overload.report(over), flush=True)
    local = inprocess.run(
        inprocess.ROOT / "models" / "tree-survival",
        inprocess.ROOT / "data" / "raw" / "Tree_Data.csv",
        inprocess.ROOT / "models" / "model.skops",
        args.rows,
        200_000,
    )
    print(inprocess.report(local))
    plog = log_overhead.run(max(4, args.rounds), 5.0, 16, load.DEFAULT_MODEL)
    print(log_overhead.report(plog))
    scaling = workers.run(2, 6.0, load.DEFAULT_MODEL)
    print(workers.report(scaling))
    # The long runs (soak, swaps, fuzz) are recorded by their own scripts: keep them.
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results |= {
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": len(__import__("os").sched_getaffinity(0)),
            "python": platform.python_version(),
        },
        "http": http,
        "http_batch": http_batch,
        "coldstart": cold,
        "overload": over,
        "inprocess": local,
        "prediction_log": plog,
        "workers": scaling,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
