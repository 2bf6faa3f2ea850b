"""`treesurv predict --engine dask` on a local Dask cluster: the same rows, values,
types, problems and rejects as the single-process path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import run
from treesurv.inference.batch import BatchError
from treesurv.inference.bundle import load_verified
from treesurv.inference.dask_batch import dask_client, expand_inputs, plan, score_distributed

pytestmark = pytest.mark.slow


def predict(args: list[str], cwd: Path, check: bool = True) -> Any:
    return run(["treesurv", "predict", *args, "-q"], cwd, check=check)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with dask_client(None, workers=2, memory_limit="1GiB") as c:
        yield c


OAK = 1900  # near this row, an oak loses its EMF value (a cross-field rule)


@pytest.fixture
def broken_csv(real_csv: Path, tmp_path: Path) -> Path:
    frame = pd.read_csv(real_csv, dtype=str, keep_default_na=False)
    frame.loc[10, "Species"] = "Pinus strobus"
    frame.loc[250, "Light_ISF"] = "bright"
    frame.loc[oak_row(frame), "EMF"] = "NA"
    path = tmp_path / "broken.csv"
    frame.to_csv(path, index=False)
    return path


def oak_row(frame: pd.DataFrame) -> int:
    return int(frame.index[(frame.index >= OAK) & frame["Species"].str.startswith("Quercus")][0])


def oak_line(csv: Path) -> str:
    return str(oak_row(pd.read_csv(csv, dtype=str, keep_default_na=False)) + 2)


def test_csv_partitions_equal_the_single_process_output(
    bundle_dir: Path, real_csv: Path, tmp_path: Path
) -> None:
    single, multi = tmp_path / "single.parquet", tmp_path / "multi"
    predict([str(real_csv), "-o", str(single), "--model", str(bundle_dir)], tmp_path)
    # About 7 partitions of 50 kB: rows cross partition boundaries everywhere.
    proc = predict(
        [
            str(real_csv),
            "-o",
            str(multi),
            "--model",
            str(bundle_dir),
            "--engine",
            "dask",
            "--partition-mb",
            "0.05",
            "--workers",
            "2",
        ],
        tmp_path,
    )
    parts = sorted(p.name for p in multi.iterdir())
    assert len(parts) >= 5 and parts[0] == "part-000000.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(multi), pd.read_parquet(single))
    assert "scored 2365 of 2365 rows" in proc.stderr
    assert not list(tmp_path.glob(".multi*"))  # no staging left behind


def test_on_error_fail_reports_the_same_lines_and_writes_nothing(
    bundle_dir: Path, broken_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [str(broken_csv), "-o", str(out), "--model", str(bundle_dir)]
    single = predict([*args[:2], str(tmp_path / "o.parquet"), *args[3:]], tmp_path, check=False)
    proc = predict([*args, "--engine", "dask", "--partition-mb", "0.05"], tmp_path, check=False)
    assert proc.returncode == single.returncode == 1
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    expected = ("12", "Pinus strobus", "252", "bright", oak_line(broken_csv), "3 problem(s)")
    for text in expected:
        assert text in proc.stderr, text
    assert _problem_lines(proc.stderr) == _problem_lines(single.stderr)


def _problem_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "│" in line and any(c.isdigit() for c in line)]


def test_on_error_skip_matches_rejects_and_rows(
    bundle_dir: Path, broken_csv: Path, tmp_path: Path, client: Any
) -> None:
    bundle, _ = load_verified(bundle_dir)
    single = tmp_path / "single.parquet"
    predict(
        [str(broken_csv), "-o", str(single), "--model", str(bundle_dir), "--on-error", "skip"],
        tmp_path,
    )
    out = tmp_path / "multi"
    result = score_distributed(
        broken_csv, out, bundle, client, on_error="skip", partition_bytes=40_000
    )
    assert (result.rows, result.scored, result.rejected) == (2365, 2362, 3)
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(single))
    ours = pd.read_csv(tmp_path / "multi.rejects.csv", dtype=str)
    theirs = pd.read_csv(tmp_path / "single.rejects.csv", dtype=str)
    pd.testing.assert_frame_equal(ours, theirs)
    assert ours["line"].tolist() == ["12", "252", oak_line(broken_csv)]


def test_parquet_glob_across_files_and_row_groups(
    bundle_dir: Path, real_csv: Path, tmp_path: Path, client: Any
) -> None:
    frame = pd.read_csv(real_csv)
    whole = tmp_path / "whole.parquet"
    frame.to_parquet(whole)
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, start in enumerate(range(0, len(frame), 800)):
        table = pa.Table.from_pandas(frame.iloc[start : start + 800], preserve_index=False)
        pq.write_table(table, shards / f"rows-{i}.parquet", row_group_size=150)
    files = expand_inputs(str(shards / "rows-*.parquet"))
    assert [f.name for f in files] == ["rows-0.parquet", "rows-1.parquet", "rows-2.parquet"]
    # Row groups of 150, gathered up to 300 rows: 800 rows give 300+300+200, 765 give 300+300+165.
    assert len(plan(files, partition_rows=300)) == 3 * 3

    single = tmp_path / "single.parquet"
    predict([str(whole), "-o", str(single), "--model", str(bundle_dir)], tmp_path)
    bundle, _ = load_verified(bundle_dir)
    out = tmp_path / "scored"
    score_distributed(str(shards / "rows-*.parquet"), out, bundle, client, partition_rows=300)
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(single))
    # Scoring again replaces a previous output in one rename.
    score_distributed(shards, out, bundle, client, partition_rows=10_000)
    assert len(list(out.iterdir())) == 3
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(single))


def test_bad_inputs_and_outputs_are_refused(
    bundle_dir: Path, real_csv: Path, tmp_path: Path, client: Any
) -> None:
    bundle, _ = load_verified(bundle_dir)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.csv").write_text(real_csv.read_text())
    pd.read_csv(real_csv).to_parquet(mixed / "b.parquet")
    with pytest.raises(Exception, match="mixes CSV and Parquet"):
        score_distributed(mixed, tmp_path / "o", bundle, client)
    with pytest.raises(Exception, match="no CSV or Parquet input files"):
        score_distributed(str(tmp_path / "nothing-*.csv"), tmp_path / "o", bundle, client)
    (tmp_path / "a.csv").write_text(real_csv.read_text())
    pd.read_csv(real_csv).drop(columns=["Core"]).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(Exception, match="columns differ"):
        score_distributed(str(tmp_path / "*.csv"), tmp_path / "o", bundle, client)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(BatchError, match="not a previous treesurv output"):
        score_distributed(real_csv, precious, bundle, client)
    assert (precious / "notes.txt").read_text() == "keep me"
