"""Soak and zero-downtime swaps: the real server (`treesurv serve`) under steady load.

`soak`: requests at a steady rate (single instances and batches mixed) for a set
time against one server process on 127.0.0.1; reports errors, p50/p99 latency and
the server's resident memory sampled every second (growth after warm-up).

`swaps`: the same load while the model is swapped N times, alternating two good
bundles (the source bundle re-packaged with two version strings by
`treesurv.inference.bundle.write_bundle`, which writes beside the model path and renames into
place), with a tampered bundle placed in between each time. Swaps are triggered by
`POST /v1/admin/reload` and by the watcher in turn. Reports the requests, failures,
the versions that answered and the reload failures counted in /metrics.

    python bench/soak.py soak  [--duration 300] [--rate 200] [--record]
    python bench/soak.py swaps [--swaps 20] [--rate 150] [--record]

Loopback only, bounded in time and count; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results.json"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench import load as http_load  # noqa: E402
from treesurv.core import schema  # noqa: E402
from treesurv.inference import bundle  # noqa: E402
from treesurv.serving.schemas import rule_branches  # noqa: E402

KEY = "soak-admin-key-0123456789"


# ------------------------------------------------------------------ requests


def random_instance(rng: random.Random) -> dict[str, Any]:
    """A valid seedling: categories from one rule branch of the schema, numbers in range."""
    # Each branch is a JSON Schema object whose "properties" map a feature to its schema.
    branches = cast(list[dict[str, Any]], rule_branches())
    branch: dict[str, dict[str, Any]] = rng.choice(branches)["properties"]
    row: dict[str, Any] = {}
    for feature in schema.FEATURES:
        fixed = branch.get(feature.name, {})
        if "const" in fixed:
            row[feature.name] = fixed["const"]
        elif fixed.get("type") == "null":
            row[feature.name] = None
        elif feature.categories:
            row[feature.name] = rng.choice(feature.categories)
        else:
            assert feature.minimum is not None and feature.maximum is not None
            row[feature.name] = round(rng.uniform(feature.minimum, feature.maximum), 4)
    return row


def request_bodies(seed: int, count: int, batch_share: float, batch_size: int) -> list[bytes]:
    """A pool of encoded bodies, singles and batches mixed (reused round-robin)."""
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        n = batch_size if rng.random() < batch_share else 1
        bodies.append(json.dumps({"instances": [random_instance(rng) for _ in range(n)]}).encode())
    return bodies


# -------------------------------------------------------------------- server


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextmanager
def serve(
    model: Path, workdir: Path, env: dict[str, str] | None = None, ready: str = "/readyz"
) -> Iterator[Server]:
    """`treesurv serve` (one uvicorn worker) on a free loopback port until `ready` is 200."""
    port = http_load.free_port()
    log = workdir / f"server-{port}.log"
    cmd = [str(BIN / "treesurv"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--model", str(model)]
    full_env = {**os.environ, "TREESURV_WATCH_INTERVAL": "0", **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=full_env, cwd=workdir, stdout=out, stderr=out)
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(server.base + ready, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready:\n{log.read_text()}")
            time.sleep(0.2)
        if ready == "/readyz":
            http_load.wait_full_speed(server.base)
        yield server
    finally:
        http_load.stop(proc, timeout=30)


def rss_bytes(pid: int) -> int:
    """Resident set size from the kernel (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


# --------------------------------------------------------------------- load


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    instances: int = 0
    batches: int = 0
    late: int = 0
    elapsed: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict[str, Any]:
        q = statistics.quantiles(self.latencies, n=100) if len(self.latencies) > 1 else [0.0] * 99
        return {
            "requests": self.requests,
            "batches": self.batches,
            "instances": self.instances,
            "errors": len(self.failures),
            "rps": round(self.requests / self.elapsed, 1) if self.elapsed else 0.0,
            "p50_ms": round(q[49] * 1e3, 2),
            "p99_ms": round(q[98] * 1e3, 2),
            "max_ms": round(max(self.latencies, default=0.0) * 1e3, 2),
            "late_starts": self.late,
            "versions": dict(self.versions),
        }


def generate_load(
    base: str, bodies: list[bytes], rate: float, duration: float, stop: threading.Event
) -> LoadResult:
    """Open-loop load: request i starts at i / rate seconds (at most 64 in flight)."""
    result = LoadResult()

    async def main() -> None:
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
        headers = {"content-type": "application/json"}
        in_flight = asyncio.Semaphore(64)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

            async def one(body: bytes) -> None:
                start = time.perf_counter()
                try:
                    r = await client.post("/v1/predictions", content=body, headers=headers)
                    status = r.status_code
                    if status == 200:
                        answer = r.json()
                        result.versions[answer["model_version"]] += 1
                        n = len(answer["predictions"])
                        result.instances += n
                        result.batches += n > 1
                        bad = [
                            p
                            for p in answer["predictions"]
                            if not 0.0 <= p["death_probability"] <= 1.0
                        ]
                        if bad:
                            result.failures.append(f"probability out of [0, 1]: {bad[0]}")
                    else:
                        result.failures.append(f"{status}: {r.text[:300]}")
                except httpx.HTTPError as exc:
                    status = -1
                    result.failures.append(f"{type(exc).__name__}: {exc}")
                finally:
                    result.latencies.append(time.perf_counter() - start)
                    result.statuses[status] += 1
                    in_flight.release()

            tasks = set()
            begin = time.perf_counter()
            i = 0
            while not stop.is_set():
                due = begin + i / rate
                if due - begin >= duration:
                    break
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.05:
                    result.late += 1  # the generator (or the server) fell behind
                await in_flight.acquire()
                task = asyncio.create_task(one(bodies[i % len(bodies)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            await asyncio.gather(*tasks)
            result.elapsed = time.perf_counter() - begin

    asyncio.run(main())
    return result


class LoadThread(threading.Thread):
    def __init__(self, base: str, bodies: list[bytes], rate: float, duration: float) -> None:
        super().__init__(name="soak-load", daemon=True)
        self.args = (base, bodies, rate, duration)
        self.stop = threading.Event()
        self.result: LoadResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = generate_load(*self.args, self.stop)
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout: float = 120) -> LoadResult:
        self.join(timeout)
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise RuntimeError("the load generator did not finish")
        return self.result


# --------------------------------------------------------------------- soak


def memory_growth(samples: list[tuple[float, int]], warmup: float) -> dict[str, Any]:
    """Growth of RSS from just after warm-up to the end (median of a window at each end)."""
    after = [rss for t, rss in samples if t >= warmup]
    if len(after) < 4:
        raise RuntimeError("too few memory samples after warm-up")
    window = max(2, len(after) // 10)
    start = statistics.median(after[:window])
    end = statistics.median(after[-window:])
    return {
        "rss_start_mib": round(start / 2**20, 1),
        "rss_end_mib": round(end / 2**20, 1),
        "rss_max_mib": round(max(after) / 2**20, 1),
        "growth": round(end / start - 1, 4),
        "samples": len(samples),
    }


def soak(
    model: Path,
    duration: float,
    rate: float,
    batch_share: float = 0.1,
    batch_size: int = 50,
    warmup: float = 10.0,
) -> dict[str, Any]:
    bodies = request_bodies(1, 500, batch_share, batch_size)
    samples: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory() as tmp, serve(model, Path(tmp)) as server:
        load = LoadThread(server.base, bodies, rate, duration)
        begin = time.monotonic()
        load.start()
        while load.is_alive():
            samples.append((time.monotonic() - begin, rss_bytes(server.pid)))
            load.join(1.0)
        result = load.finish()
    return {
        "duration_s": duration,
        "target_rps": rate,
        "batch_share": batch_share,
        "batch_size": batch_size,
        "warmup_s": warmup,
        **result.summary(),
        "memory": memory_growth(samples, warmup),
        "first_errors": result.failures[:5],
    }


# -------------------------------------------------------------------- swaps


def repackage(source: bundle.Bundle, dest: Path, version: str) -> None:
    """The same files and metadata under another version, written by the packaging
    code (beside `dest`, then renamed into place)."""
    extra = {k: v for k, v in source.manifest.items() if k not in bundle.MANIFEST_KEYS}
    bundle.write_bundle(dest, source.files, name=source.name, version=version, extra=extra)


def place_tampered(source: bundle.Bundle, dest: Path, version: str) -> None:
    """A bundle with one flipped byte (and its own version string), renamed into place."""
    staging = dest.with_name(f".{dest.name}.tampered")
    shutil.rmtree(staging, ignore_errors=True)
    repackage(source, staging, version)
    target = staging / "predictor.npz"
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    target.write_bytes(bytes(raw))
    bundle.swap_into_place(staging, dest)


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    if m is None:
        raise RuntimeError(f"{name} not in /metrics")
    return float(m.group(1))


def wait_for_version(base: str, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{base}/readyz", timeout=5)
        if r.status_code == 200 and r.json()["model_version"] == version:
            return
        time.sleep(0.1)
    raise RuntimeError(f"version {version} not served after {timeout}s")


def wait_for_failures(base: str, count: float, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while metric(base, "treesurv_model_reload_failures_total") < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} reload failures after {timeout}s")
        time.sleep(0.1)


def swaps(
    model: Path,
    count: int,
    rate: float,
    versions: tuple[str, str] = ("1.0.0", "1.1.0"),
    tampered_version: str = "9.9.9-tampered",
    batch_share: float = 0.1,
    batch_size: int = 50,
) -> dict[str, Any]:
    source = bundle.read_bundle(model)
    bodies = request_bodies(2, 500, batch_share, batch_size)
    auth = {"X-API-Key": KEY}
    log: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        served = Path(tmp) / "models" / "tree-survival"
        repackage(source, served, versions[0])
        env = {"TREESURV_API_KEY": KEY, "TREESURV_WATCH_INTERVAL": "0.25"}
        with serve(served, Path(tmp), env) as server:
            load = LoadThread(server.base, bodies, rate, duration=3600)
            load.start()
            try:
                time.sleep(1.0)
                expected_failures = 0.0
                start = time.perf_counter()
                for i in range(count):
                    # A tampered bundle first: refused, the current model keeps serving.
                    place_tampered(source, served, tampered_version)
                    expected_failures += 1
                    if i % 2 == 0:
                        r = httpx.post(f"{server.base}/v1/admin/reload", headers=auth, timeout=60)
                        if r.status_code != 409:
                            raise RuntimeError(f"tampered bundle not refused: {r.text}")
                    wait_for_failures(server.base, expected_failures)
                    expected_failures = metric(server.base, "treesurv_model_reload_failures_total")
                    # Then the other good version, by the admin API or by the watcher.
                    version = versions[(i + 1) % 2]
                    repackage(source, served, version)
                    how = "admin" if i % 2 == 0 else "watcher"
                    if how == "admin":
                        r = httpx.post(f"{server.base}/v1/admin/reload", headers=auth, timeout=60)
                        if r.status_code != 200 or r.json()["model_version"] != version:
                            raise RuntimeError(f"reload to {version} failed: {r.text}")
                    wait_for_version(server.base, version)
                    log.append({"swap": i + 1, "to": version, "by": how})
                swap_seconds = time.perf_counter() - start
                time.sleep(1.0)
            finally:
                load.stop.set()
            result = load.finish()
            failures_metric = metric(server.base, "treesurv_model_reload_failures_total")
            reloads_metric = metric(server.base, "treesurv_model_reloads_total")
            server_log = server.log.read_text()
    return {
        "swaps": count,
        "tampered_placed": count,
        "swap_seconds": round(swap_seconds, 1),
        "target_rps": rate,
        **result.summary(),
        "good_versions": list(versions),
        "tampered_version": tampered_version,
        "reload_failures_metric": failures_metric,
        "reloads_metric": reloads_metric,
        "tampered_served": result.versions.get(tampered_version, 0),
        "first_errors": result.failures[:5],
        "swap_log": log,
        "refusals_logged": server_log.count("bundle refused"),
    }


# ---------------------------------------------------------------------- cli


def record(key: str, summary: dict[str, Any], path: Path = RESULTS) -> None:
    """Merge `summary` into bench/results.json under `key` (other keys untouched)."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results[key] = summary
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["soak", "swaps"])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "tree-survival")
    parser.add_argument("--duration", type=float, default=300.0, help="soak: seconds")
    parser.add_argument("--warmup", type=float, default=20.0, help="soak: seconds")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--batch-share", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--json", type=Path, help="Also write the summary here.")
    parser.add_argument("--record", action="store_true", help="Merge into bench/results.json.")
    args = parser.parse_args()
    if args.what == "soak":
        summary = soak(
            args.model, args.duration, args.rate, args.batch_share, args.batch_size, args.warmup
        )
    else:
        summary = swaps(
            args.model,
            args.swaps,
            args.rate,
            batch_share=args.batch_share,
            batch_size=args.batch_size,
        )
    summary = {
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": len(os.sched_getaffinity(0)),
        # Latency depends on what else runs on the machine; errors and memory do not.
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        **summary,
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if args.record:
        record(args.what, summary)


if __name__ == "__main__":
    main()
