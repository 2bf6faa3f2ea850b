"""The prediction log: every served prediction, recorded off the request path.

`PredictionLog.record()` appends one entry per request to a bounded in-memory
queue and returns: no lock, no I/O, no exception (the API calls it after the
answer has been sent). A request is logged as **one line**, built from bytes the
service already has: the request body as received (validated, so exactly the
values the model saw) and the probabilities. Nothing is re-encoded per instance:
logging one line per instance cost ~3 µs an instance (an orjson dict each), 11%
of a batch request's throughput. Nothing queued keeps the request's objects alive
either: an entry is a flat tuple of strings, numbers and bytes, which the garbage
collector stops tracking at its first pass (holding the validated models made it
run every few requests).

A background thread wakes every 0.2 s and hands what was queued, as one batch, to
a writer (`treesurv.monitoring.prediction_log.writer`): by default a **writer process** that
encodes the lines and appends them to rotating files, so encoding and file I/O
(~4 µs a request, and the GIL hand-offs that came with them, together 5-6% of a
single-instance request's throughput) leave the server's interpreter; the server
only copies the batch to a pipe. With `process=False` (or a custom `sink`) a
thread of this process does it, every 50 ms.

A full queue (in requests or in bytes) drops the entry and counts it; a failing
disk (full, read-only, gone) is counted, logged once when it starts failing (and
once when it recovers), and the entries are dropped; neither ever slows down or
fails a prediction. `close()` drains the queue.

File format (one JSON object per request per line, UTF-8; see the docs' monitoring page):
`time` (ISO 8601 UTC, milliseconds, the request's arrival),
`request_id`, `model_version`, `latency_ms` (the whole request), `request` (an
object whose `instances` are the scored inputs, in order: the body of a
`/v1/predictions` request as received) and `death_probability` (one per
instance, in the same order). `treesurv.monitoring.prediction_log.reader.read_log` turns the
lines back into one row per instance. Files are named
`predictions-<UTC start>-<host>-<pid>-<seq>.jsonl`, so several processes and pods
can share one directory.
"""

from __future__ import annotations

import logging
import threading
import time
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from treesurv.monitoring.prediction_log.lines import (
    DEFAULT_MAX_AGE_SECONDS,
    DEFAULT_MAX_BYTES,
    Entry,
    RotatingJsonlSink,
    Sink,
    encode_instances,
)
from treesurv.monitoring.prediction_log.writer import ProcessWriter, ThreadWriter, Writer

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 10_000
# Queued request bodies may hold up to this many bytes (a stalled disk must not let
# 10,000 queued 2 MiB batches fill the memory).
DEFAULT_MAX_QUEUE_BYTES = 256 * 1024 * 1024
# The writer drains the queue this often. Encoding in a thread of the server: a short
# interval keeps the queued entries few and cache-warm (0.25 s and 1 s cost the
# request path more). Shipping to the writer process: fewer, larger batches cost
# the server less (measured in process: 0.2 s ~5 µs a request, 0.05 s ~6.7 µs).
DEFAULT_FLUSH_INTERVAL = 0.05
PROCESS_FLUSH_INTERVAL = 0.2
# One batch handed to the writer holds requests of about this many bytes at most.
_MAX_WRITE = 4 * 1024 * 1024

# Metric names: the contract in deploy/METRICS.md.
LOGGED_METRIC = "treesurv_prediction_log_records_total"
DROPPED_METRIC = "treesurv_prediction_log_dropped_total"
ERRORS_METRIC = "treesurv_prediction_log_write_errors_total"
QUEUE_METRIC = "treesurv_prediction_log_queue_entries"


@dataclass(frozen=True)
class LogStats:
    """Counts since the log was created, in predictions (instances): written, dropped
    (queue full, closed or unencodable) and lost to write errors; requests queued."""

    logged: int
    dropped: int
    write_errors: int
    queued: int


