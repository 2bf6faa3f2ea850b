"""New census rows into the versioned study data (`treesurv data add`).

The new file is validated with the one schema (every bad cell reported with its
line); a file with any invalid row is refused whole, so a census is never half
ingested. Rows whose id already exists are compared with the stored row: the same
content is a duplicate (skipped), a different content is a conflict (rejected and
reported, never overwriting the stored row). The rest is appended to the raw CSV
in its own format (column order, line endings, "NA" for empty cells), written
beside and renamed into place; then `dvc add`, `dvc push` and a commit of the
pointer, so every earlier data version stays reachable through git and DVC. If
the push or the commit fails, the previous file and pointer are put back; if the
process dies first, the next lifecycle command does it (`recover`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from treesurv.core import schema
from treesurv.core.errors import LifecycleError
from treesurv.core.files import DataFileError, file_md5, read_table
from treesurv.core.journal import Journal, checkpoint, write_atomic
from treesurv.core.validation import TRAINING, ValidationReport, validate
from treesurv.lifecycle import vcs


class IngestError(LifecycleError):
    """The new rows cannot be added; nothing was appended."""

    def __init__(self, message: str, report: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Conflict:
    line: int
    id: int
    columns: tuple[str, ...]


@dataclass
class Merge:
    """What happens to each valid incoming row."""

    append: pd.DataFrame
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (line, id)
    conflicts: list[Conflict] = field(default_factory=list)


@dataclass
class AddResult:
    source: str
    appended: int
    duplicates: list[tuple[int, int]]
    conflicts: list[Conflict]
    notes: list[str]
    rows_before: int
    rows_after: int
    md5_before: str
    md5_after: str
    commit: str | None = None

    def summary(self) -> str:
        parts = [f"{self.appended} row(s) appended"]
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} duplicate(s) skipped")
        if self.conflicts:
            parts.append(f"{len(self.conflicts)} conflicting row(s) rejected")
        return f"{self.source}: " + ", ".join(parts) + f"; the data now has {self.rows_after} rows"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["conflicts"] = [
            {"line": c.line, "id": c.id, "columns": list(c.columns)} for c in self.conflicts
        ]
        out["duplicates"] = [{"line": ln, "id": i} for ln, i in self.duplicates]
        return out


# ---------------------------------------------------------------------- pure


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells in a comparable form: numbers as numbers (so 0.10 equals 0.1), text
    stripped, every kind of empty cell the same."""
    out = pd.DataFrame(index=frame.index)
    for col in frame.columns:
        raw = frame[col]
        num = pd.to_numeric(raw, errors="coerce").astype(float)
        text = raw.astype("string").str.strip().fillna("")
        out[col] = text.where(num.isna(), num.map(repr)).astype(str)
    return out


def merge_rows(existing: pd.DataFrame, incoming: pd.DataFrame, lines: pd.Series) -> Merge:
    """Split valid incoming rows into new, duplicate and conflicting ones.

    `existing` and `incoming` hold the raw cells with the same columns; `lines`
    gives each incoming row's line in its file.
    """
    ids_old = pd.to_numeric(existing[schema.ID], errors="coerce")
    ids_new = pd.to_numeric(incoming[schema.ID], errors="coerce")
    index_of = {int(v): i for i, v in zip(existing.index, ids_old, strict=True) if pd.notna(v)}
    columns = list(existing.columns)
    old_c = canonical(existing[columns])
    new_c = canonical(incoming[columns])
    keep = np.ones(len(incoming), dtype=bool)
    merge = Merge(append=incoming.iloc[0:0])
    for pos, (idx, rid) in enumerate(zip(incoming.index, ids_new, strict=True)):
        at = index_of.get(int(rid))
        if at is None:
            continue
        keep[pos] = False
        differ = tuple(c for c in columns if str(old_c.at[at, c]) != str(new_c.at[idx, c]))
        line = int(lines.loc[idx])
        if differ:
            merge.conflicts.append(Conflict(line, int(rid), differ))
        else:
            merge.duplicates.append((line, int(rid)))
    merge.append = incoming[keep]
    return merge


