"""Where the prediction log's entries are turned into lines and stored.

`PredictionLog`'s background thread hands each batch of queued entries to a
backend and gets back what became of them (`Outcome`):

- `ThreadWriter` encodes and writes in that thread, through any `Sink`.
- `ProcessWriter` ships the batch to a writer process (this module, run as
  `python -m treesurv.monitoring.prediction_log.writer`), which encodes the lines and appends
  them to the rotating files. The server process then pays only for queueing an
  entry and copying the batch to a pipe: encoding and file I/O (about 4 µs a
  request on the server's interpreter, and the GIL hand-offs that go with them)
  happen on another core.

The pipe protocol, both ways: frames of a 4-byte big-endian length and a
`marshal` payload (stdlib, C speed; safe here because both ends are this code
over a private pipe). In: a list of entries. Out, one per frame in: the
`Outcome` as a tuple. The process exits when its stdin closes, after closing
its file. It runs in a session of its own and ignores SIGINT and SIGTERM, so a
Ctrl-C or a signal to the server's process group cannot cut it off before the
server has handed over its last batch (when the server dies, stdin closes and it
exits).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import marshal
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from treesurv.monitoring.prediction_log.lines import Entry, RotatingJsonlSink, Sink, encode_line

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
# Restarting a writer process that keeps failing: wait this long, doubling to the max.
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 30.0
PIPE_SIZE = 1 << 20


@dataclass(frozen=True)
class Outcome:
    """What became of a batch, counted in predictions (instances)."""

    written: int = 0
    lost: int = 0  # the sink failed: `error` says why
    unencodable: int = 0
    error: str | None = None


class Writer(Protocol):
    def write(self, entries: Sequence[Entry]) -> Outcome: ...

    def close(self, timeout: float) -> str | None:
        """Close the files; an error text when that failed."""


def write_entries(sink: Sink, entries: Sequence[Entry]) -> Outcome:
    """Encode `entries` and write them to `sink` in one call."""
    try:
        lines = [encode_line(e) for e in entries]
        unencodable = 0
        n = sum(e[1] for e in entries)
    except Exception:  # one bad entry: encode one by one, count what is skipped
        lines, unencodable, n = [], 0, 0
        for e in entries:
            try:
                lines.append(encode_line(e))
                n += e[1]
            except Exception:
                unencodable += _count(e)
    if not lines:
        return Outcome(unencodable=unencodable)
    try:
        sink.write(lines)
    except OSError as exc:
        return Outcome(lost=n, unencodable=unencodable, error=str(exc))
    return Outcome(written=n, unencodable=unencodable)


def _count(entry: Any) -> int:
    try:
        return int(entry[1])
    except Exception:
        return 1


class ThreadWriter:
    """Encodes and writes in the calling thread."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def write(self, entries: Sequence[Entry]) -> Outcome:
        return write_entries(self.sink, entries)

    def close(self, timeout: float) -> str | None:
        try:
            self.sink.close()
        except OSError as exc:
            return str(exc)
        return None


