"""Start a real server process on a free loopback port, and stop it (for slow tests)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(url: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
    data = None if body is None else orjson.dumps(body)
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
            kind = r.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        raw, status, kind = exc.read(), exc.code, exc.headers.get("content-type", "")
    return status, orjson.loads(raw) if "json" in kind else raw.decode()


@contextmanager
def running(
    cmd: list[str],
    env: Mapping[str, str],
    port: int,
    cwd: Path,
    ready: str = "/healthz",
    timeout: float = 90,
) -> Iterator[str]:
    """Run `cmd` until `ready` answers 200 on 127.0.0.1:port; SIGTERM it at the end."""
    log = cwd / f"server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if request(base + ready, timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready in {timeout}s:\n{log.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    # uvicorn re-raises the signal it handled after a clean shutdown: -SIGTERM is normal.
    assert proc.returncode in (0, -signal.SIGTERM), (
        f"server did not stop cleanly ({proc.returncode}):\n{log.read_text()}"
    )


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, exited but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def worker_pids(base: str) -> set[str]:
    """Processes that report a loaded model in /metrics (gunicorn multiprocess mode)."""
    _, text = request(f"{base}/metrics")
    return set(re.findall(r'^treesurv_model_info\{[^}]*pid="(\d+)"', text, re.M))


def wait_for_workers(base: str, n: int, timeout: float = 60) -> bool:
    """Readiness answers from the first worker up; the others may still be loading."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(worker_pids(base)) >= n:
            return True
        time.sleep(0.2)
    return False
