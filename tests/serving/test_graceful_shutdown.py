"""SIGTERM on a real `treesurv serve` process in the middle of a request: it stops
accepting, finishes the request, flushes the prediction log and exits 0. Ctrl-C
(SIGINT to the whole process group) ends it as cleanly, log writer included."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from tests.helpers import BIN, alive, free_port, request
from treesurv.core import schema
from treesurv.monitoring.prediction_log.reader import read_log

pytestmark = pytest.mark.slow


def start(
    bundle: Path, port: int, log_dir: Path, out: Path, *, session: bool = False
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TREESURV_PREDICTION_LOG_DIR": str(log_dir),
        "TREESURV_WATCH_INTERVAL": "0",
        "TREESURV_SHUTDOWN_GRACE": "30",
    }
    cmd = [str(BIN / "treesurv"), "serve", "--port", str(port), "--model", str(bundle)]
    with out.open("wb") as fh:
        proc = subprocess.Popen(
            cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=session
        )
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{out.read_text()}")
        try:
            if request(f"http://127.0.0.1:{port}/readyz", timeout=2)[0] == 200:
                return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server not ready:\n{out.read_text()}")
        time.sleep(0.2)


def refuses_connections(port: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.05)
    return False


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def test_sigterm_finishes_the_request_in_flight_and_flushes_the_log(
    bundle_v1: Path, tmp_path: Path
) -> None:
    port, log_dir, out = free_port(), tmp_path / "predictions", tmp_path / "server.log"
    proc = start(bundle_v1, port, log_dir, out)
    try:
        answered = 0
        for _ in range(5):
            status, _ = request(
                f"http://127.0.0.1:{port}/v1/predictions",
                {"instances": [schema.EXAMPLE] * 10},
            )
            assert status == 200
            answered += 10

        # A large batch, uploaded slowly: the server has begun the request when
        # SIGTERM arrives, and the rest of the body comes after it.
        body = orjson.dumps({"instances": [schema.EXAMPLE] * 500})
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(
            b"POST /v1/predictions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nX-Request-ID: in-flight-1\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        half = len(body) // 2
        sock.sendall(body[:half])
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        # It stops accepting new connections at once, but waits for ours.
        assert refuses_connections(port), out.read_text()
        assert proc.poll() is None, out.read_text()
        sock.sendall(body[half:])
        status, headers, payload = read_response(sock)
        sock.close()
        assert status == 200, payload
        assert headers["x-request-id"] == "in-flight-1"
        predictions = orjson.loads(payload)["predictions"]
        assert len(predictions) == 500
        answered += 500
        assert proc.wait(timeout=60) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    log = out.read_text()
    assert "Traceback" not in log, log
    frame = read_log(log_dir).frame
    assert len(frame) == answered  # every answered prediction is in the log
    last = frame[frame["request_id"] == "in-flight-1"]
    assert last["item"].tolist() == list(range(500))
    assert last["death_probability"].tolist() == [p["death_probability"] for p in predictions]
    assert "prediction log closed: 550 logged, 0 dropped" in log


def writer_processes(server_pid: int) -> list[int]:
    """The log writer processes whose parent is `server_pid` (still running)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == server_pid and b"treesurv.monitoring.prediction_log.writer" in cmdline:
            found.append(int(stat.parent.name))
    return found


def test_ctrl_c_to_the_process_group_flushes_the_log_and_leaves_no_process(
    bundle_v1: Path, tmp_path: Path
) -> None:
    port, log_dir, out = free_port(), tmp_path / "predictions", tmp_path / "server.log"
    proc = start(bundle_v1, port, log_dir, out, session=True)
    url = f"http://127.0.0.1:{port}/v1/predictions"
    try:
        assert request(url, {"instances": [schema.EXAMPLE]})[0] == 200
        deadline = time.monotonic() + 10
        while not (writers := writer_processes(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)  # the writer process starts with the first batch
        assert len(writers) == 1, out.read_text()
        # Still queued when the signal comes: written only if the writer outlives it.
        for n in (7, 3):
            assert request(url, {"instances": [schema.EXAMPLE] * n})[0] == 200
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert proc.wait(timeout=60) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not alive(writers[0])  # no orphan
    assert len(read_log(log_dir).frame) == 11
    assert "prediction log closed: 11 logged, 0 dropped, 0 lost" in out.read_text()