class PredictionLog:
    """Bounded queue + background writer; see the module docstring.

    `registry`: a prometheus-client registry to register the counters in (None:
    not registered; the objects are still reachable as attributes).
    """

    def __init__(
        self,
        directory: Path | str | None = None,
        *,
        sink: Sink | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        flush_interval: float | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        retain_seconds: float | None = None,
        process: bool = True,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if max_queue < 1 or max_queue_bytes < 1:
            raise ValueError("max_queue and max_queue_bytes must be at least 1")
        if max_bytes < 1 or max_age_seconds <= 0:
            raise ValueError("max_bytes and max_age_seconds must be positive")
        self.writer: Writer
        if sink is not None:
            self.writer = ThreadWriter(sink)
        elif directory is None:
            raise ValueError("PredictionLog needs a directory or a sink")
        elif process:
            self.writer = ProcessWriter(
                directory,
                max_bytes=max_bytes,
                max_age_seconds=max_age_seconds,
                retain_seconds=retain_seconds,
            )
        else:
            self.writer = ThreadWriter(
                RotatingJsonlSink(
                    directory,
                    max_bytes=max_bytes,
                    max_age_seconds=max_age_seconds,
                    retain_seconds=retain_seconds,
                )
            )
        self.directory = None if directory is None else Path(directory)
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        # Bytes queued = added - removed; each total has one writer (the request
        # path, the writer thread), so neither update can be lost to the other.
        self._bytes_added = self._bytes_removed = 0
        if flush_interval is None:
            flush_interval = (
                PROCESS_FLUSH_INTERVAL
                if isinstance(self.writer, ProcessWriter)
                else DEFAULT_FLUSH_INTERVAL
            )
        self.flush_interval = flush_interval
        self._queue: deque[Entry] = deque()
        self._high_water = max(1, max_queue // 2)
        self._wake = threading.Event()
        self._closed = False
        self._busy = False
        self._lock = threading.Lock()  # only for the rare drop path and the stats
        self._logged = self._dropped = self._errors = 0
        self._failing = False  # the sink's last write failed (logged once per streak)
        self._lost_in_streak = 0
        self._close_timeout = 10.0
        self.logged_total = Counter(
            LOGGED_METRIC, "Predictions written to the prediction log.", registry=registry
        )
        self.dropped_total = Counter(
            DROPPED_METRIC,
            "Predictions not logged because the queue was full or the log closed.",
            registry=registry,
        )
        self.write_errors_total = Counter(
            ERRORS_METRIC,
            "Predictions lost because the log sink failed (disk full, read-only, ...).",
            registry=registry,
        )
        self.queue_entries = Gauge(
            QUEUE_METRIC, "Requests waiting in the prediction log queue.", registry=registry
        )
        self.queue_entries.set_function(lambda: len(self._queue))
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- request path

    def record(
        self,
        request_id: str,
        model_version: str,
        request: bytes | Sequence[Any],
        probabilities: Sequence[float],
        latency_seconds: float,
        timestamp: float | None = None,
    ) -> bool:
        """Queue one request's predictions; True if queued, False if dropped.

        Never blocks, never raises. `request` is either the JSON body of a
        `/v1/predictions` request as received (bytes: an object whose `instances`
        the service validated and scored; it is logged as it is, so pass nothing
        unvalidated), or the instances themselves: mappings with the schema's
        feature names, or objects with those attributes (the API's validated
        models), encoded here. An entry that cannot be encoded is dropped (counted).
        """
        try:
            n = len(probabilities)
            if self._closed or len(self._queue) >= self.max_queue:
                self._drop(n)
                return False
            if n < 1:
                raise ValueError("no predictions")
            ts = time.time() if timestamp is None else timestamp
            if not isinstance(request, bytes):
                request = encode_instances(request, n)
            size = len(request)
            if self._bytes_added - self._bytes_removed + size > self.max_queue_bytes:
                self._drop(n)
                return False
            self._bytes_added += size
            # One float stays a float; several become their float64 bytes, so the
            # queue keeps no list alive (`array` refuses anything not a number).
            # The writer formats them.
            proba = float(probabilities[0]) if n == 1 else array("d", probabilities).tobytes()
            self._queue.append(
                (ts, n, request_id, model_version, float(latency_seconds), request, proba)
            )
            if len(self._queue) >= self._high_water:
                self._wake.set()
            return True
        except Exception:  # a monitoring side channel must never fail a request
            self._drop(_length(probabilities))
            return False

    def _drop(self, n: int) -> None:
        with self._lock:
            self._dropped += n
        self.dropped_total.inc(n)

    # ----------------------------------------------------------- writer thread

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            closing = self._closed
            try:
                self._drain()
                while closing and self._queue:
                    self._drain()
            except Exception:  # pragma: no cover - a bug here must not stop the thread
                log.exception("prediction log: writer error")
            if closing:
                break
        error = self.writer.close(self._close_timeout)
        if error:
            log.error("prediction log: %s", error)

    def _drain(self) -> None:
        self._busy = True
        try:
            self._drain_queue()
        finally:
            self._busy = False

    def _drain_queue(self) -> None:
        # What was queued when the writer woke, not what arrives meanwhile: one
        # batch per wake-up, not a trickle of small ones (each costs a pipe round
        # trip and GIL hand-offs with the request path).
        queue = self._queue
        pending = len(queue)
        while pending > 0:
            batch: list[Entry] = []
            size = 0
            while pending > 0 and size < _MAX_WRITE:
                entry = queue.popleft()
                pending -= 1
                batch.append(entry)
                size += len(entry[5])
            self._bytes_removed += size
            outcome = self.writer.write(batch)
            if outcome.unencodable:
                log.warning(
                    "prediction log: %d prediction(s) could not be encoded; dropped",
                    outcome.unencodable,
                )
                self._drop(outcome.unencodable)
            if outcome.lost or outcome.error:
                self._report_error(outcome.lost, outcome.error or "unknown error")
            if outcome.written:
                if self._failing:
                    self._failing = False
                    log.warning(
                        "prediction log: writing again to %s; %d prediction(s) were lost",
                        self.directory or "the sink",
                        self._lost_in_streak,
                    )
                with self._lock:
                    self._logged += outcome.written
                self.logged_total.inc(outcome.written)

    def _report_error(self, n: int, error: str) -> None:
        with self._lock:
            self._errors += n
        self.write_errors_total.inc(n)
        # Logged once when the sink starts failing, not per request: a full disk
        # must not also flood the service's log. The counter keeps the tally.
        if not self._failing:
            self._failing, self._lost_in_streak = True, 0
            log.error(
                "prediction log: cannot write (%s); predictions are still served, the "
                "lost ones are counted in %s (logged again when writing resumes)",
                error,
                ERRORS_METRIC,
            )
        self._lost_in_streak += n

    # --------------------------------------------------------------- lifecycle

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far has been handed to the sink."""
        deadline = time.monotonic() + timeout
        while (self._queue or self._busy) and self._thread.is_alive():
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.002)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting entries, write everything queued, close the file."""
        self._close_timeout = timeout
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("prediction log: the writer did not finish within %.0fs", timeout)

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> LogStats:
        with self._lock:
            return LogStats(self._logged, self._dropped, self._errors, len(self._queue))


def _length(items: Any) -> int:
    try:
        return len(items)
    except TypeError:
        return 1
