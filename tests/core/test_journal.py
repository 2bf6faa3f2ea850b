"""The crash-safety primitives: the journal, atomic writes, the lock, the fault hook."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from treesurv.core.journal import DIRECTORY, FAULT_ENV, Journal, checkpoint, locked, write_atomic


def test_the_journal_round_trips_and_clears(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    journal = Journal(tmp_path, "op")
    assert journal.read() is None
    journal.write({"version": "1.2.0", "backups": {"params.yaml": None}})
    assert journal.read() == {"version": "1.2.0", "backups": {"params.yaml": None}}
    assert journal.path.parent == tmp_path / DIRECTORY
    journal.clear()
    journal.clear()  # twice is fine
    assert journal.read() is None


def test_a_foreign_journal_file_is_an_error_naming_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "op")
    journal.path.parent.mkdir(parents=True)
    journal.path.write_text("{not json")
    with pytest.raises(OSError, match="unreadable operation journal"):
        journal.read()


def test_write_atomic_replaces_whole_and_leaves_nothing_beside(tmp_path: Path) -> None:
    target = tmp_path / "params.yaml"
    target.write_text("old\n")
    write_atomic(target, b"new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


def test_the_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    busy = "another treesurv lifecycle command is running"
    with locked(tmp_path), pytest.raises(OSError, match=busy), locked(tmp_path):
        pass
    with locked(tmp_path):  # released
        pass


def test_no_lock_directory_outside_a_dvc_repository(tmp_path: Path) -> None:
    with locked(tmp_path):
        pass
    assert not (tmp_path / ".dvc").exists()


def test_checkpoint_kills_only_at_the_named_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FAULT_ENV, raising=False)
    checkpoint("data-add:written")  # no variable: nothing happens
    monkeypatch.setenv(FAULT_ENV, "another-step")
    checkpoint("data-add:written")
    code = "from treesurv.core.journal import checkpoint; checkpoint('here'); print('survived')"
    env = {**os.environ, FAULT_ENV: "here"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert out.returncode == -9 and b"survived" not in out.stdout
