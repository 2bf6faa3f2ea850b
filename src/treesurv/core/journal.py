"""Crash safety for the lifecycle commands: an intent journal, a lock and a fault hook.

A command that changes several things (files, the DVC cache and remote, git
commits and tags) first writes what it is about to do to a journal file under
`.dvc/tmp/treesurv/` (DVC keeps `.dvc/tmp` out of git), and removes it when it
is done. If the process dies in between (SIGKILL, power loss), the next
lifecycle command finds the journal and either finishes the operation (when its
commit point was passed) or undoes it, before doing anything else. An exclusive
lock on the same directory keeps two lifecycle commands from running at once
(so recovery never undoes an operation that is still running).

`checkpoint(name)` marks a point between two steps. It does nothing unless the
environment variable `TREESURV_FAULT_AT` names that point, in which case the
process kills itself with SIGKILL there: the crash tests use it to stop a child
process at every step, deterministically. Nothing else reads that variable.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FAULT_ENV = "TREESURV_FAULT_AT"
DIRECTORY = Path(".dvc") / "tmp" / "treesurv"


def checkpoint(name: str) -> None:
    """Die here (SIGKILL, no cleanup) when the crash tests ask for it."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, content: bytes) -> None:
    """Write beside, flush to disk, rename into place: old or new content, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Journal:
    """The intent record of one kind of operation in one repository."""

    def __init__(self, root: Path, op: str) -> None:
        self.path = Path(root) / DIRECTORY / f"{op}.json"

    def read(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # written atomically: only a foreign file
            raise OSError(f"{self.path}: unreadable operation journal ({exc})") from None
        return dict(state)

    def write(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(state, indent=1).encode())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold the repository's lifecycle lock (released by the kernel if the process dies)."""
    directory = Path(root) / DIRECTORY
    if not directory.parent.parent.is_dir():  # not a DVC repository: nothing to guard
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "lock").open("a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OSError(
                f"another treesurv lifecycle command is running in {root} "
                f"(it holds {directory / 'lock'})"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
