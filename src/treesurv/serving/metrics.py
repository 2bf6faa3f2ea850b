"""Prometheus metrics of the service, in one registry per app.

The request path only touches pre-resolved label children (a dict lookup, then
`inc`/`observe`), so instrumentation costs about a microsecond per request.
With several gunicorn workers, `PROMETHEUS_MULTIPROC_DIR` switches to
prometheus-client's multiprocess mode and `/metrics` aggregates every worker.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.registry import Collector

BULK_MIN = 32  # batches from this size add their histogram counts at once

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
PROBABILITY_BUCKETS = (*(round(0.05 * i, 2) for i in range(1, 20)), 1.0)
UNMATCHED = "unmatched"
SHED_REASONS = ("queue_full", "bytes_full", "queue_timeout")
CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """The service's metrics; `render()` gives the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("route", "method", "status")
        self.requests = Counter(
            "treesurv_http_requests",
            "HTTP requests answered, by route template, method and status.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "treesurv_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.death_probability = Histogram(
            "treesurv_predicted_death_probability",
            "Predicted probabilities of death (one observation per scored instance).",
            buckets=PROBABILITY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "treesurv_predictions",
            "Instances scored, by endpoint.",
            ("endpoint",),
            registry=self.registry,
        )
        self.model_info = Gauge(
            "treesurv_model_info",
            "The model being served (value 1; its name and version are labels).",
            ("name", "version"),
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.kernels_compiled = Gauge(
            "treesurv_kernels_compiled",
            "1 once the model's Numba kernels are compiled; until then a NumPy walk of "
            "the same trees answers (same results, slower).",
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.reloads = Counter(
            "treesurv_model_reloads",
            "Models loaded and swapped in (including the first one).",
            registry=self.registry,
        )
        self.reload_failures = Counter(
            "treesurv_model_reload_failures",
            "Bundles refused (missing, tampered or invalid); the previous model kept serving.",
            registry=self.registry,
        )
        # Admission control (treesurv.serving.admission): the work a worker holds and
        # what it refused; summed over the workers of a pod in multiprocess mode.
        self.in_flight = Gauge(
            "treesurv_requests_in_flight",
            "Requests carrying work (POST) being worked on now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.queued = Gauge(
            "treesurv_requests_queued",
            "Requests carrying work waiting for a slot (the HPA's metric).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.shed_requests = Counter(
            "treesurv_requests_shed",
            "Requests answered 503 at once instead of queued: queue_full, bytes_full "
            "(the bodies waiting were too large) or queue_timeout (waited too long).",
            ("reason",),
            registry=self.registry,
        )
        self._shed = {r: self.shed_requests.labels(r) for r in SHED_REASONS}
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._endpoints: dict[str, Any] = {}
        self._served: tuple[str, str] | None = None
        self._collectors: list[Collector] = []

    def add_collector(self, collector: Collector) -> None:
        """A custom collector (e.g. the drift gauges), rendered in both modes."""
        self.registry.register(collector)
        self._collectors.append(collector)

    def request_children(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        """The (counter, histogram) children of one label set, created once."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            labels = (route, method, str(status))
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._children[key] = children
        return children

    def shed(self, reason: str) -> None:
        self._shed[reason].inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        counter, histogram = self.request_children(route, method, status)
        counter.inc()
        histogram.observe(seconds)

    def observe_predictions(self, endpoint: str, probabilities: Sequence[float]) -> None:
        """Count the full classifier's predictions and add them to its histogram."""
        histogram = self.death_probability
        if len(probabilities) < BULK_MIN or not hasattr(histogram, "_buckets"):
            for p in probabilities:
                histogram.observe(p)
        else:
            # prometheus-client observes one value at a time (about 1 us each, holding
            # the GIL); a 1,000-row batch adds its bucket counts at once instead. The
            # same counts land in the same (non-cumulative) buckets `observe` uses.
            bounds = histogram._upper_bounds
            index = np.searchsorted(bounds, np.asarray(probabilities, dtype=float), "left")
            for bucket, count in enumerate(np.bincount(index, minlength=len(bounds)).tolist()):
                if count:
                    histogram._buckets[bucket].inc(count)
            histogram._sum.inc(math.fsum(probabilities))
        self.count_predictions(endpoint, len(probabilities))

    def count_predictions(self, endpoint: str, n: int) -> None:
        """Count predictions only (other models' probabilities stay out of the histogram)."""
        counter = self._endpoints.get(endpoint)
        if counter is None:
            counter = self._endpoints[endpoint] = self.predictions.labels(endpoint)
        counter.inc(n)

    def serving(self, name: str, version: str) -> None:
        if self._served is not None and self._served != (name, version):
            self.model_info.remove(*self._served)
        self.model_info.labels(name, version).set(1)
        self._served = (name, version)

    def render(self) -> bytes:
        if multiprocess():
            from prometheus_client import multiprocess as mp

            registry = CollectorRegistry()
            mp.MultiProcessCollector(registry)
            for collector in self._collectors:
                registry.register(collector)
            return generate_latest(registry)
        return generate_latest(self.registry)
