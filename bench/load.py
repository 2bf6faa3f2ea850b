"""HTTP load: the real service against a bare FastAPI app, side by side in one run.

Both run as separate processes with the same uvicorn settings (one worker) and
the same request model; the same load generator (wrk, or a Python async client
when wrk is missing) hits each in turn, several rounds, one instance per request.
Prints requests/s, p50 and p99 for each and the ratio real/bare.

    python bench/load.py [--rounds 3] [--duration 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT_MODEL = ROOT / "models" / "tree-survival"
PATH = "/v1/predictions"
V2_PATH = "/v2/models/tree-survival/infer"

sys.path.insert(0, str(ROOT / "src"))
from treesurv.core import schema  # noqa: E402

BODY = json.dumps({"instances": [schema.EXAMPLE]})


def batch_body(rows: int) -> str:
    """A body of `rows` real seedlings (the held-out split, resampled), EMF null where
    the species has none."""
    import pandas as pd

    frame = pd.read_parquet(ROOT / "data" / "processed" / "test.parquet")
    picked = frame[list(schema.FEATURE_NAMES)].sample(rows, replace=True, random_state=0)
    instances = [
        {k: (None if schema.is_missing(v) else v) for k, v in r.items()}
        for r in picked.to_dict("records")
    ]
    return json.dumps({"instances": instances})


def v2_body(body: str) -> str:
    """The same instances as Open Inference Protocol JSON tensors, one per feature."""
    rows = json.loads(body)["instances"]
    return json.dumps(
        {
            "inputs": [
                {
                    "name": f.name,
                    "shape": [len(rows)],
                    "datatype": "BYTES" if f.kind == "categorical" else "FP64",
                    "data": [r.get(f.name) for r in rows],
                }
                for f in schema.FEATURES
            ]
        }
    )


def v2_binary_body(body: str) -> tuple[bytes, dict[str, str]]:
    """The same tensors as `v2_body` sent as binary data (FP64, NaN for a missing EMF,
    and BYTES) after the JSON header, with the headers that frame them."""
    from treesurv.serving import binary_tensors as binary

    request = json.loads(v2_body(body))
    parts = []
    for tensor in request["inputs"]:
        data = tensor.pop("data")
        if tensor["datatype"] == "BYTES":
            raw = binary.encode_bytes(data)
        else:
            raw = binary.encode_fixed([float("nan") if v is None else v for v in data], "FP64")
        tensor["parameters"] = {binary.SIZE: len(raw)}
        parts.append(raw)
    head = json.dumps(request).encode()
    headers = {"Content-Type": "application/octet-stream", binary.HEADER: str(len(head))}
    return head + b"".join(parts), headers


BARE = (
    "import uvicorn; from treesurv.serving.server import uvicorn_options; "
    "uvicorn.run('bench.bare_app:create_app', "
    "**uvicorn_options('127.0.0.1', {port}, False, 'info'))"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    kind: str,
    port: int,
    model: Path,
    env_extra: dict[str, str] | None = None,
    workers: int = 1,
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TREESURV_WATCH_INTERVAL": "0"}
    env.update(env_extra or {})
    if kind == "real":
        cmd = [str(BIN / "treesurv"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--model", str(model), "--workers", str(workers)]
    else:
        cmd = [sys.executable, "-c", BARE.format(port=port)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_ready(port, "/readyz" if kind == "real" else "/openapi.json", proc)
    if kind == "real":
        wait_full_speed(f"http://127.0.0.1:{port}", workers)
    return proc


def wait_full_speed(base: str, workers: int = 1, timeout: float = 120) -> None:
    """A ready server answers through a NumPy walk until its Numba kernels are
    compiled (in the background); benchmarks measure the compiled path. With several
    workers the gauge has one sample per worker process."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
            lines = r.read().decode().splitlines()
        compiled = [x for x in lines if x.startswith("treesurv_kernels_compiled")]
        if sum(x.endswith(" 1.0") for x in compiled) >= workers:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{base}: kernels not compiled after {timeout:.0f}s")


