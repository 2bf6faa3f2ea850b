"""Overload: one worker offered ten times what it serves, with and without admission control.

The real server (one uvicorn worker, the pipeline's bundle) is first measured
unloaded: `--connections` clients send 1,000-row batches back to back. Then an open
loop offers `--factor` times that request rate for `--duration` seconds (arrivals do
not wait for answers, as with many independent clients), while a prober asks
`/readyz` every 100 ms. The same overload runs against the service with its default
admission bounds and with the bounds lifted (every request queued), side by side.
Afterwards: how soon `/readyz` answers and a batch is as fast as unloaded again.

The bounded server is measured three times in a row (`--rounds`) and the round with
the median served ratio reported: this machine is shared, and one run moves.

    python bench/overload.py [--duration 15] [--factor 10] [--rounds 3] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import load  # noqa: E402
from bench.soak import record  # noqa: E402

ROWS = 1000
UNBOUNDED = {
    "TREESURV_MAX_QUEUE": "1000000",
    "TREESURV_MAX_PENDING_BYTES": str(1 << 40),
    "TREESURV_QUEUE_TIMEOUT": "1000000",
}
TIMEOUT_S = 10.0  # what a client waits before giving up (the load test used 5 s)
# An idle connection is not reused after this: uvicorn closes it after 5 s, and a
# request sent as it closes would count as a failure of the server.
IDLE_REUSE_S = 4.0


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100)[q - 1]


async def closed_loop(base: str, body: bytes, connections: int, duration: float) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                async with session.post(f"{base}/v1/predictions", data=body, headers=headers) as r:
                    await r.read()
                    if r.status == 200:
                        latencies.append(time.perf_counter() - t)
                    else:
                        errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    return {
        "rps": len(latencies) / elapsed,
        "rows_per_s": len(latencies) * ROWS / elapsed,
        "p50_ms": pct(latencies, 50) * 1e3,
        "p99_ms": pct(latencies, 99) * 1e3,
        "errors": errors,
    }


class _Exchange(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the open loop: it sends a prepared request
    and reads the answer (status line, `Content-Length` body). Plain asyncio, so that
    the load generator costs the two shared cores a tenth of a core at ten times the
    rate rather than the four tenths aiohttp takes (its CPU is recorded with the run)."""

    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.started = 0.0
        self.expected = -1  # bytes of head and body, once the head is in
        self.status = 0
        self.retry_after = False
        self.expiry: asyncio.TimerHandle | None = None
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.started = time.perf_counter()
        self.expected = -1
        self.buffer.clear()
        self.expiry = self.arrivals.loop.call_later(self.arrivals.timeout, self._expire)
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        if self.expiry is None:  # nothing asked: not an answer
            return
        self.buffer += data
        if self.expected < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = re.search(rb"\r\ncontent-length: *(\d+)", head)
            if not head.startswith(b"http/1.1 ") or length is None:
                self._fail("UnreadableAnswer")
                return
            self.status = int(head[9:12])
            self.retry_after = b"\r\nretry-after:" in head
            self.expected = end + 4 + int(length.group(1))
        if len(self.buffer) >= self.expected:
            self._end()
            seconds = time.perf_counter() - self.started
            self.arrivals.answered(self.status, self.retry_after, seconds)
            self.idle_since = time.perf_counter()
            self.arrivals.idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.arrivals.idle:
            self.arrivals.idle.remove(self)
        if self.expiry is not None:  # a request was waiting for its answer
            self._end()
            self.arrivals.failed(type(exc).__name__ if exc else "ServerDisconnected")

    def _expire(self) -> None:
        self._fail("TimeoutError")

    def _fail(self, name: str) -> None:
        self._end()
        self.arrivals.failed(name)
        if self.transport is not None:
            self.transport.abort()

    def _end(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None


class Arrivals:
    """Open-loop arrivals over a pool of keep-alive connections: an arrival takes an
    idle connection, or opens one (so the connections in use follow the requests
    waiting for answers, as many independent clients would)."""

    def __init__(self, host: str, port: int, body: bytes, timeout: float = TIMEOUT_S) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.request = (
            f"POST /v1/predictions HTTP/1.1\r\nhost: {host}:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.loop = asyncio.get_running_loop()
        self.idle: list[_Exchange] = []
        self.served: list[float] = []
        self.shed: list[float] = []
        self.failures: dict[str, int] = {}
        self.waiting = 0
        self.all_answered = asyncio.Event()
        self.connecting: set[asyncio.Task[None]] = set()

    def arrive(self) -> None:
        self.waiting += 1
        self.all_answered.clear()
        while self.idle:
            exchange = self.idle.pop()  # the most recently used
            if time.perf_counter() - exchange.idle_since < IDLE_REUSE_S:
                exchange.send(self.request)
                return
            for stale in (exchange, *self.idle):  # the rest waited longer still
                if stale.transport is not None:
                    stale.transport.close()
            self.idle.clear()
        task = self.loop.create_task(self._connect())
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)

    async def _connect(self) -> None:
        try:
            _, exchange = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Exchange(self), self.host, self.port),
                self.timeout,
            )
        except (OSError, TimeoutError) as exc:
            self.failed(type(exc).__name__)
            return
        exchange.send(self.request)

    def answered(self, status: int, retry_after: bool, seconds: float) -> None:
        if status == 200:
            self.served.append(seconds)
        elif status == 503 and retry_after:
            self.shed.append(seconds)
        else:
            self.failures[str(status)] = self.failures.get(str(status), 0) + 1
        self._done()

    def failed(self, name: str) -> None:
        self.failures[name] = self.failures.get(name, 0) + 1
        self._done()

    def _done(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.all_answered.set()

    def close(self) -> None:
        for exchange in self.idle:
            if exchange.transport is not None:
                exchange.transport.close()


async def open_loop(
    base: str, body: bytes, rate: float, duration: float, pid: int
) -> dict[str, Any]:
    """`rate` requests/s for `duration` s whatever the answers; probes every 100 ms."""
    import aiohttp
    import psutil

    probes: list[float] = []
    rss: list[int] = []
    server = psutil.Process(pid)
    host, port = base.removeprefix("http://").rsplit(":", 1)
    arrivals = Arrivals(host, int(port), body)

    async def prober(stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as own:  # its own connection, as a kubelet
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    async with own.get(f"{base}/readyz") as r:
                        await r.read()
                        probes.append(time.perf_counter() - t if r.status == 200 else 99.0)
                except aiohttp.ClientError:
                    probes.append(99.0)
                rss.append(server.memory_info().rss)
                await asyncio.sleep(0.1)

    stop = asyncio.Event()
    probing = asyncio.create_task(prober(stop))
    cpu = time.process_time(), server.cpu_times()
    start = time.perf_counter()
    n = int(rate * duration)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        arrivals.arrive()
    sending = time.perf_counter() - start
    await arrivals.all_answered.wait()  # each request ends: answered, failed or timed out
    elapsed = time.perf_counter() - start  # until the last answer
    server_cpu = server.cpu_times()
    client_s = time.process_time() - cpu[0]
    server_s = server_cpu.user + server_cpu.system - cpu[1].user - cpu[1].system
    stop.set()
    await probing
    arrivals.close()
    served = arrivals.served
    return {
        "offered": n,
        "offered_rps": n / sending,
        "served": len(served),
        "served_rps": len(served) / elapsed,
        "served_rows_per_s": len(served) * ROWS / elapsed,
        "served_p50_ms": pct(served, 50) * 1e3,
        "served_p99_ms": pct(served, 99) * 1e3,
        "shed": len(arrivals.shed),
        "shed_p99_ms": pct(arrivals.shed, 99) * 1e3,
        "failures": arrivals.failures,
        "probe_max_ms": max(probes) * 1e3,
        "probe_p99_ms": pct(probes, 99) * 1e3,
        "rss_max_mib": max(rss) / 2**20,
        "client_cores": client_s / elapsed,
        "server_cores": server_s / elapsed,
    }


RECOVERY_LIMIT_S = 60.0


async def recovery(base: str, body: bytes, unloaded_p50_ms: float) -> float | None:
    """Seconds from the end of the load until /readyz answers and a batch is back
    within 1.5x of its unloaded time; None if not within RECOVERY_LIMIT_S (a server
    still working through a backlog may not answer at all before then)."""
    import aiohttp

    start = time.perf_counter()
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession() as session:
        while (left := RECOVERY_LIMIT_S - (time.perf_counter() - start)) > 0:
            timeout = aiohttp.ClientTimeout(total=left)
            try:
                async with session.get(f"{base}/readyz", timeout=timeout) as r:
                    ready = r.status == 200
                t = time.perf_counter()
                async with session.post(
                    f"{base}/v1/predictions", data=body, headers=headers, timeout=timeout
                ) as r:
                    await r.read()
                    spent_ms = (time.perf_counter() - t) * 1e3
                    fast = r.status == 200 and spent_ms <= 1.5 * unloaded_p50_ms
            except (TimeoutError, aiohttp.ClientError):
                continue
            if ready and fast:
                return time.perf_counter() - start
            await asyncio.sleep(0.05)
    return None


def shed_reasons(base: str) -> dict[str, float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        s.labels["reason"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "treesurv_requests_shed_total"
    }


def run(
    duration: float, factor: float, connections: int, model: Path, rounds: int = 3
) -> dict[str, Any]:
    """Each server measured unloaded then overloaded, `rounds` times in a row (once
    without bounds: its backlog takes a minute to clear); the round with the median
    served ratio is reported, the others' ratios beside it (this machine is shared)."""
    import uvloop

    body = load.batch_body(ROWS).encode()
    out: dict[str, Any] = {
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": ROWS,
        "factor": factor,
        "duration_s": duration,
        "client_timeout_s": TIMEOUT_S,
        "recovery_limit_s": RECOVERY_LIMIT_S,
    }
    for name, env, times in (("admission", {}, rounds), ("unbounded", UNBOUNDED, 1)):
        port = load.free_port()
        proc = load.start("real", port, model, env)
        base = f"http://127.0.0.1:{port}"
        measured: list[dict[str, Any]] = []
        try:
            asyncio.run(closed_loop(base, body, connections, 2.0))  # warm-up
            for _ in range(times):
                unloaded = asyncio.run(closed_loop(base, body, connections, duration))
                rate = factor * unloaded["rps"]
                loaded = uvloop.run(open_loop(base, body, rate, duration, proc.pid))
                back = asyncio.run(recovery(base, body, unloaded["p50_ms"]))
                loaded["shed_by_reason"] = shed_reasons(base)  # since the server started
                measured.append(
                    {
                        "unloaded": unloaded,
                        "overload": loaded,
                        "recovered_s": back,
                        "served_ratio": loaded["served_rows_per_s"] / unloaded["rows_per_s"],
                        "p99_ratio": loaded["served_p99_ms"] / unloaded["p99_ms"],
                    }
                )
        finally:
            load.stop(proc)
        ranked = sorted(measured, key=lambda m: m["served_ratio"])
        out[name] = {
            **ranked[len(ranked) // 2],
            "rounds": [{k: m[k] for k in ("served_ratio", "p99_ratio")} for m in measured],
        }
    return out


def report(summary: dict[str, Any]) -> str:
    lines = [
        f"Overload: {summary['factor']:g}x the unloaded rate of {summary['rows']}-row batches "
        f"for {summary['duration_s']:g} s, one worker",
        f"{'':<11}{'rows/s':>9}{'x unl.':>8}{'p99 ms':>9}{'x unl.':>8}{'shed':>6}"
        f"{'failed':>8}{'probe max ms':>14}{'RSS MiB':>9}{'back s':>8}"
        f"{'cores srv/cli':>14}",
    ]
    for name in ("admission", "unbounded"):
        s = summary[name]
        o = s["overload"]
        lines.append(
            f"{name:<11}{o['served_rows_per_s']:>9.0f}{s['served_ratio']:>8.2f}"
            f"{o['served_p99_ms']:>9.0f}{s['p99_ratio']:>8.2f}{o['shed']:>6}"
            f"{sum(o['failures'].values()):>8}{o['probe_max_ms']:>14.0f}"
            f"{o['rss_max_mib']:>9.0f}{s['recovered_s'] or float('inf'):>8.2f}"
            f"{o['server_cores']:>9.2f}/{o['client_cores']:.2f}  "
            f"{o['shed_by_reason']}"
        )
    rounds = summary["admission"]["rounds"]
    lines.append(
        "admission rounds, served ratio (p99 ratio): "
        + ", ".join(f"{r['served_ratio']:.2f} ({r['p99_ratio']:.2f})" for r in rounds)
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--factor", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3, help="Of the bounded server.")
    parser.add_argument("--connections", type=int, default=4, help="Clients of the unloaded run.")
    parser.add_argument("--model", type=Path, default=load.DEFAULT_MODEL)
    parser.add_argument("--record", action="store_true", help="Merge into bench/results.json.")
    args = parser.parse_args()
    summary = run(args.duration, args.factor, args.connections, args.model, args.rounds)
    print(report(summary))
    if args.record:
        record("overload", summary)


if __name__ == "__main__":
    main()
