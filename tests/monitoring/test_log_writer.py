"""The prediction log's writer process, for real: a failing directory, a killed
writer, signals, a server that dies, and the same bytes as the thread writer."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.helpers import alive, counter, lines_in, rows_in
from tests.helpers import log_instances as instances
from treesurv.monitoring.prediction_log.queue import PredictionLog
from treesurv.monitoring.prediction_log.writer import ProcessWriter


def writer_pid(plog: PredictionLog) -> int:
    assert isinstance(plog.writer, ProcessWriter)
    pid = plog.writer.pid
    assert pid is not None, "the writer process is not running"
    return pid


def test_same_lines_as_the_thread_writer(tmp_path: Path) -> None:
    for process in (True, False):
        plog = PredictionLog(tmp_path / str(process), process=process)
        for i in range(50):
            plog.record(f"r{i}", "1.0.0", instances(1 + i % 3), [0.5] * (1 + i % 3), 0.001, 1e9 + i)
        plog.record("body", "1.0.0", b'{"instances":[\n{"a": 1}]}', [0.25], 0.002, 2e9)
        plog.close()
        assert plog.stats().logged == 99 + 1 and plog.stats().write_errors == 0
    assert lines_in(tmp_path / "True") == lines_in(tmp_path / "False")
    assert len(lines_in(tmp_path / "True")) == 51


def test_a_failing_directory_is_counted_logged_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    blocker = tmp_path / "volume"
    blocker.write_text("a file where the log volume should be")
    plog = PredictionLog(blocker / "log", flush_interval=0.01, registry=registry)
    with caplog.at_level(logging.INFO, logger="treesurv"):
        for i in range(5):
            assert plog.record(f"a{i}", "1.0.0", instances(2), [0.1, 0.2], 0.001)
            assert plog.flush()
        assert plog.stats().write_errors == 10 and plog.stats().logged == 0
        assert counter(registry, "treesurv_prediction_log_write_errors_total") == 10
        blocker.unlink()
        blocker.mkdir()  # the volume comes back: the same writer process resumes
        assert plog.record("b", "1.0.0", instances(1), [0.3], 0.001)
        plog.close()
    assert [r["request_id"] for r in rows_in(blocker / "log")] == ["b"]
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 2, problems  # once when it fails, once when it resumes
    assert "Not a directory" in problems[0]
    assert "writing again" in problems[1] and "10 prediction(s) were lost" in problems[1]


def test_a_killed_writer_process_is_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plog = PredictionLog(tmp_path, flush_interval=0.01)
    assert plog.record("before", "1.0.0", instances(1), [0.1], 0.001)
    assert plog.flush()
    first = writer_pid(plog)
    os.kill(first, signal.SIGKILL)
    while alive(first):
        time.sleep(0.01)
    with caplog.at_level(logging.WARNING, logger="treesurv"):
        assert plog.record("lost", "1.0.0", instances(2), [0.2, 0.3], 0.001)
        assert plog.flush()
        assert plog.stats().write_errors == 2  # the batch it could not take: counted
        deadline = time.monotonic() + 10
        while plog.stats().logged < 2 and time.monotonic() < deadline:
            plog.record("after", "1.0.0", instances(1), [0.4], 0.001)
            plog.flush()
            time.sleep(0.1)  # a new process starts after a short delay
    assert writer_pid(plog) != first
    plog.close()
    ids = [r["request_id"] for r in rows_in(tmp_path)]
    assert ids[0] == "before" and "lost" not in ids and ids[1:] == ["after"] * (len(ids) - 1)
    assert "writer process exited with -9" in caplog.text


def test_the_writer_process_outlives_signals_but_not_its_server(tmp_path: Path) -> None:
    # Ctrl-C (SIGINT to the whole process group) or a SIGTERM must not cut the writer
    # off before the server hands over its last batch: it ignores both.
    plog = PredictionLog(tmp_path / "signals", flush_interval=0.01)
    assert plog.record("a", "1.0.0", instances(1), [0.1], 0.001) and plog.flush()
    pid = writer_pid(plog)
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    assert plog.record("b", "1.0.0", instances(1), [0.2], 0.001) and plog.flush()
    assert writer_pid(plog) == pid
    plog.close()
    assert not alive(pid)  # close() ended it
    assert [r["request_id"] for r in rows_in(tmp_path / "signals")] == ["a", "b"]

    # A server killed outright: its writer sees the pipe close, writes what it had
    # and exits (no orphan left behind).
    script = textwrap.dedent(
        f"""
        import os, signal
        from treesurv.monitoring.prediction_log.queue import PredictionLog
        plog = PredictionLog({str(tmp_path / "killed")!r}, flush_interval=0.01)
        plog.record("x", "1.0.0", [{{"Species": "Acer saccharum"}}], [0.5], 0.001)
        plog.flush()
        print(plog.writer.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    server = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert server.returncode == -signal.SIGKILL, server.stderr
    orphan = int(server.stdout)
    deadline = time.monotonic() + 10
    while alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(orphan)
    assert [r["request_id"] for r in rows_in(tmp_path / "killed")] == ["x"]
