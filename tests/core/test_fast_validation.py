"""`all_valid` (the batch fast path) accepts exactly the chunks `validate` accepts."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from tests.helpers import good_row, synthetic_raw, write_study_csv
from treesurv.core.files import NA_VALUES, read_table
from treesurv.core.validation import SCORING, TRAINING, all_valid, validate


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Study rows as `read_table` reads them from a file (all text)."""
    path = tmp_path_factory.mktemp("raw") / "study.csv"
    return read_table(write_study_csv(path, synthetic_raw(600, seed=3)))


def test_clean_rows_take_the_fast_path_with_the_same_result(raw: pd.DataFrame) -> None:
    fast = all_valid(raw)
    assert fast is not None
    clean, report = validate(raw, "rows", SCORING)
    assert report.ok
    pd.testing.assert_frame_equal(fast, clean)


BAD_CELLS: list[dict[str, Any]] = [
    {"Species": "Quercus velutina"},
    {"Soil": None},
    {"Light_ISF": "bright"},
    {"Light_ISF": "1_000"},
    {"AMF": "150"},
    {"Phenolics": "-7"},
    {"NSC": None},
    {"EMF": None},  # an oak needs EMF
    {"Species": "Acer saccharum", "Conspecific": "Heterospecific"},  # AMF species with EMF
    {"Soil": "Sterile"},  # but Sterile says Non-Sterile
    {"Conspecific": "Conspecific"},  # soil is another species
    {"Lignin": "inf"},
]


@pytest.mark.parametrize("bad", BAD_CELLS)
def test_any_problem_sends_the_chunk_to_the_full_report(
    raw: pd.DataFrame, bad: dict[str, Any]
) -> None:
    frame = pd.concat([raw.head(50), pd.DataFrame([good_row(**bad)])], ignore_index=True)
    frame = frame.mask(frame.isin(NA_VALUES))
    assert all_valid(frame) is None
    _, report = validate(frame, "x", SCORING)
    assert not report.ok
    assert {i.line for i in report.issues} == {len(frame) + 1}


def test_training_files_always_take_the_full_path(raw: pd.DataFrame) -> None:
    assert all_valid(raw, TRAINING) is None
