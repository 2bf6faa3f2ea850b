"""`treesurv data add` on a real git + DVC repository with a local remote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import Repo, study_lines
from treesurv.core.files import file_md5
from treesurv.lifecycle.ingest import pointer_md5

pytestmark = pytest.mark.slow

RAW = Path("data/raw/Tree_Data.csv")
POINTER = Path("data/raw/Tree_Data.csv.dvc")


def write_rows(path: Path, header: bytes, rows: list[bytes]) -> Path:
    path.write_bytes(header + b"".join(rows))
    return path


def state(repo: Repo) -> tuple[bytes, str, str]:
    return (repo.root / RAW).read_bytes(), (repo.root / POINTER).read_text(), repo.head()


def test_new_rows_are_appended_versioned_and_the_old_version_stays(
    data_repo: Repo, real_csv: Path, tmp_path: Path
) -> None:
    repo = data_repo
    lines = study_lines(real_csv)
    before = (repo.root / RAW).read_bytes()
    changed = lines[5].replace(b"Quercus rubra", b"Quercus alba", 1)
    assert changed != lines[5]
    new = write_rows(
        tmp_path / "census.csv",
        lines[0],
        [*lines[301:341], lines[3], lines[4], changed],  # 40 new, 2 duplicates, 1 conflict
    )
    out = repo.treesurv("data", "add", str(new), "--report", str(tmp_path / "r.json"))
    assert "40 row(s) appended, 2 duplicate(s) skipped, 1 conflicting row(s) rejected" in (
        out.stderr.replace("\n", " ")
    )
    after = (repo.root / RAW).read_bytes()
    assert after == before + b"".join(lines[301:341])  # appended in the study's own format
    md5 = file_md5(repo.root / RAW)
    assert pointer_md5(repo.root / POINTER) == md5
    assert (repo.remote / "files" / "md5" / md5[:2] / md5[2:]).is_file()  # pushed
    assert "data: add 40 census rows" in repo.run("git", "log", "-1", "--format=%s").stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["appended"] == 40 and len(report["duplicates"]) == 2
    assert report["conflicts"][0]["columns"] == ["Species"]

    # The previous data version is one git checkout + dvc checkout away.
    repo.run("git", "checkout", "-q", "HEAD~1", "--", str(POINTER))
    repo.run("dvc", "checkout", "-q", str(POINTER))
    assert (repo.root / RAW).read_bytes() == before


def test_an_invalid_file_adds_nothing(data_repo: Repo, real_csv: Path, tmp_path: Path) -> None:
    repo = data_repo
    lines = study_lines(real_csv)
    oak = next(line for line in lines[302:400] if b"Quercus" in line)
    bad = oak.replace(b"Quercus", b"Pinus", 1)  # a species or soil the study never had
    new = write_rows(tmp_path / "bad.csv", lines[0], [lines[301], bad, lines[400]])
    before = state(repo)
    report = tmp_path / "report.json"
    out = repo.treesurv("data", "add", str(new), "--report", str(report), check=False)
    assert out.returncode == 1
    assert "Pinus" in out.stderr and "nothing was added" in out.stderr
    issues = json.loads(report.read_text())["validation"]["issues"]
    assert issues and {i["line"] for i in issues} == {3}  # the bad row, by its line
    assert any("Pinus" in i["value"] for i in issues)
    assert state(repo) == before


def test_a_file_in_another_format_is_refused(
    data_repo: Repo, real_csv: Path, tmp_path: Path
) -> None:
    import pandas as pd

    frame = pd.read_csv(real_csv, dtype=str, keep_default_na=False).iloc[400:405]
    path = tmp_path / "short.csv"
    frame.drop(columns=["Census", "Adult"]).to_csv(path, index=False)
    before = state(data_repo)
    out = data_repo.treesurv("data", "add", str(path), check=False)
    assert out.returncode == 1
    assert "missing column(s) Adult, Census" in out.stderr.replace("\n", " ")
    assert state(data_repo) == before


def test_an_unreachable_remote_puts_everything_back(
    data_repo: Repo, real_csv: Path, tmp_path: Path
) -> None:
    repo = data_repo
    lines = study_lines(real_csv)
    new = write_rows(tmp_path / "census.csv", lines[0], lines[301:311])
    before = state(repo)
    repo.break_remote()
    out = repo.treesurv("data", "add", str(new), check=False)
    assert out.returncode == 1
    assert "dvc push" in out.stderr and "previous data is back in place" in out.stderr
    assert state(repo) == before
    assert "modified" not in repo.run("dvc", "status", str(POINTER)).stdout
    repo.mend_remote()
    repo.treesurv("data", "add", str(new))  # and it works once the remote is back
    assert (repo.root / RAW).read_bytes() == before[0] + b"".join(lines[301:311])


def test_unrecorded_local_changes_are_refused(data_repo: Repo, tmp_path: Path) -> None:
    repo = data_repo
    with (repo.root / RAW).open("ab") as fh:
        fh.write(b"tampered\r\n")
    new = tmp_path / "x.csv"
    new.write_bytes((repo.root / RAW).read_bytes().splitlines(keepends=True)[0])
    out = repo.treesurv("data", "add", str(new), check=False)
    assert out.returncode == 1 and "changes its pointer does not record" in out.stderr


def test_only_duplicates_is_a_no_op(data_repo: Repo, real_csv: Path, tmp_path: Path) -> None:
    repo = data_repo
    lines = study_lines(real_csv)
    new = write_rows(tmp_path / "again.csv", lines[0], lines[10:20])
    before = state(repo)
    out = repo.treesurv("data", "add", str(new))
    assert "0 row(s) appended, 10 duplicate(s) skipped" in out.stderr
    assert state(repo) == before
