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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "src"))

from treesurv.core import schema  # noqa: E402
from treesurv.core.files import read_table  # noqa: E402
from treesurv.core.validation import SCORING, validate  # noqa: E402
from treesurv.inference.bundle import load_verified  # noqa: E402
from treesurv.inference.predictor import FastPredictor  # noqa: E402


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    # The columns are the features' names: str keys (pandas-stubs type them Hashable).
    records = cast(list[dict[str, Any]], frame[list(schema.FEATURE_NAMES)].to_dict("records"))
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


def _peak_rss_kib(pid: int) -> int:
    """VmHWM: the peak resident set of the running process (after its exec)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def file_scoring(src: Path, model: Path, n: int) -> dict[str, Any]:
    """`treesurv predict` on a CSV of n rows: wall and CPU time per row, peak RSS."""
    dst = src.with_name("scored.csv")
    cmd = [str(BIN / "treesurv"), "predict", str(src), "-o", str(dst), "--model", str(model), "-q"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=src.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _peak_rss_kib(proc.pid))
        time.sleep(0.05)
    elapsed = time.perf_counter() - t
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"treesurv predict failed: {err.decode()[-2000:]}")
    with dst.open() as fh:
        lines = sum(1 for _ in fh) - 1
    if lines != n:
        raise RuntimeError(f"expected {n} scored rows, found {lines}")
    dst.unlink()
    return {"seconds": elapsed, "us_per_row": elapsed / n * 1e6, "peak_rss_mib": peak / 1024}


def sklearn_per_row(pipeline: Any, rows: pd.DataFrame) -> tuple[float, float]:
    """Raw predict_proba on parsed rows: (wall, CPU) microseconds per row."""
    cpu = time.process_time()
    t = time.perf_counter()
    pipeline.predict_proba(rows)
    wall = time.perf_counter() - t
    return wall / len(rows) * 1e6, (time.process_time() - cpu) / len(rows) * 1e6


def file_vs_sklearn(
    raw: pd.DataFrame,
    clean: pd.DataFrame,
    model: Path,
    pipeline: Any,
    n: int,
    sk_rows: int,
    repeats: int,
    tmp: Path,
) -> dict[str, Any]:
    """File scoring and raw predict_proba, alternated `repeats` times (the machine is
    shared: medians of runs taken side by side are the fair comparison)."""
    src = tmp / "big.csv"
    resampled(raw, n, seed=1).to_csv(src, index=False)
    # The same resampled rows (the first sk_rows of the file), parsed and typed.
    rows = resampled(clean, min(sk_rows, n), seed=1) if pipeline is not None else None
    files, walls, cpus = [], [], []
    for _ in range(repeats):
        if rows is not None:
            wall, cpu = sklearn_per_row(pipeline, rows)
            walls.append(wall)
            cpus.append(cpu)
        files.append(file_scoring(src, model, n))
    out: dict[str, Any] = {
        "rows": n,
        "input_mib": src.stat().st_size / 2**20,
        "runs": files,
        "us_per_row": statistics.median(f["us_per_row"] for f in files),
        "seconds": statistics.median(f["seconds"] for f in files),
        "peak_rss_mib": max(f["peak_rss_mib"] for f in files),
    }
    out["rows_per_s"] = 1e6 / out["us_per_row"]
    if walls:
        out["sklearn_rows"] = len(rows) if rows is not None else 0
        out["sklearn_predict_proba_us_per_row"] = statistics.median(walls)
        out["sklearn_predict_proba_cpu_us_per_row"] = statistics.median(cpus)
        out["sklearn_runs_us_per_row"] = walls
        out["speedup_vs_sklearn"] = out["sklearn_predict_proba_us_per_row"] / out["us_per_row"]
    return out


def run(
    model: Path,
    raw_csv: Path,
    sklearn_model: Path | None,
    rows: int,
    sk_rows: int,
    repeat: int = 20,
    repeats: int = 3,
) -> dict[str, Any]:
    bundle, compiled = load_verified(model)
    fast = FastPredictor(compiled)
    raw = pd.read_csv(raw_csv, dtype=str, keep_default_na=False)
    clean, _ = validate(read_table(raw_csv), "study", SCORING)
    pipeline = None
    if sklearn_model is not None and sklearn_model.exists():
        from treesurv.training.stages import load_pipeline

        pipeline = load_pipeline(sklearn_model)
    out: dict[str, Any] = {"model_version": bundle.version}
    out["single"] = single(fast, pipeline, clean, repeat)
    out["batch"] = batch(compiled, pipeline, clean, min(sk_rows, rows))
    with tempfile.TemporaryDirectory(prefix="treesurv-bench-") as tmp:
        out["file"] = file_vs_sklearn(
            raw, clean, model, pipeline, rows, sk_rows, repeats, Path(tmp)
        )
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
        f"file: treesurv predict, {f['rows']:,} rows CSV ({f['input_mib']:.0f} MiB), median of "
        f"{len(f['runs'])}: {f['seconds']:.1f} s, {f['us_per_row']:.1f} µs/row, "
        f"peak RSS {f['peak_rss_mib']:.0f} MiB"
    )
    if "sklearn_predict_proba_us_per_row" in f:
        lines.append(
            f"  raw sklearn predict_proba ({f['sklearn_rows']:,} of the same rows, alternated "
            f"with the file runs): {f['sklearn_predict_proba_us_per_row']:.1f} µs/row "
            f"-> file scoring x{f['speedup_vs_sklearn']:.2f} as fast per row"
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
