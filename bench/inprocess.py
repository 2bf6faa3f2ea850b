"""In-process speed: one prediction, batches, and a 1-million-row file.

- single: `FastPredictor.predict_one` on every valid row of the study (median, p99),
  beside scikit-learn's `predict_proba` on a one-row DataFrame (the original API);
- batch: rows/s of the compiled model against the sklearn pipeline's raw
  `predict_proba`, on the same in-memory rows;
- file: `treesurv predict` on a CSV of N rows resampled from the study (written to
  a temporary directory, never kept), wall time per row and peak RSS, against raw
  `predict_proba` per row.

    python bench/inprocess.py [--rows 1000000] [--sklearn-rows 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "src"))

from treesurv import data, schema  # noqa: E402
from treesurv.bundle import load_verified  # noqa: E402
from treesurv.predictor import FastPredictor  # noqa: E402


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    records = frame[list(schema.FEATURE_NAMES)].to_dict("records")
    return [{k: (None if schema.is_missing(v) else v) for k, v in r.items()} for r in records]


def single(fast: FastPredictor, pipeline: Any, frame: pd.DataFrame, repeat: int) -> dict[str, Any]:
    rows = _rows(frame)
    for row in rows[:200]:
        fast.predict_one(row)
    times = []
    for _ in range(repeat):
        for row in rows:
            t = time.perf_counter_ns()
            fast.predict_one(row)
            times.append(time.perf_counter_ns() - t)
    out = {
        "rows": len(rows),
        "calls": len(times),
        "median_us": statistics.median(times) / 1e3,
        "p99_us": float(np.percentile(times, 99)) / 1e3,
    }
    if pipeline is not None:
        sk = []
        for i in range(min(200, len(frame))):
            one = frame.iloc[[i]]
            t = time.perf_counter_ns()
            pipeline.predict_proba(one)
            sk.append(time.perf_counter_ns() - t)
        out["sklearn_one_row_dataframe_median_us"] = statistics.median(sk) / 1e3
    return out


def resampled(frame: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    idx = np.random.default_rng(seed).integers(0, len(frame), n)
    return frame.iloc[idx].reset_index(drop=True)


def batch(compiled: Any, pipeline: Any, clean: pd.DataFrame, n: int) -> dict[str, Any]:
    rows = resampled(clean, n)
    compiled.proba_columns(rows.head(4096))  # compile/load the kernels first
    t = time.perf_counter()
    ours = compiled.proba_columns(rows)
    ours_s = time.perf_counter() - t
    out: dict[str, Any] = {"rows": n, "compiled_rows_per_s": n / ours_s}
    if pipeline is not None:
        t = time.perf_counter()
        theirs = pipeline.predict_proba(rows)[:, 1]
        sk_s = time.perf_counter() - t
        out["sklearn_rows_per_s"] = n / sk_s
        out["speedup"] = sk_s / ours_s
        out["max_abs_diff"] = float(np.max(np.abs(ours - theirs)))
    return out


def file_scoring(raw: pd.DataFrame, model: Path, n: int, tmp: Path) -> dict[str, Any]:
    """`treesurv predict` on a resampled CSV of n rows: wall time and peak RSS."""
    src, dst = tmp / "big.csv", tmp / "big_scored.csv"
    resampled(raw, n, seed=1).to_csv(src, index=False)
    size = src.stat().st_size
    cmd = [str(BIN / "treesurv"), "predict", str(src), "-o", str(dst), "--model", str(model), "-q"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"treesurv predict failed: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    with dst.open() as fh:
        lines = sum(1 for _ in fh) - 1
    if lines != n:
        raise RuntimeError(f"expected {n} scored rows, found {lines}")
    return {
        "rows": n,
        "input_mib": size / 2**20,
        "seconds": elapsed,
        "us_per_row": elapsed / n * 1e6,
        "rows_per_s": n / elapsed,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux: kilobytes
    }


def sklearn_per_row(pipeline: Any, raw: pd.DataFrame, n: int) -> float:
    """Raw predict_proba on n resampled, already-parsed rows: microseconds per row."""
    rows, _ = data.validate(resampled(raw, n, seed=1), "bench", data.SCORING)
    t = time.perf_counter()
    pipeline.predict_proba(rows)
    return (time.perf_counter() - t) / n * 1e6


def run(
    model: Path,
    raw_csv: Path,
    sklearn_model: Path | None,
    rows: int,
    sk_rows: int,
    repeat: int = 20,
) -> dict[str, Any]:
    bundle, compiled = load_verified(model)
    fast = FastPredictor(compiled)
    raw = pd.read_csv(raw_csv, dtype=str, keep_default_na=False)
    clean, _ = data.validate(data.read_table(raw_csv), "study", data.SCORING)
    pipeline = None
    if sklearn_model is not None and sklearn_model.exists():
        from treesurv.pipeline import load_pipeline

        pipeline = load_pipeline(sklearn_model)
    out: dict[str, Any] = {"model_version": bundle.version}
    out["single"] = single(fast, pipeline, clean, repeat)
    out["batch"] = batch(compiled, pipeline, clean, min(sk_rows, rows))
    # Raw predict_proba is timed just before and just after the file run (the
    # machine is shared: the mean of both is the fair reference).
    before = sklearn_per_row(pipeline, raw, min(sk_rows, rows)) if pipeline is not None else None
    with tempfile.TemporaryDirectory(prefix="treesurv-bench-") as tmp:
        out["file"] = file_scoring(raw, model, rows, Path(tmp))
    if pipeline is not None and before is not None:
        after = sklearn_per_row(pipeline, raw, min(sk_rows, rows))
        us = (before + after) / 2
        out["file"]["sklearn_predict_proba_us_per_row"] = us
        out["file"]["sklearn_predict_proba_us_per_row_before_after"] = [before, after]
        out["file"]["speedup_vs_sklearn"] = us / out["file"]["us_per_row"]
    return out


def report(r: dict[str, Any]) -> str:
    s, b, f = r["single"], r["batch"], r["file"]
    lines = [
        f"one prediction (FastPredictor.predict_one, {s['calls']} calls on {s['rows']} real rows):"
        f" median {s['median_us']:.1f} µs, p99 {s['p99_us']:.1f} µs",
    ]
    if "sklearn_one_row_dataframe_median_us" in s:
        lines.append(
            f"  sklearn predict_proba on a one-row DataFrame: median "
            f"{s['sklearn_one_row_dataframe_median_us'] / 1000:.2f} ms"
        )
    lines.append(
        f"batch in memory ({b['rows']} rows): compiled {b['compiled_rows_per_s']:,.0f} rows/s"
    )
    if "sklearn_rows_per_s" in b:
        lines.append(
            f"  sklearn predict_proba {b['sklearn_rows_per_s']:,.0f} rows/s "
            f"(compiled x{b['speedup']:.1f}; max |diff| {b['max_abs_diff']:.1e})"
        )
    lines.append(
        f"file: treesurv predict, {f['rows']:,} rows CSV ({f['input_mib']:.0f} MiB): "
        f"{f['seconds']:.1f} s, {f['us_per_row']:.1f} µs/row, peak RSS {f['peak_rss_mib']:.0f} MiB"
    )
    if "sklearn_predict_proba_us_per_row" in f:
        lines.append(
            f"  raw sklearn predict_proba ({min(f['rows'], 200_000):,} of the same rows, timed "
            f"before and after): {f['sklearn_predict_proba_us_per_row']:.1f} µs/row "
            f"(file scoring x{f['speedup_vs_sklearn']:.2f} as fast per row)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "tree-survival")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "raw" / "Tree_Data.csv")
    parser.add_argument("--sklearn-model", type=Path, default=ROOT / "models" / "model.skops")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sklearn-rows", type=int, default=200_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.model, args.data, args.sklearn_model, args.rows, args.sklearn_rows)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
