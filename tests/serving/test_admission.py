"""Admission control, on the middleware itself: an inner app that holds each request
until the test lets it go, so that every bound is reached on purpose."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest

from treesurv.serving.admission import Admission
from treesurv.serving.metrics import Metrics


class Held:
    """An ASGI app that answers 200 once its request is released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        name = scope["path"]
        self.started.append(name)
        gate = self.gates.setdefault(name, asyncio.Event())
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def release(self, name: str) -> None:
        self.gates.setdefault(name, asyncio.Event()).set()


def gate(inner: Any, metrics: Metrics, **bounds: Any) -> Admission:
    options: dict[str, float] = {"max_concurrency": 1, "max_queue": 1, "max_pending_bytes": 10_000}
    options["queue_timeout"] = 30.0
    return Admission(inner, metrics=metrics, routes=[], **{**options, **bounds})


async def call(app: Admission, path: str, method: str = "POST", size: int = 10) -> dict[str, Any]:
    """One request through the ASGI interface; its status, headers and JSON body."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"content-length", str(size).encode())],
    }
    sent: list[Any] = []
    bodies = [{"type": "http.request", "body": b"x" * size, "more_body": False}]

    async def receive() -> Any:
        return bodies.pop() if bodies else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent[0], sent[1]["body"]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return {
        "status": start["status"],
        "headers": headers,
        "body": orjson.loads(body) if headers.get("content-type") else body,
        "drained": not bodies,
    }


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_past_the_queue_a_request_is_shed_at_once_with_retry_after() -> None:
    async def scenario() -> None:
        metrics, inner = Metrics(), Held()
        app = gate(inner, metrics)
        first = asyncio.create_task(call(app, "/a"))
        second = asyncio.create_task(call(app, "/b"))  # waits in the queue
        await settle()
        assert inner.started == ["/a"]
        assert sample(metrics, "treesurv_requests_in_flight") == 1
        assert sample(metrics, "treesurv_requests_queued") == 1
        shed = await call(app, "/c")  # the queue is full: answered without waiting
        assert shed["status"] == 503 and shed["headers"]["retry-after"] == "1"
        assert shed["body"]["reason"] == "queue_full"
        assert "queue is full (at most 1 may wait)" in shed["body"]["detail"]
        # Answered before its body is read: the server drops the rest itself and keeps
        # the connection (tests/serving/test_overload.py, on a real server).
        assert not shed["drained"]
        assert inner.started == ["/a"]  # never reached the app
        inner.release("/a")
        assert (await first)["status"] == 200
        await settle()
        assert inner.started == ["/a", "/b"]  # the waiting one got the slot
        inner.release("/b")
        assert (await second)["status"] == 200
        assert sample(metrics, "treesurv_requests_in_flight") == 0
        assert sample(metrics, "treesurv_requests_queued") == 0
        assert sample(metrics, "treesurv_requests_shed_total", reason="queue_full") == 1

    asyncio.run(scenario())


def test_a_big_body_counts_as_what_it_costs() -> None:
    async def scenario() -> None:
        metrics, inner = Metrics(), Held()
        app = gate(inner, metrics, max_queue=10, max_pending_bytes=1000)
        running = asyncio.create_task(call(app, "/a", size=600))
        await settle()
        # There is room for ten requests in the queue, but not for 600 more bytes.
        shed = await call(app, "/b", size=600)
        assert shed["status"] == 503 and shed["body"]["reason"] == "bytes_full"
        assert "would exceed 1000 bytes of bodies" in shed["body"]["detail"]
        small = asyncio.create_task(call(app, "/c", size=300))
        await settle()
        assert sample(metrics, "treesurv_requests_queued") == 1
        inner.release("/a")
        inner.release("/c")
        assert [(await running)["status"], (await small)["status"]] == [200, 200]
        assert app.pending_bytes == 0 and app.running == 0

    asyncio.run(scenario())


def test_a_request_that_waited_too_long_is_dropped_before_it_runs() -> None:
    async def scenario() -> None:
        metrics, inner = Metrics(), Held()
        app = gate(inner, metrics, queue_timeout=0.05)
        running = asyncio.create_task(call(app, "/a"))
        await settle()
        late = await call(app, "/v2/models/m/infer")
        assert late["status"] == 503 and late["headers"]["retry-after"] == "1"
        assert late["body"]["reason"] == "queue_timeout"
        assert "waited 0.05 s" in late["body"]["error"]  # the /v2 error shape
        assert inner.started == ["/a"]
        inner.release("/a")
        await running
        assert sample(metrics, "treesurv_requests_shed_total", reason="queue_timeout") == 1
        assert not app.waiting and app.running == 0 and app.pending_bytes == 0

    asyncio.run(scenario())


def test_get_requests_and_probes_never_wait() -> None:
    async def scenario() -> None:
        metrics, inner = Metrics(), Held()
        app = gate(inner, metrics, max_queue=0)
        running = asyncio.create_task(call(app, "/a"))
        await settle()
        assert (await call(app, "/b"))["status"] == 503  # no queue at all
        inner.release("/readyz")
        inner.release("/metrics")
        assert (await call(app, "/readyz", method="GET"))["status"] == 200
        assert (await call(app, "/metrics", method="GET"))["status"] == 200
        inner.release("/a")
        await running

    asyncio.run(scenario())


def test_a_client_gone_while_waiting_frees_its_place() -> None:
    async def scenario() -> None:
        metrics, inner = Metrics(), Held()
        app = gate(inner, metrics)
        running = asyncio.create_task(call(app, "/a"))
        waiting = asyncio.create_task(call(app, "/b"))
        await settle()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert len(app.waiting) == 0 and app.pending_bytes == 10
        inner.release("/a")
        await running
        assert app.running == 0 and app.pending_bytes == 0
        assert b"treesurv_requests_queued 0.0" in generate_latest(metrics.registry)

    asyncio.run(scenario())
