"""Inference fixtures: the in-memory study with its targets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from treesurv.core import schema


@pytest.fixture(scope="session")
def study_xy(study: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The study's rows and whether each seedling died (0/1)."""
    return study, study[schema.TARGET].to_numpy(dtype=int)


@pytest.fixture(scope="session")
def survival_xy(model_study: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The study's rows (as the models see them) and their survival target."""
    from treesurv.training.survival import survival_target

    return model_study, survival_target(model_study)
