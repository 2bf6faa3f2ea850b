"""The prediction log on real files: format, a full queue, failing disks, rotation."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import pytest
from prometheus_client import CollectorRegistry

from tests.helpers import ACER, counter, lines_in, rows_in
from tests.helpers import log_instances as instances
from treesurv.core import schema
from treesurv.monitoring.prediction_log.lines import LINE_FIELDS, RotatingJsonlSink
from treesurv.monitoring.prediction_log.queue import PredictionLog
from treesurv.monitoring.prediction_log.reader import COLUMNS, read_log


def test_records_every_prediction_as_json_lines(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    plog = PredictionLog(tmp_path / "log", registry=registry)
    t0 = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC).timestamp()
    assert plog.record("req-1", "1.2.0", instances(3), [0.1, 0.2, 0.3], 0.0042, timestamp=t0)
    assert plog.record("req-2", "1.2.0", [ACER, {**ACER, "EMF": float("nan")}], [0.5, 0.6], 0.001)
    plog.close()
    lines = lines_in(tmp_path / "log")
    assert [line["request_id"] for line in lines] == ["req-1", "req-2"]  # one line a request
    assert [list(line) for line in lines] == [list(LINE_FIELDS)] * 2  # the documented order
    assert lines[0]["time"] == "2026-03-01T12:00:00.250Z"
    assert lines[0]["model_version"] == "1.2.0" and lines[0]["latency_ms"] == 4.2
    assert lines[0]["death_probability"] == [0.1, 0.2, 0.3]
    assert [list(i) for i in lines[0]["request"]["instances"]] == [list(schema.FEATURE_NAMES)] * 3
    rows = rows_in(tmp_path / "log")
    assert [r["request_id"] for r in rows] == ["req-1"] * 3 + ["req-2"] * 2
    assert [r["item"] for r in rows] == [0, 1, 2, 0, 1]
    assert [list(r) for r in rows] == [list(COLUMNS)] * 5
    assert [r["latency_ms"] for r in rows[:3]] == [4.2] * 3  # the request's, on each row
    assert [r["AMF"] for r in rows[:3]] == [0.0, 1.0, 2.0]
    assert [r["death_probability"] for r in rows] == [0.1, 0.2, 0.3, 0.5, 0.6]
    assert rows[3]["EMF"] is None and rows[4]["EMF"] is None  # NaN is written as null
    for name in schema.FEATURE_NAMES:
        assert rows[0][name] == (schema.EXAMPLE[name] if name != "AMF" else 0.0)
    assert plog.stats().logged == 5 and plog.stats().dropped == 0
    assert counter(registry, "treesurv_prediction_log_records_total") == 5


class BlockingSink:
    """A sink whose writes wait for a signal: the writer thread stalls like on a slow disk."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.data = b""

    def write(self, lines: Sequence[bytes]) -> None:
        self.release.wait(30)
        self.data += b"".join(lines)

    def close(self) -> None:
        pass


def test_full_queue_drops_and_counts_without_blocking() -> None:
    registry = CollectorRegistry()
    sink = BlockingSink()
    plog = PredictionLog(sink=sink, max_queue=5, flush_interval=0.01, registry=registry)
    assert plog.record("first", "1.0.0", instances(1), [0.1], 0.001)
    deadline = time.monotonic() + 5
    while plog.stats().queued and time.monotonic() < deadline:
        time.sleep(0.005)  # the writer took the first entry and is now stuck in write()
    results = [plog.record(f"r{i}", "1.0.0", instances(2), [0.2, 0.3], 0.001) for i in range(8)]
    assert results == [True] * 5 + [False] * 3
    stats = plog.stats()
    assert stats.queued == 5 and stats.dropped == 6  # three requests of two instances
    assert counter(registry, "treesurv_prediction_log_dropped_total") == 6
    sink.release.set()
    plog.close()
    assert sink.data.count(b"\n") == 1 + 5  # one line a request
    assert plog.stats().logged == 11
    assert not plog.record("late", "1.0.0", instances(1), [0.1], 0.001)  # closed: dropped
    assert plog.stats().dropped == 7