class ProcessWriter:
    """Ships batches to a writer process, started on the first batch and again
    (after a growing delay) when it dies; a batch it could not take is lost and
    counted, never retried into a second copy."""

    def __init__(
        self,
        directory: Path | str,
        *,
        max_bytes: int,
        max_age_seconds: float,
        retain_seconds: float | None,
    ) -> None:
        self.directory = Path(directory)
        self.argv = [
            sys.executable,
            "-m",
            __name__,
            str(self.directory),
            "--max-bytes",
            str(max_bytes),
            "--max-age",
            repr(max_age_seconds),
        ]
        if retain_seconds is not None:
            self.argv += ["--retain", repr(retain_seconds)]
        self._proc: subprocess.Popen[bytes] | None = None
        self._error = "the log writer process is not running"
        self._delay = 0.0
        self._not_before = 0.0
        self._lock = threading.Lock()  # one batch in flight; close waits for it

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def write(self, entries: Sequence[Entry]) -> Outcome:
        with self._lock:
            proc = self._running()
            if proc is not None:
                try:
                    _send_all(_stdin(proc).fileno(), marshal.dumps(list(entries)))
                    # Our own writer process over a private pipe (module docstring).
                    reply = marshal.loads(_receive(_stdout(proc)))  # noqa: S302  # nosec B302
                    outcome = Outcome(*reply)
                except (OSError, EOFError, ValueError, TypeError) as exc:
                    why = exc if isinstance(exc, OSError) else "it stopped answering"
                    self._failed(f"the log writer process failed ({why})")
                else:
                    self._delay = 0.0
                    return outcome
            return Outcome(lost=sum(_count(e) for e in entries), error=self._error)

    def close(self, timeout: float) -> str | None:
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return None
            with contextlib.suppress(OSError):
                _stdin(proc).close()  # EOF: the process closes its file and exits
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return f"the log writer process did not exit within {timeout:.0f}s; killed"
            finally:
                with contextlib.suppress(OSError):
                    _stdout(proc).close()
            return None if code == 0 else f"the log writer process exited with {code}"

    def _running(self) -> subprocess.Popen[bytes] | None:
        """The writer process; started when needed, None while waiting to restart it."""
        if self._proc is not None:
            code = self._proc.poll()
            if code is None:
                return self._proc
            self._failed(f"the log writer process exited with {code}")
        if time.monotonic() < self._not_before:
            return None
        try:
            # Our own interpreter and module, with an argument list (no shell). In a
            # session of its own: a Ctrl-C or a signal to the server's process group
            # does not reach it, not even while it starts (before it ignores them).
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=0,
                start_new_session=True,
            )
        except OSError as exc:
            self._failed(f"cannot start the log writer process ({exc})")
            return None
        with contextlib.suppress(OSError, AttributeError):
            # A pipe of 1 MiB (Linux's limit without privileges) takes a batch in one
            # write instead of sixteen 64 KiB rounds, each a GIL hand-off.
            fcntl.fcntl(_stdin(self._proc).fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        return self._proc

    def _failed(self, error: str) -> None:
        """Stop the process (if any) and wait a growing delay before the next one."""
        self._error = error
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(5)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        self._delay = min(RESTART_DELAY_MAX, max(RESTART_DELAY, self._delay * 2))
        self._not_before = time.monotonic() + self._delay


def _stdin(proc: subprocess.Popen[bytes]) -> IO[bytes]:
    assert proc.stdin is not None
    return proc.stdin


def _stdout(proc: subprocess.Popen[bytes]) -> IO[bytes]:
    assert proc.stdout is not None
    return proc.stdout


def _send_all(fd: int, payload: bytes) -> None:
    """One frame to `fd` in as few system calls as the pipe allows, without copying."""
    parts = [memoryview(_LENGTH.pack(len(payload))), memoryview(payload)]
    while parts:
        n = os.writev(fd, parts)
        while parts and n >= len(parts[0]):
            n -= len(parts.pop(0))
        if parts:
            parts[0] = parts[0][n:]


def _receive(pipe: IO[bytes]) -> bytes:
    (n,) = _LENGTH.unpack(_read_exactly(pipe, _LENGTH.size))
    return _read_exactly(pipe, n)


def _read_exactly(pipe: IO[bytes], n: int) -> bytes:
    """`n` bytes (an unbuffered pipe may return fewer per read); EOFError at the end."""
    chunks, got = [], 0
    while got < n:
        chunk = pipe.read(n - got)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def serve(directory: Path, max_bytes: int, max_age: float, retain: float | None) -> int:
    """The writer process's loop (see the module docstring)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    sink = RotatingJsonlSink(
        directory, max_bytes=max_bytes, max_age_seconds=max_age, retain_seconds=retain
    )
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but replies may reach the pipe
    try:
        while True:
            try:
                payload = _receive(stdin)
            except EOFError:
                break
            # From our parent, over a private pipe (module docstring).
            entries = marshal.loads(payload)  # noqa: S302  # nosec B302
            outcome = write_entries(sink, entries)
            reply = (outcome.written, outcome.lost, outcome.unencodable, outcome.error)
            _send_all(stdout.fileno(), marshal.dumps(reply))
    finally:
        try:
            sink.close()
        except OSError as exc:
            print(f"prediction log writer: closing the file failed: {exc}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The prediction log's writer process.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--max-bytes", type=int, required=True)
    parser.add_argument("--max-age", type=float, required=True)
    parser.add_argument("--retain", type=float, default=None)
    args = parser.parse_args(argv)
    return serve(args.directory, args.max_bytes, args.max_age, args.retain)


if __name__ == "__main__":
    sys.exit(main())