def wait_ready(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} not ready after {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if the server has not exited within `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ generators

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk_script(
    directory: Path, body: str | bytes, path: str = PATH, headers: dict[str, str] | None = None
) -> Path:
    """A wrk Lua script that POSTs `body` to `path`: text as JSON, or bytes as they are
    with `headers`."""
    name = f"post{path.replace('/', '-')}{'-binary' if isinstance(body, bytes) else ''}.lua"
    script = directory / name
    if isinstance(body, bytes):  # every byte a three-digit Lua escape
        literal = '"' + "".join(f"\\{b:03d}" for b in body) + '"'
    else:
        literal = json.dumps(body)
    sent = headers or {"Content-Type": "application/json"}
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.path = {json.dumps(path)}\n"
        f"wrk.body = {literal}\n"
        + "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in sent.items())
    )
    return script


def wrk(port: int, duration: float, connections: int, script: Path) -> dict[str, Any]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}{PATH}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")

    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "errors": errors,
        "requests": requests,
    }


def python_client(
    port: int,
    duration: float,
    connections: int,
    body: str | bytes = BODY,
    path: str = PATH,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Fallback generator (httpx, asyncio): weaker than wrk, same for both apps."""
    import httpx

    async def main() -> dict[str, Any]:
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + duration
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        sent = headers or {"content-type": "application/json"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as c:

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    t = time.perf_counter()
                    try:
                        r = await c.post(path, content=body, headers=sent)
                        ok = r.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    latencies.append(time.perf_counter() - t)
                    errors += not ok

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.perf_counter() - start
        q = statistics.quantiles(latencies, n=100)
        return {
            "rps": len(latencies) / elapsed,
            "p50_ms": q[49] * 1e3,
            "p99_ms": q[98] * 1e3,
            "errors": errors,
            "requests": len(latencies),
        }

    return asyncio.run(main())


# ------------------------------------------------------------------------ run


def run(
    rounds: int,
    duration: float,
    connections: int,
    model: Path,
    generator: str = "auto",
    rows: int = 1,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Requests/s of each app, `rows` instances per request (one: the example seedling);
    `env`: settings of the real server. With batches, the real server's `/v2` infer
    (the same rows as JSON tensors, and as binary tensors) is measured too, as the
    kinds `v2` and `v2_binary`."""
    body = BODY if rows == 1 else batch_body(rows)
    use_wrk = generator == "wrk" or (generator == "auto" and shutil.which("wrk") is not None)
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    requests: dict[str, tuple[str | bytes, str, dict[str, str] | None]] = {
        "real": (body, PATH, None),
        "bare": (body, PATH, None),
    }
    if rows > 1:
        requests["v2"] = (v2_body(body), V2_PATH, None)
        binary_body, binary_headers = v2_binary_body(body)
        requests["v2_binary"] = (binary_body, V2_PATH, binary_headers)
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in requests}
    with tempfile.TemporaryDirectory() as tmp:
        scripts = {kind: wrk_script(Path(tmp), *sent) for kind, sent in requests.items()}

        def load(kind: str, seconds: float) -> dict[str, Any]:
            port = servers["bare" if kind == "bare" else "real"][1]
            if use_wrk:
                return wrk(port, seconds, connections, scripts[kind])
            return python_client(port, seconds, connections, *requests[kind])

        try:
            for kind in ("real", "bare"):
                port = free_port()
                servers[kind] = (start(kind, port, model, env), port)
            for kind in requests:
                load(kind, min(2.0, duration))  # warm-up, not counted
            for r in range(rounds):
                # Alternate the order so no app always runs on a warmer machine.
                order = list(requests) if r % 2 == 0 else list(reversed(requests))
                for kind in order:
                    results[kind].append(load(kind, duration))
        finally:
            for proc, _ in servers.values():
                stop(proc)
    summary: dict[str, Any] = {
        "generator": "wrk" if use_wrk else "python-httpx",
        "connections": connections,
        "duration_s": duration,
        "rounds": rounds,
        "workers": 1,
        "rows_per_request": rows,
    }
    for kind, runs in results.items():
        summary[kind] = {
            "rps": statistics.median(x["rps"] for x in runs),
            "rows_per_s": statistics.median(x["rps"] for x in runs) * rows,
            "p50_ms": statistics.median(x["p50_ms"] for x in runs),
            "p99_ms": statistics.median(x["p99_ms"] for x in runs),
            "errors": sum(x["errors"] for x in runs),
            "requests": sum(x["requests"] for x in runs),
            "rounds": runs,
        }
    summary["ratio"] = summary["real"]["rps"] / summary["bare"]["rps"]
    if "v2" in summary:
        summary["ratio_v2"] = summary["v2"]["rps"] / summary["bare"]["rps"]
        summary["ratio_v2_binary"] = summary["v2_binary"]["rps"] / summary["bare"]["rps"]
    if rows > 1:
        summary["model_rows_per_s"] = model_alone(model, body.encode())
    return summary


def model_alone(model: Path, body: bytes, seconds: float = 3.0) -> float:
    """Rows/s of the served model alone on the benchmark's batch body, in this process and
    one thread: its instances already as columns, encoded and scored by the compiled
    model. What no server can beat per core, whatever its HTTP and validation cost."""
    from treesurv.inference.bundle import load_verified
    from treesurv.serving.scoring import full_model_batch

    _, compiled = load_verified(model)
    columns = full_model_batch(body, 10**6)
    if columns is None:
        raise RuntimeError("the benchmark's batch does not pass the column check")
    n = len(columns[schema.FEATURE_NAMES[0]])
    compiled.proba_columns(columns)  # compile, warm
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        compiled.proba_columns(columns)
        done += n
    return done / (time.perf_counter() - start)


def report(summary: dict[str, Any]) -> str:
    lines = [
        f"HTTP load: {summary['generator']}, {summary['connections']} connections, "
        f"1 worker, {summary['rows_per_request']} instance(s) per request, "
        f"{summary['rounds']} x {summary['duration_s']:g}s per app (median of rounds)",
        f"{'app':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}",
    ]
    for kind in ("real", "v2", "v2_binary", "bare"):
        if kind not in summary:
            continue
        s = summary[kind]
        lines.append(
            f"{kind:<10}{s['rps']:>10.0f}{s['p50_ms']:>10.2f}{s['p99_ms']:>10.2f}{s['errors']:>8}"
        )
    lines.append(f"ratio real/bare: {summary['ratio']:.3f}")
    if "model_rows_per_s" in summary:
        lines.append(f"the model alone, one thread: {summary['model_rows_per_s']:.0f} rows/s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--rows", type=int, default=1, help="Instances per request.")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    summary = run(
        args.rounds, args.duration, args.connections, args.model, args.generator, args.rows
    )
    print(report(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
