"""The prediction log's line format and the rotating files it goes to.

Shared by the server (`treesurv.monitoring.prediction_log.queue`, which queues entries) and
the writer, in a thread or a process of its own (`treesurv.monitoring.prediction_log.writer`,
which encodes them with `encode_line` and appends them through a `Sink`). The
format is documented in the queue module's docstring and on the monitoring page of the docs.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from array import array
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson

from treesurv.core import schema

FILE_PREFIX = "predictions-"
FILE_SUFFIX = ".jsonl"
# The fields of a line, in the order they are written (the documented format).
LINE_FIELDS = ("time", "request_id", "model_version", "latency_ms", "request", "death_probability")
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_AGE_SECONDS = 3600.0
# File sequence numbers, shared by every sink of the process so names never collide.
_FILE_SEQ = itertools.count(1)


class Sink(Protocol):
    """Where encoded lines go; `write` raises OSError when they could not be stored."""

    def write(self, lines: Sequence[bytes]) -> None: ...

    def close(self) -> None: ...


class RotatingJsonlSink:
    """Appends lines to `predictions-*.jsonl` files under `directory`.

    A new file starts when the current one reaches `max_bytes` or `max_age_seconds`.
    Files older than `retain_seconds` (by modification time) are deleted at each
    rotation. After a failed write the file is abandoned and the next write starts
    a new one, so a directory that comes back (disk freed, volume remounted)
    resumes logging by itself.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        retain_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes < 1 or max_age_seconds <= 0:
            raise ValueError("max_bytes and max_age_seconds must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_age_seconds = max_age_seconds
        self.retain_seconds = retain_seconds
        self._clock = clock
        self._tag = f"{_safe(socket.gethostname())}-{os.getpid()}"
        self._fh: BinaryIO | None = None
        self._path: Path | None = None
        self._size = 0
        self._opened = 0.0

    @property
    def current(self) -> Path | None:
        return self._path

    def write(self, lines: Sequence[bytes]) -> None:
        now = self._clock()
        if (
            self._fh is None
            or self._size >= self.max_bytes
            or now - self._opened >= self.max_age_seconds
        ):
            self._rotate(now)
        assert self._fh is not None
        data = b"".join(lines)
        try:
            self._fh.write(data)
            self._fh.flush()
        except OSError:
            self._abandon()
            raise
        self._size += len(data)

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh, self._path = self._fh, None, None
            fh.close()

    def _rotate(self, now: float) -> None:
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
        seq = next(_FILE_SEQ)
        path = self.directory / f"{FILE_PREFIX}{stamp}-{self._tag}-{seq:04d}{FILE_SUFFIX}"
        self._fh = self._open(path)
        self._path, self._size, self._opened = path, 0, now
        if self.retain_seconds is not None:
            self._prune(now - self.retain_seconds)

    def _open(self, path: Path) -> BinaryIO:
        # "x": never append to (or clobber) another process's file.
        return path.open("xb")

    def _abandon(self) -> None:
        try:
            self.close()
        except OSError:
            self._fh, self._path = None, None

    def _prune(self, before: float) -> None:
        for path in self.directory.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}"):
            try:
                if path != self._path and path.stat().st_mtime < before:
                    path.unlink()
            except OSError:
                continue  # another process pruned it first


# One queued request: (arrival time, number of instances, request id, model
# version, latency in seconds, the request as JSON bytes, the probability of a
# single instance as a float or those of several as their float64 bytes).
Entry = tuple[float, int, str, str, float, bytes, float | bytes]


dumps = orjson.dumps
# NaN (a missing EMF sent as NaN) is written as null by orjson; NumPy scalars pass.
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_N_FEATURES = len(schema.FEATURE_NAMES)
_MS: list[bytes] = [b".%03dZ" % i for i in range(1000)]


def encode_line(entry: Entry) -> bytes:
    """The JSON line of one queued request (see `PredictionLog.record`)."""
    ts, _, request_id, version, latency, request, proba = entry
    if b"\n" in request or b"\r" in request:
        # Valid JSON holds line breaks only between tokens (never raw inside a
        # string), where a space means the same.
        request = request.replace(b"\n", b" ").replace(b"\r", b" ")
    return b"".join(
        (
            _iso(ts),
            b'","request_id":',
            dumps(request_id),
            _middle(version),
            b'"latency_ms":',
            dumps(round(latency * 1000.0, 3)),
            b',"request":',
            request,
            b',"death_probability":',
            _probabilities(proba),
            b"}\n",
        )
    )


def _probabilities(proba: float | bytes) -> bytes:
    """The JSON array of an entry's probabilities (one float, or float64 bytes)."""
    if isinstance(proba, bytes):
        return dumps(array("d", proba).tolist())
    return b"[%b]" % dumps(proba)


def encode_instances(instances: Sequence[Any], n: int) -> bytes:
    """`{"instances": [...]}` of `n` instances (mappings or validated models), as
    the log's `request`: the ten features of each, in schema order."""
    if len(instances) != n:
        raise ValueError("instances and probabilities differ in length")
    return dumps({"instances": [_features(i) for i in instances]}, option=_NUMPY)


def _features(instance: Any) -> Any:
    """The ten feature values of an instance, as a dict in schema order."""
    if isinstance(instance, dict):
        return {name: instance.get(name) for name in schema.FEATURE_NAMES}
    values = vars(instance)  # the API's validated models: their fields, in schema order
    if len(values) == _N_FEATURES:
        return values
    return {name: values.get(name) for name in schema.FEATURE_NAMES}


_second: tuple[int, bytes] = (-1, b"")
_middles: dict[str, bytes] = {}


def _iso(ts: float) -> bytes:
    """`{"time":"` and the ISO 8601 UTC time with milliseconds; the date part is
    formatted once a second."""
    global _second
    sec = int(ts // 1)
    if _second[0] != sec:
        text = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (sec, b'{"time":"' + text.encode())
    return _second[1] + _MS[min(999, int((ts - sec) * 1000))]


def _middle(version: str) -> bytes:
    middle = _middles.get(version)
    if middle is None:
        if len(_middles) > 64:  # versions come and go over a long-lived process
            _middles.clear()
        middle = _middles[version] = b',"model_version":%b,' % orjson.dumps(version)
    return middle


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40] or "host"
