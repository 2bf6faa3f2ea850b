"""Expectations on the real study file (from the DVC remote): what the pipeline and
the batch path may take for granted about the data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from treesurv.core import schema
from treesurv.core.files import read_table
from treesurv.core.validation import SCORING, TRAINING, all_valid, validate, validate_file

pytestmark = pytest.mark.slow


def test_real_study_file(real_csv: Path) -> None:
    clean, report = validate_file(real_csv)
    assert report.ok
    assert report.rows == 2365 and report.valid_rows == 2364
    assert report.notes == ["dropped 1 row(s) with an empty target (line 2365)"]
    assert set(clean[schema.TARGET].unique()) == {0.0, 1.0}


def test_clean_real_rows_take_the_fast_path_with_the_same_result(real_csv: Path) -> None:
    raw = read_table(real_csv)
    fast = all_valid(raw)
    assert fast is not None
    clean, report = validate(raw, "real", SCORING)
    assert report.ok
    pd.testing.assert_frame_equal(fast, clean)
    assert all_valid(raw, TRAINING) is None  # training files always take the full path
