"""`treesurv predict` on real files, through the installed command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import run
from treesurv.core import schema
from treesurv.core.files import read_table
from treesurv.core.validation import SCORING, validate
from treesurv.inference.bundle import load_verified

pytestmark = pytest.mark.slow
ADDED = ["death_probability", "predicted_event", "model_version"]


def predict(args: list[str], cwd: Path, check: bool = True):  # type: ignore[no-untyped-def]
    return run(["treesurv", "predict", *args], cwd, check=check)


def test_raw_csv_keeps_rows_and_columns(bundle_dir: Path, real_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "scored.csv"
    predict([str(real_csv), "-o", str(out), "--model", str(bundle_dir), "-q"], tmp_path)
    raw = pd.read_csv(real_csv, dtype=str, keep_default_na=False)
    scored = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(scored.columns) == list(raw.columns) + ADDED
    # Every input cell comes back unchanged, in the same order.
    pd.testing.assert_frame_equal(scored[raw.columns], raw)
    bundle, compiled = load_verified(bundle_dir)
    clean, _ = validate(read_table(real_csv), "raw", SCORING)
    expected = compiled.proba_columns(clean)
    np.testing.assert_allclose(scored["death_probability"].astype(float), expected, atol=1e-12)
    assert set(scored["model_version"]) == {bundle.version}
    assert (scored["predicted_event"].astype(int) == (expected >= bundle.threshold)).all()


def test_parquet_in_and_out_and_chunking(bundle_dir: Path, real_csv: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(real_csv)
    src = tmp_path / "in.parquet"
    frame.to_parquet(src)
    one, many = tmp_path / "one.parquet", tmp_path / "many.parquet"
    predict([str(src), "-o", str(one), "--model", str(bundle_dir), "-q"], tmp_path)
    predict(
        [str(src), "-o", str(many), "--model", str(bundle_dir), "-q", "--chunk-rows", "97"],
        tmp_path,
    )
    a, b = pd.read_parquet(one), pd.read_parquet(many)
    pd.testing.assert_frame_equal(a, b)
    assert a["No"].tolist() == frame["No"].tolist()
    assert a["Time"].dtype == float  # Parquet keeps its types


def test_csv_to_parquet(bundle_dir: Path, real_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "scored.parquet"
    predict(
        [str(real_csv), "-o", str(out), "--model", str(bundle_dir), "-q", "--chunk-rows", "500"],
        tmp_path,
    )
    scored = pd.read_parquet(out)
    assert len(scored) == 2365 and scored["death_probability"].between(0, 1).all()
    assert scored["EMF"].dtype == float and scored["EMF"].isna().sum() == 1274
    assert scored["No"].tolist() == pd.read_csv(real_csv)["No"].astype(str).tolist()


@pytest.fixture
def broken_csv(real_csv: Path, tmp_path: Path) -> Path:
    frame = pd.read_csv(real_csv, dtype=str, keep_default_na=False).head(300)
    frame.loc[10, "Species"] = "Pinus strobus"
    frame.loc[250, "Light_ISF"] = "bright"
    path = tmp_path / "broken.csv"
    frame.to_csv(path, index=False)
    return path


def test_on_error_fail_writes_nothing(bundle_dir: Path, broken_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    proc = predict(
        [str(broken_csv), "-o", str(out), "--model", str(bundle_dir), "-q", "--chunk-rows", "100"],
        tmp_path,
        check=False,
    )
    assert proc.returncode == 1
    assert not out.exists() and not list(tmp_path.glob(".out.csv*"))
    assert "Pinus strobus" in proc.stderr and "bright" in proc.stderr
    assert "12" in proc.stderr and "252" in proc.stderr  # file line numbers
    assert "2 problem(s); nothing was written" in proc.stderr


def test_on_error_skip_scores_the_rest(bundle_dir: Path, broken_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    predict(
        [
            str(broken_csv),
            "-o",
            str(out),
            "--model",
            str(bundle_dir),
            "-q",
            "--on-error",
            "skip",
            "--chunk-rows",
            "100",
        ],
        tmp_path,
    )
    scored = pd.read_csv(out)
    rejects = pd.read_csv(tmp_path / "out.rejects.csv")
    assert len(scored) == 298
    assert rejects["line"].tolist() == [12, 252]
    assert "Species=Pinus strobus" in rejects["reasons"][0]
    assert "must be a number" in rejects["reasons"][1]
    original = pd.read_csv(broken_csv)
    assert scored["No"].tolist() == original.drop(index=[10, 250])["No"].tolist()


def test_not_a_csv_and_missing_columns(bundle_dir: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.csv"
    junk.write_bytes(b"\x00\x01\x02\x03")
    proc = predict(
        [str(junk), "-o", str(tmp_path / "o.csv"), "--model", str(bundle_dir)],
        tmp_path,
        check=False,
    )
    assert proc.returncode == 1 and "not a CSV file" in proc.stderr
    assert "Traceback" not in proc.stderr
    partial = tmp_path / "partial.csv"
    pd.DataFrame({"Species": ["Quercus alba"]}).to_csv(partial, index=False)
    proc = predict(
        [str(partial), "-o", str(tmp_path / "o.csv"), "--model", str(bundle_dir)],
        tmp_path,
        check=False,
    )
    assert proc.returncode == 1 and "missing required column(s): Light_ISF" in proc.stderr


def test_tampered_bundle_is_refused(bundle_dir: Path, real_csv: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    card = copy / "model_card.md"
    card.write_text(card.read_text() + "\nedited\n")
    proc = predict(
        [str(real_csv), "-o", str(tmp_path / "o.csv"), "--model", str(copy)], tmp_path, check=False
    )
    assert proc.returncode == 1
    assert "model_card.md does not match its sha256" in proc.stderr
    assert not (tmp_path / "o.csv").exists()


def test_only_features_are_needed(bundle_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "design.csv"
    pd.DataFrame([schema.EXAMPLE]).to_csv(src, index=False)
    out = tmp_path / "o.csv"
    predict([str(src), "-o", str(out), "--model", str(bundle_dir), "-q"], tmp_path)
    assert list(pd.read_csv(out).columns) == list(schema.FEATURE_NAMES) + ADDED
