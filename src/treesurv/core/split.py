"""The model frame and the stable train/test split (by a hash of the seedling id)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from treesurv.core import schema


def model_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns the pipeline keeps: id, features, target, group and time."""
    keep = [schema.ID, *schema.FEATURE_NAMES, schema.TARGET]
    keep += [c for c in (schema.GROUP, schema.TIME) if c in frame.columns]
    out = frame[keep].copy()
    if schema.GROUP in out.columns:
        out[schema.GROUP] = pd.to_numeric(out[schema.GROUP], errors="coerce").astype("Int64")
    if schema.TIME in out.columns:
        out[schema.TIME] = pd.to_numeric(out[schema.TIME], errors="coerce").astype(float)
    out[schema.TARGET] = out[schema.TARGET].astype(int)
    out[schema.ID] = out[schema.ID].astype("int64")
    return out.reset_index(drop=True)


def holdout_mask(ids: Iterable[Any], test_percent: float, salt: str = "treesurv") -> np.ndarray:
    """True for rows held out for testing, decided by a hash of the seedling id.

    A hash rather than a random split keeps every existing row on the same side
    when new census rows are appended, so the champion and a challenger are always
    compared on rows neither of them was trained on.
    """
    out = []
    for value in ids:
        digest = hashlib.sha256(f"{salt}:{value}".encode()).digest()
        out.append(int.from_bytes(digest[:8], "big") % 10_000 < test_percent * 100)
    return np.asarray(out, dtype=bool)


def split(frame: pd.DataFrame, test_percent: float, salt: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    mask = holdout_mask(frame[schema.ID], test_percent, salt)
    return frame[~mask].reset_index(drop=True), frame[mask].reset_index(drop=True)