def render_rows(frame: pd.DataFrame, line_terminator: str) -> str:
    """Rows as CSV text in the study's format (no header, "NA" for empty cells)."""
    return str(frame.to_csv(index=False, header=False, na_rep="NA", lineterminator=line_terminator))


def line_terminator(head: bytes) -> str:
    return "\r\n" if b"\r\n" in head.split(b"\n", 1)[0] + b"\n" else "\n"


# ---------------------------------------------------------------------- edges


def pointer_md5(pointer: Path) -> str | None:
    try:
        return _md5_of(pointer.read_text())
    except OSError:
        return None


def _md5_of(pointer_text: str) -> str | None:
    try:
        return str(yaml.safe_load(pointer_text)["outs"][0]["md5"])
    except (KeyError, IndexError, TypeError, yaml.YAMLError):
        return None


def ensure_current(root: Path, raw: Path) -> None:
    """The raw file must be the version its pointer records (pulled if missing)."""
    pointer = raw.with_name(raw.name + ".dvc")
    if not pointer.is_file():
        raise IngestError(f"{pointer.relative_to(root)}: no DVC pointer for the study data")
    if not raw.exists():
        vcs.dvc(["pull", str(pointer.relative_to(root))], root)
    expected = pointer_md5(pointer)
    if expected is not None and file_md5(raw) != expected:
        raise IngestError(
            f"{raw.relative_to(root)} has changes its pointer does not record; "
            "record them with `dvc add` or discard them with `dvc checkout` first"
        )


def _read_incoming(source: Path) -> tuple[pd.DataFrame, ValidationReport]:
    try:
        frame = read_table(source)
    except DataFileError as exc:
        report = ValidationReport(source=str(source), fatal=str(exc).split(": ", 1)[-1])
        raise IngestError(f"{report.summary()}: nothing was added", report) from None
    clean, report = validate(frame.copy(), source=str(source), options=TRAINING)
    if not report.ok:
        raise IngestError(
            f"{report.summary()}: nothing was added (fix the file and add it again)", report
        )
    # Keep the raw cells (as the study writes them) of the rows that passed.
    return frame.reset_index(drop=True).loc[clean.index], report


def _in_study_columns(source: Path, incoming: pd.DataFrame, existing: pd.DataFrame) -> pd.DataFrame:
    """The incoming rows in the study file's column order; any other set of columns
    is refused."""
    missing = [c for c in existing.columns if c not in incoming.columns]
    extra = [c for c in incoming.columns if c not in existing.columns]
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            problems.append(f"unknown column(s) {', '.join(extra)}")
        raise IngestError(
            f"{source}: not in the study's format ({'; '.join(problems)}): nothing was added"
        )
    return incoming[list(existing.columns)]


