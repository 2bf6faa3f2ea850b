"""Merging new census rows: duplicates, conflicts and the study's CSV format."""

from __future__ import annotations

import pandas as pd

from tests.helpers import frame_of, good_row
from treesurv.lifecycle.ingest import canonical, line_terminator, merge_rows, render_rows


def test_canonical_compares_numbers_as_numbers_and_empties_as_one() -> None:
    a = pd.DataFrame({"x": ["0.10", "NA", "C ", "7"]})
    b = pd.DataFrame({"x": ["0.1", "", "C", "7.0"]})
    a.loc[1, "x"] = None  # how the CSV reader gives "NA"
    assert canonical(a)["x"].tolist() == canonical(b)["x"].tolist()
    assert (
        canonical(pd.DataFrame({"x": ["1"]}))["x"][0]
        != canonical(pd.DataFrame({"x": ["1.01"]}))["x"][0]
    )


def test_merge_splits_new_duplicate_and_conflicting_rows() -> None:
    existing = frame_of(good_row(No="1"), good_row(No="2"), good_row(No="3", Event="0"))
    incoming = frame_of(
        good_row(No="1"),  # duplicate
        good_row(No="2", Lignin="30.5", Event="0"),  # conflict on two columns
        good_row(No="4"),  # new
        good_row(No="3", Event="0.0", AMF="24.450"),  # same content, other spelling
    )
    lines = pd.Series(incoming.index + 2, index=incoming.index)
    merge = merge_rows(existing, incoming, lines)
    assert merge.append["No"].tolist() == ["4"]
    assert merge.duplicates == [(2, 1), (5, 3)]
    assert len(merge.conflicts) == 1
    conflict = merge.conflicts[0]
    assert (conflict.line, conflict.id) == (3, 2)
    assert set(conflict.columns) == {"Lignin", "Event"}


def test_rows_render_in_the_study_format() -> None:
    rows = frame_of(good_row(No="9", EMF=None))
    text = render_rows(rows, "\r\n")
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    assert ",NA," in text and not text.startswith("No,")
    assert line_terminator(b"No,Plot\r\n1,2\r\n") == "\r\n"
    assert line_terminator(b"No,Plot\n1,2\n") == "\n"