def test_unwritable_directory_is_counted_and_recovers(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log directory should be")
    plog = PredictionLog(blocker / "log", flush_interval=0.01, registry=registry)
    assert plog.record("a", "1.0.0", instances(4), [0.1] * 4, 0.001)  # accepted, never raises
    assert plog.flush()
    assert plog.stats().write_errors == 4 and plog.stats().logged == 0
    assert counter(registry, "treesurv_prediction_log_write_errors_total") == 4
    # The volume comes back: logging resumes without a restart.
    blocker.unlink()
    blocker.mkdir()
    assert plog.record("b", "1.0.0", instances(2), [0.2] * 2, 0.001)
    plog.close()
    assert [r["request_id"] for r in rows_in(blocker / "log")] == ["b", "b"]
    assert plog.stats().logged == 2 and plog.stats().write_errors == 4


class DiskFullSink(RotatingJsonlSink):
    """The real sink, with its files opened on /dev/full: every write fails with ENOSPC."""

    def _open(self, path: Path) -> BinaryIO:
        return open("/dev/full", "wb")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_is_counted_and_predictions_go_on(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    plog = PredictionLog(sink=DiskFullSink(tmp_path), flush_interval=0.01, registry=registry)
    for i in range(20):
        assert plog.record(f"r{i}", "1.0.0", instances(1), [0.5], 0.001)
    plog.close()
    assert plog.stats().write_errors == 20 and plog.stats().logged == 0
    assert counter(registry, "treesurv_prediction_log_write_errors_total") == 20


def test_close_flushes_what_is_queued(tmp_path: Path) -> None:
    plog = PredictionLog(tmp_path, flush_interval=60)  # the writer would sleep a minute
    for i in range(200):
        plog.record(f"r{i}", "1.0.0", instances(1), [0.25], 0.001)
    assert lines_in(tmp_path) == []
    started = time.monotonic()
    plog.close()
    assert time.monotonic() - started < 5
    assert len(lines_in(tmp_path)) == 200


def test_rotation_by_size_and_age(tmp_path: Path) -> None:
    now = [1_000_000.0]
    sink = RotatingJsonlSink(tmp_path, max_bytes=1000, max_age_seconds=60, clock=lambda: now[0])
    line = json.dumps({"x": "y" * 190}).encode() + b"\n"  # 201 bytes
    for _ in range(12):
        sink.write([line])
    files = sorted(tmp_path.glob("predictions-*.jsonl"))
    # 1000 bytes fit four lines of 201 before the fifth starts a new file... plus one.
    assert [len(f.read_text().splitlines()) for f in files] == [5, 5, 2]
    now[0] += 61  # an hour-long file limit passes: the next write starts a new file
    sink.write([line])
    sink.close()
    assert len(sorted(tmp_path.glob("predictions-*.jsonl"))) == 4
    assert sum(len(f.read_text().splitlines()) for f in tmp_path.iterdir()) == 13


def test_rotation_through_the_log_keeps_every_line_in_order(tmp_path: Path) -> None:
    plog = PredictionLog(tmp_path, max_bytes=2000, flush_interval=0.005)
    for i in range(60):
        plog.record(f"r{i:03d}", "1.0.0", instances(1), [i / 100], 0.001)
        plog.flush()
    plog.close()
    assert len(list(tmp_path.glob("predictions-*.jsonl"))) > 3
    read = read_log(tmp_path)
    assert read.frame["request_id"].tolist() == [f"r{i:03d}" for i in range(60)]
    assert read.bad_lines == 0


def test_retention_prunes_old_files(tmp_path: Path) -> None:
    old = tmp_path / "predictions-20200101T000000Z-host-1-0001.jsonl"
    old.write_text("{}\n")
    os.utime(old, (1_000, 1_000))
    other = tmp_path / "keep-me.txt"
    other.write_text("not a log file")
    os.utime(other, (1_000, 1_000))
    sink = RotatingJsonlSink(tmp_path, retain_seconds=3600)
    sink.write([b'{"a": 1}\n'])
    sink.close()
    assert not old.exists() and other.exists()
    assert len(list(tmp_path.glob("predictions-*.jsonl"))) == 1


def test_two_logs_in_one_directory_never_collide(tmp_path: Path) -> None:
    a, b = PredictionLog(tmp_path), PredictionLog(tmp_path)
    a.record("a", "1.0.0", instances(1), [0.1], 0.001)
    b.record("b", "1.0.0", instances(1), [0.2], 0.001)
    a.close()
    b.close()
    assert sorted(r["request_id"] for r in lines_in(tmp_path)) == ["a", "b"]
    assert a.stats().write_errors == b.stats().write_errors == 0


def test_bad_entries_never_raise(tmp_path: Path) -> None:
    plog = PredictionLog(tmp_path)
    # Each request is checked by record(): a bad entry is refused at once and counted
    # (by its number of probabilities).
    assert not plog.record("x", "1.0.0", None, [0.1], 0.001)  # type: ignore[arg-type]
    assert not plog.record("y", "1.0.0", instances(2), [0.1], 0.001)  # lengths differ
    assert not plog.record("z", "1.0.0", [{**schema.EXAMPLE, "AMF": object()}], [0.1], 0.001)
    assert plog.record("ok", "1.0.0", instances(1), [0.1], 0.001)
    assert not plog.record("b", "1.0.0", instances(9), [0.1] * 8, 0.001)
    assert not plog.record("p", "1.0.0", instances(2), [0.1, "high"], 0.001)  # type: ignore[list-item]
    assert not plog.record("e", "1.0.0", b'{"instances":[]}', [], 0.001)  # nothing scored
    assert plog.record("batch", "1.0.0", instances(9), [0.1] * 9, 0.001)
    plog.close()
    rows = rows_in(tmp_path)
    assert [r["request_id"] for r in rows] == ["ok"] + ["batch"] * 9
    assert [r["item"] for r in rows[1:]] == list(range(9))
    assert plog.stats().dropped == 1 + 1 + 1 + 8 + 2 and plog.stats().logged == 10


def test_a_request_body_is_logged_as_received_on_one_line(tmp_path: Path) -> None:
    # The API hands over the validated body: pretty-printed JSON (line breaks between
    # tokens) still makes one line, and odd strings survive exactly.
    odd = [{**schema.EXAMPLE, "Species": 'a},{"b\n'}, {**schema.EXAMPLE, "Soil": "{"}, ACER]
    body = json.dumps({"instances": odd, "horizon_days": None}, indent=2).encode()
    assert body.count(b"\n") > 30
    plog = PredictionLog(tmp_path)
    assert plog.record('id"},{', "1.0.0", body.replace(b"\n", b"\r\n"), [0.1, 0.2, 0.3], 0.001)
    plog.close()
    (line,) = lines_in(tmp_path)
    assert line["request"] == {"instances": odd, "horizon_days": None}
    rows = rows_in(tmp_path)
    assert [r["Species"] for r in rows] == ['a},{"b\n', "Quercus rubra", "Acer saccharum"]
    assert [r["Soil"] for r in rows][1] == "{"
    assert [r["item"] for r in rows] == [0, 1, 2]
    assert {r["request_id"] for r in rows} == {'id"},{'}
    assert [r["death_probability"] for r in rows] == [0.1, 0.2, 0.3]


def test_queued_bytes_are_bounded() -> None:
    sink = BlockingSink()
    body = b'{"instances":[%b]}' % json.dumps(schema.EXAMPLE).encode()
    plog = PredictionLog(sink=sink, max_queue_bytes=len(body) * 7 // 2, flush_interval=0.01)
    assert plog.record("first", "1.0.0", body, [0.1], 0.001)
    deadline = time.monotonic() + 5
    while plog.stats().queued and time.monotonic() < deadline:
        time.sleep(0.005)  # the writer took the first entry and is stuck in write()
    results = [plog.record(f"r{i}", "1.0.0", body, [0.2], 0.001) for i in range(5)]
    assert results == [True] * 3 + [False] * 2  # room for 3.5 bodies
    sink.release.set()
    plog.flush()
    # Written bodies free their room.
    assert plog.record("later", "1.0.0", body, [0.3], 0.001)
    plog.close()
    assert sink.data.count(b"\n") == 1 + 3 + 1
    assert plog.stats().dropped == 2


def test_read_log_skips_torn_lines_and_filters_by_time(tmp_path: Path) -> None:
    base = datetime(2026, 5, 1, tzinfo=UTC)
    plog = PredictionLog(tmp_path)
    for day in range(5):
        ts = (base + timedelta(days=day)).timestamp()
        plog.record(f"d{day}", "1.0.0", instances(1), [0.1 * day], 0.002, timestamp=ts)
    plog.close()
    (path,) = tmp_path.glob("predictions-*.jsonl")
    with path.open("a") as fh:
        fh.write('{"time": "2026-05-06T00:00:00Z", "request_id": "torn", "Spe')  # cut by a crash
    read = read_log(tmp_path, since=datetime(2026, 5, 3))
    assert read.frame["request_id"].tolist() == ["d2", "d3", "d4"]
    assert read.bad_lines == 1 and read.files == 1
    assert read.frame["Light_ISF"].dtype == float
    until = read_log(tmp_path, until=datetime(2026, 5, 2, tzinfo=UTC)).frame
    assert until["request_id"].tolist() == ["d0"]


def test_read_log_cuts_lines_at_newlines_only(tmp_path: Path) -> None:
    # JSON may carry U+2028 or U+0085 unescaped inside a string; such a line is
    # still one line (a str.splitlines reader would see two torn ones).
    line = {"time": "2026-04-01T00:00:00.000Z", "request_id": "odd\u2028id\u0085x",
            "model_version": "1.0.0", "latency_ms": 1.0, "death_probability": [0.3],
            "request": {"instances": [schema.EXAMPLE]}}  # fmt: skip
    text = json.dumps(line, ensure_ascii=False)
    assert "\u2028" in text
    (tmp_path / "predictions-20260401T000000Z-host-1-0001.jsonl").write_text(
        text + "\r\n", encoding="utf-8"
    )
    read = read_log(tmp_path)
    assert read.bad_lines == 0
    assert read.frame["request_id"].tolist() == ["odd\u2028id\u0085x"]
