"""What logging every prediction costs the real service, side by side in one run.

Two `treesurv serve` processes with the same settings (one uvicorn worker, the
same bundle), one with the prediction log on (a temporary directory) and one with
it off (`TREESURV_PREDICTION_LOG_DIR=`); a fresh pair every round. wrk loads them
in alternating order, several rounds, with one instance per request (the worst
case: the most requests per logged instance) and with batches of 100. The figure
is throughput with the log divided by throughput without it; the issue's target
is a loss under 5%.
Because the machine is shared, each run also records the server's CPU time per
request (user + system, from /proc, the log writer process included), which other
load disturbs far less than requests/s. Afterwards the log is checked against the
server's counters: every prediction answered was written, none dropped.

    .venv/bin/python bench/log_overhead.py [--rounds 5] [--duration 8] [--connections 16]

Merges its figures into `bench/results.json` under "prediction_log".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import load
from treesurv.core import schema

RESULTS = Path(__file__).with_name("results.json")
LOG_ENV = "TREESURV_PREDICTION_LOG_DIR"


def body(n: int) -> str:
    return json.dumps({"instances": [schema.EXAMPLE] * n})


def lua(payload: str) -> str:
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(payload)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of the server and of its children (the log writer
    process): what logging costs the machine, wherever it runs."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += cpu_seconds(int(child))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return total + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(
    proc: Any, port: int, duration: float, connections: int, script: Path
) -> dict[str, Any]:
    before = cpu_seconds(proc.pid)
    out = load.wrk(port, duration, connections, script)
    out["cpu_us_per_request"] = (cpu_seconds(proc.pid) - before) / out["requests"] * 1e6
    return out


def settled(port: int, timeout: float = 30) -> dict[str, float]:
    """The log's counters once every answered prediction has been written."""
    deadline = time.monotonic() + timeout
    while True:
        counters = {
            "predictions_served": metric(port, 'treesurv_predictions_total{endpoint="v1"}'),
            "logged": metric(port, "treesurv_prediction_log_records_total"),
            "dropped": metric(port, "treesurv_prediction_log_dropped_total"),
            "write_errors": metric(port, "treesurv_prediction_log_write_errors_total"),
        }
        done = counters["logged"] + counters["dropped"] + counters["write_errors"]
        if done >= counters["predictions_served"] or time.monotonic() > deadline:
            return counters
        time.sleep(0.2)


def run(rounds: int, duration: float, connections: int, model: Path) -> dict[str, Any]:
    workloads = {"single": 1, "batch_100": 100}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        w: {"on": [], "off": []} for w in workloads
    }
    totals = {"predictions_served": 0.0, "logged": 0.0, "dropped": 0.0, "write_errors": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp) / "predictions"
        scripts = {}
        for w, n in workloads.items():
            scripts[w] = Path(tmp) / f"{w}.lua"
            scripts[w].write_text(lua(body(n)))
        for r in range(rounds):
            # A fresh pair of servers each round: one process's luck (memory layout,
            # hash seed) moves its throughput by a few percent, as much as the log.
            order = ("on", "off") if r % 2 == 0 else ("off", "on")
            servers = {}
            try:
                for kind in order:
                    env = {LOG_ENV: str(log_dir) if kind == "on" else ""}
                    port = load.free_port()
                    servers[kind] = (load.start("real", port, model, env), port)
                for kind in order:  # warm-up, not counted
                    load.wrk(servers[kind][1], 2, connections, scripts["single"])
                for w in workloads:
                    for kind in order:
                        proc, port = servers[kind]
                        results[w][kind].append(
                            measured(proc, port, duration, connections, scripts[w])
                        )
                time.sleep(1)  # requests wrk left in flight finish
                for name, value in settled(servers["on"][1]).items():
                    totals[name] += value
            finally:
                for proc, _ in servers.values():
                    load.stop(proc)  # SIGTERM: the log is flushed
        lines = sum(sum(1 for _ in f.open("rb")) for f in log_dir.glob("predictions-*.jsonl"))
        log_bytes = sum(f.stat().st_size for f in log_dir.glob("predictions-*.jsonl"))
    summary: dict[str, Any] = {
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "generator": "wrk",
        "connections": connections,
        "duration_s": duration,
        "rounds": rounds,
        "workers": 1,
        "fresh_servers_each_round": True,
        "log": {**totals, "lines_in_files": lines, "bytes": log_bytes},
    }
    for w, by_kind in results.items():
        on = statistics.median(x["rps"] for x in by_kind["on"])
        off = statistics.median(x["rps"] for x in by_kind["off"])
        pairs = [a["rps"] / b["rps"] for a, b in zip(by_kind["on"], by_kind["off"], strict=True)]
        summary[w] = {
            "instances_per_request": workloads[w],
            "on": _stats(by_kind["on"]),
            "off": _stats(by_kind["off"]),
            "ratio": on / off,
            "overhead_pct": (1 - on / off) * 100,
            "round_ratios": [round(p, 4) for p in pairs],
            "cpu_ratio": summary_cpu(by_kind["on"]) / summary_cpu(by_kind["off"]),
        }
    return summary


def summary_cpu(runs: list[dict[str, Any]]) -> float:
    return statistics.median(x["cpu_us_per_request"] for x in runs)


def _stats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rps": statistics.median(x["rps"] for x in runs),
        "p50_ms": statistics.median(x["p50_ms"] for x in runs),
        "p99_ms": statistics.median(x["p99_ms"] for x in runs),
        "errors": sum(x["errors"] for x in runs),
        "requests": sum(x["requests"] for x in runs),
        "cpu_us_per_request": summary_cpu(runs),
        "rounds_rps": [round(x["rps"], 1) for x in runs],
    }


def report(summary: dict[str, Any]) -> str:
    lines = [
        f"prediction log on vs off: wrk, {summary['connections']} connections, 1 worker, "
        f"{summary['rounds']} x {summary['duration_s']:g}s per server and workload",
        f"{'workload':<11}{'log':<5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'CPU µs/req':>12}",
    ]
    for w in ("single", "batch_100"):
        for kind in ("on", "off"):
            s = summary[w][kind]
            lines.append(
                f"{w:<11}{kind:<5}{s['rps']:>10.0f}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}"
                f"{s['errors']:>8}{s['cpu_us_per_request']:>12.1f}"
            )
        lines.append(
            f"{'':<11}ratio on/off {summary[w]['ratio']:.3f} "
            f"(overhead {summary[w]['overhead_pct']:+.1f}%; rounds {summary[w]['round_ratios']}); "
            f"CPU per request on/off {summary[w]['cpu_ratio']:.3f}"
        )
    lg = summary["log"]
    lines.append(
        f"log: {lg['predictions_served']:.0f} predictions served, {lg['logged']:.0f} logged, "
        f"{lg['lines_in_files']} lines in files ({lg['bytes'] / 2**20:.1f} MiB), "
        f"{lg['dropped']:.0f} dropped, {lg['write_errors']:.0f} write errors"
    )
    return "\n".join(lines)


def merge(path: Path, key: str, value: Any) -> None:
    """Add one key to the results file, keeping every other figure."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results[key] = value
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--model", type=Path, default=load.DEFAULT_MODEL)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    summary = run(args.rounds, args.duration, args.connections, args.model)
    print(report(summary))
    merge(args.out, "prediction_log", summary)
    print(f"merged into {args.out} (key prediction_log)")


if __name__ == "__main__":
    main()
