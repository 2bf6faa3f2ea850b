"""Admission control: each worker holds a bounded amount of work and sheds the rest.

Past its bound a worker answers at once with 503 and `Retry-After` instead of
queueing without end (as Triton's `max_queue_size` and `default_queue_policy` do):
the clients that are served keep their latency, memory stays bounded, and a load
balancer or an HPA sees the overload instead of timeouts.

- Only requests that carry work (POST) pass the gate. GETs, and with them the probes
  (`/healthz`, `/readyz`) and `/metrics`, never wait behind a queue.
- At most `max_concurrency` requests are worked on at once; up to `max_queue` more
  wait, first come first served.
- Work is also counted in body bytes (what a batch costs to parse and score, about
  200 bytes a row): when the requests in flight and waiting would hold more than
  `max_pending_bytes`, a new one is shed, so one huge batch counts as what it costs.
- A request that has waited `queue_timeout` seconds is dropped before it is computed.
- A shed request is answered before its body is read: the route does not wait for
  the body it refuses. uvicorn reads and drops the rest itself and keeps the
  connection, as HTTP/1.1 allows an early final answer (closing instead would reset
  the client); that reading is most of what a refusal costs.
- The web page's file upload (`exempt` paths) has its own gate, `UploadGate`: a file
  of megabytes, sent at the client's pace and scored for seconds in a thread, would
  otherwise hold a slot and the byte budget of the prediction routes.
"""

from __future__ import annotations

import asyncio
from collections import deque

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from treesurv.serving.metrics import Metrics
from treesurv.serving.middleware import content_length, send_json

GATED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
RETRY_AFTER_SECONDS = 1
ROUTE_CACHE_SIZE = 1024


class _Waiter:
    __slots__ = ("cost", "turn")

    def __init__(self, cost: int) -> None:
        self.cost = cost
        self.turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Admission:
    """Pure ASGI middleware: the gate in front of the routes that carry work."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        routes: list[BaseRoute],
        max_concurrency: int,
        max_queue: int,
        max_pending_bytes: int,
        queue_timeout: float,
        exempt: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.exempt = exempt
        self.metrics = metrics
        self.routes = routes
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.max_pending_bytes = max_pending_bytes
        self.queue_timeout = queue_timeout
        self.running = 0
        self.pending_bytes = 0  # bodies of the requests running and waiting
        self.waiting: deque[_Waiter] = deque()
        # The route of each path refused so far (its template labels the 503 in the
        # metrics): matching every route costs more than the rest of a refusal.
        self._route_of: dict[tuple[str, str], BaseRoute | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in GATED_METHODS
            or scope.get("path") in self.exempt
        ):
            await self.app(scope, receive, send)
            return
        cost = max(content_length(scope) or 0, 0)
        reason = await self._admit(cost)
        if reason is not None:
            self.metrics.shed(reason)
            await self._refuse(scope, send, reason)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._release(cost)

    async def _admit(self, cost: int) -> str | None:
        """None once the request may run; else why it is shed."""
        if self.running < self.max_concurrency and not self.waiting:
            self._take(cost)
            return None
        if len(self.waiting) >= self.max_queue:
            return "queue_full"
        if self.pending_bytes + cost > self.max_pending_bytes:
            return "bytes_full"
        waiter = _Waiter(cost)
        self.waiting.append(waiter)
        self.pending_bytes += cost
        self.metrics.queued.inc()
        try:
            await asyncio.wait_for(asyncio.shield(waiter.turn), self.queue_timeout)
        except TimeoutError:
            if waiter.turn.done():  # handed a slot as the time ran out: take it
                return None
            self._forget(waiter)
            return "queue_timeout"
        except asyncio.CancelledError:  # the client went away while waiting
            if waiter.turn.done():
                self._release(cost)
            else:
                self._forget(waiter)
            raise
        return None

    def _take(self, cost: int) -> None:
        self.running += 1
        self.pending_bytes += cost
        self.metrics.in_flight.inc()

    def _forget(self, waiter: _Waiter) -> None:
        self.waiting.remove(waiter)
        self.pending_bytes -= waiter.cost
        self.metrics.queued.dec()

    def _release(self, cost: int) -> None:
        """A request finished: its slot goes to the longest waiting one, if any."""
        self.pending_bytes -= cost
        if self.waiting:
            waiter = self.waiting.popleft()
            self.metrics.queued.dec()
            waiter.turn.set_result(None)  # running stays: the slot changes hands
            return
        self.running -= 1
        self.metrics.in_flight.dec()

    def _route(self, scope: Scope) -> BaseRoute | None:
        key = (scope["method"], scope["path"])
        if key in self._route_of:
            return self._route_of[key]
        found = next((r for r in self.routes if r.matches(scope)[0] is Match.FULL), None)
        if len(self._route_of) < ROUTE_CACHE_SIZE:  # bounded: paths are the client's to pick
            self._route_of[key] = found
        return found

    async def _refuse(self, scope: Scope, send: Send, reason: str) -> None:
        route = self._route(scope)
        if route is not None:
            scope["route"] = route
        why = {
            "queue_timeout": f"waited {self.queue_timeout:g} s without a free worker slot",
            "queue_full": f"this worker's queue is full (at most {self.max_queue} may wait)",
            "bytes_full": (
                "this worker's queued requests would exceed "
                f"{self.max_pending_bytes} bytes of bodies"
            ),
        }[reason]
        message = f"overloaded: {why}; retry in {RETRY_AFTER_SECONDS} s"
        key = "error" if scope["path"].startswith("/v2/") else "detail"
        retry = [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]
        await send_json(send, 503, {key: message, "reason": reason}, retry)


class UploadGate:
    """At most `limit` uploaded files scored at once by this worker; past it, the
    caller answers 503 with Retry-After (no queue: scoring a file takes seconds)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0

    def try_enter(self) -> bool:
        if self.busy >= self.limit:
            return False
        self.busy += 1
        return True

    def leave(self) -> None:
        self.busy -= 1
