"""The prediction log and the drift gauges, wired into the service.

- `RequestIds`: every HTTP request gets an id (the client's `X-Request-ID` when it
  is a plain token, a new one otherwise), echoed in the response's `X-Request-ID`
  header by the service's outermost middleware (`treesurv.serving.middleware.RequestTelemetry`).
  A prediction route hands its request (the validated body as received, or the
  validated instances) and probabilities over with `remember()` (one tuple in the
  request scope, nothing else on the request path); once the answer has been sent
  the middleware calls `hand_over()`, which queues them in the prediction log with
  the whole request's latency. The log's writer thread turns them into JSON Lines.
- `ServiceLog`: the app's prediction log, opened in the lifespan and closed
  (everything queued written, the file closed) at shutdown, after the server has
  let the requests in flight finish.
- `drift_collector()`: the gauges of the latest drift report, when one is set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Sequence
from itertools import count
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.types import Scope

from treesurv.monitoring.gauges import DriftCollector
from treesurv.monitoring.prediction_log.queue import PredictionLog

log = logging.getLogger(__name__)

HEADER = b"x-request-id"
# A client's id is kept when it is 1 to 128 visible ASCII characters (no spaces,
# no control characters); anything else is replaced, never echoed.
_VALID_ID = re.compile(rb"[\x21-\x7e]{1,128}")
_SCOPE_KEY = "treesurv.predictions"


class ServiceLog:
    """The prediction log of one app: `current` is None while closed or disabled."""

    def __init__(
        self,
        directory: Path | None,
        registry: CollectorRegistry,
        max_queue: int,
        *,
        process: bool = True,
    ) -> None:
        self.directory = directory
        self.registry = registry
        self.max_queue = max_queue
        self.process = process
        self.current: PredictionLog | None = None

    def open(self) -> None:
        if self.directory is None or self.current is not None:
            return
        # Never raises for a bad directory: the sink creates it on first write,
        # and a failure there is counted and logged without touching requests.
        self.current = PredictionLog(
            self.directory, max_queue=self.max_queue, process=self.process, registry=self.registry
        )
        writer = "a writer process" if self.process else "a thread"
        log.info("prediction log: writing to %s (by %s)", self.directory, writer)

    def close(self, timeout: float = 10.0) -> None:
        plog, self.current = self.current, None
        if plog is None:
            return
        plog.close(timeout)
        stats = plog.stats()
        log.info(
            "prediction log closed: %d logged, %d dropped, %d lost to write errors",
            stats.logged,
            stats.dropped,
            stats.write_errors,
        )
        # A later lifespan of the same app registers a new log's counters.
        for metric in (
            plog.logged_total,
            plog.dropped_total,
            plog.write_errors_total,
            plog.queue_entries,
        ):
            with contextlib.suppress(KeyError):  # already gone
                self.registry.unregister(metric)


def drift_collector(path: Path | None) -> DriftCollector | None:
    return None if path is None else DriftCollector(path)


def remember(
    scope: Scope,
    model_version: str,
    request: bytes | Sequence[Any],
    probabilities: Sequence[float],
) -> None:
    """Called by a prediction route: what to log once the answer is sent. `request`
    is a validated `{"instances": [...]}` body as received, or the validated
    instances (see `PredictionLog.record`)."""
    scope[_SCOPE_KEY] = (model_version, request, probabilities)


class RequestIds:
    """Request ids: the client's `X-Request-ID` when it is a plain token, a new one otherwise."""

    def __init__(self) -> None:
        # Ids made here: a random prefix per process and a counter, unique across
        # workers and pods, and far cheaper than a uuid4 per request.
        self._prefix = f"{os.urandom(6).hex()}-"
        self._next = count(1).__next__

    def __call__(self, scope: Scope) -> bytes:
        for name, value in scope["headers"]:
            if name == HEADER:
                if _VALID_ID.fullmatch(value):
                    return bytes(value)
                break
        return f"{self._prefix}{self._next():x}".encode()


def hand_over(log: ServiceLog, scope: Scope, request_id: bytes, latency: float) -> None:
    """Once the answer is sent: queue what the route remembered (if anything)."""
    served = scope.get(_SCOPE_KEY)
    plog = log.current
    if served is not None and plog is not None:
        version, request, probabilities = served
        plog.record(
            request_id.decode("ascii"),
            version,
            request,
            probabilities,
            latency,
            timestamp=time.time() - latency,  # the request's arrival
        )