def _replace_keeping_backup(raw: Path, tmp: Path, content: bytes) -> Path:
    """Write `content` to `tmp` (synced), keep the current file as a backup beside
    it, then rename `tmp` over `raw`; returns the backup's path."""
    with tmp.open("wb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    backup = _beside(raw, "previous")
    backup.unlink(missing_ok=True)
    try:
        os.link(raw, backup)
    except OSError:  # no hard links on this filesystem
        shutil.copy2(raw, backup)
    os.replace(tmp, raw)
    return backup


def add_rows(
    root: Path,
    raw: Path,
    source: Path,
    *,
    push: bool = True,
    commit: bool = True,
    log: Callable[[str], None] = lambda _m: None,
) -> AddResult:
    """Validate `source`, append its new rows to `raw`, version them with DVC."""
    root = root.resolve()
    raw = (root / raw).resolve() if not raw.is_absolute() else raw
    pointer = raw.with_name(raw.name + ".dvc")
    try:
        ensure_current(root, raw)
    except vcs.CommandError as exc:
        raise IngestError(f"cannot get the current study data: {exc}") from None
    incoming, report = _read_incoming(source)
    existing = read_table(raw)
    incoming = _in_study_columns(source, incoming, existing)
    lines = pd.Series(incoming.index + 2, index=incoming.index)
    merge = merge_rows(existing, incoming, lines)
    md5_before = file_md5(raw)
    result = AddResult(
        source=str(source),
        appended=len(merge.append),
        duplicates=merge.duplicates,
        conflicts=merge.conflicts,
        notes=list(report.notes),
        rows_before=len(existing),
        rows_after=len(existing) + len(merge.append),
        md5_before=md5_before,
        md5_after=md5_before,
    )
    if merge.append.empty:
        log("no new rows to add")
        return result

    old_bytes = raw.read_bytes()
    text = render_rows(merge.append, line_terminator(old_bytes[:4096]))
    if old_bytes and not old_bytes.endswith(b"\n"):
        old_bytes += line_terminator(old_bytes[:4096]).encode()
    rel = str(pointer.relative_to(root))
    message = (
        f"data: add {result.appended} census rows from {source.name} "
        f"({result.rows_after} rows, md5 {{md5}})"
    )
    # Intent first, then the steps; the journal lets a crash be undone (or, once
    # the commit is made, finished) by the next command: see `recover`.
    tmp = _beside(raw, "tmp")
    tmp.unlink(missing_ok=True)
    journal = Journal(root, JOURNAL)
    journal.write(
        {
            "raw": str(raw.relative_to(root)),
            "pointer": rel,
            "pointer_text": pointer.read_text(),
            "md5_before": md5_before,
            "commit": commit,
        }
    )
    checkpoint("data-add:journaled")
    backup = _replace_keeping_backup(raw, tmp, old_bytes + text.encode())
    checkpoint("data-add:written")
    try:
        log(f"appended {len(merge.append)} rows; recording the new data version with DVC")
        vcs.dvc(["add", str(raw.relative_to(root))], root)
        checkpoint("data-add:dvc-added")
        if push:
            vcs.dvc(["push", rel], root)
            checkpoint("data-add:pushed")
    except vcs.CommandError as exc:
        _undo(root, journal.read() or {})
        journal.clear()
        raise IngestError(f"{exc}\nnothing was added: the previous data is back in place") from None
    result.md5_after = file_md5(raw)
    if commit:
        try:
            # The commit point: before it a crash is undone, after it the new
            # version (already in the remote) stands.
            result.commit = vcs.commit(root, [rel], message.format(md5=result.md5_after[:12]))
        except vcs.CommandError as exc:
            _undo(root, journal.read() or {})
            journal.clear()
            raise IngestError(
                f"committing {rel} failed: {exc}\nnothing was added: the previous data is back"
            ) from None
        checkpoint("data-add:committed")
    backup.unlink(missing_ok=True)
    journal.clear()
    return result


JOURNAL = "data-add"


def _beside(raw: Path, kind: str) -> Path:
    return raw.with_name(f".{raw.name}.{kind}")


def _undo(root: Path, state: dict[str, Any]) -> None:
    """Put the data file and its pointer back as they were before an add."""
    raw = root / state["raw"]
    pointer = root / state["pointer"]
    backup = _beside(raw, "previous")
    if backup.exists():
        os.replace(backup, raw)
    _beside(raw, "tmp").unlink(missing_ok=True)
    write_atomic(pointer, state["pointer_text"].encode())
    if (root / ".git").exists():
        vcs.git(["reset", "-q", "--", state["pointer"]], root)  # nothing of it staged


def recover(root: Path, log: Callable[[str], None] = lambda _m: None) -> None:
    """Finish or undo a `data add` that a crash interrupted.

    Finished: the pointer is committed (its data was pushed before), only the
    backup is left to remove. Anything earlier: the previous file and pointer
    are put back; data already copied to the cache or remote stays there unused.
    """
    root = root.resolve()
    journal = Journal(root, JOURNAL)
    state = journal.read()
    if state is None:
        return
    raw = root / state["raw"]
    committed = vcs.show_file(root, "HEAD", state["pointer"]) if state["commit"] else None
    head_md5 = _md5_of(committed) if committed else None
    finished = head_md5 not in (None, state["md5_before"])
    if finished and raw.exists() and file_md5(raw) == head_md5:
        _beside(raw, "previous").unlink(missing_ok=True)
        log(f"finished the interrupted addition of rows to {state['raw']}")
        journal.clear()
        return
    _undo(root, state)
    log(f"undid the interrupted addition of rows to {state['raw']}: the previous data is back")
    journal.clear()
