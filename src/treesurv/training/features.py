"""The scikit-learn face of `treesurv.core.encoding`, so the encoder lives in the pipeline.

Fitted state is kept in plain attributes (tuples and arrays) so that skops can
persist it without trusting anything beyond this class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from treesurv.core import schema
from treesurv.core.encoding import EncoderParams, encode, fit_encoder


class FeatureEncoder(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Schema features (a DataFrame) -> the numeric matrix; see `treesurv.core.encoding`."""

    def __init__(
        self,
        features: Sequence[str] = schema.FEATURE_NAMES,
        cell_z: bool = True,
        site: bool = False,
    ) -> None:
        self.features = features
        self.cell_z = cell_z
        self.site = site

    def fit(self, X: pd.DataFrame, y: Any = None) -> FeatureEncoder:
        params = fit_encoder(X, tuple(self.features), self.cell_z, bool(self.site))
        self.features_ = params.features
        self.cell_mean_ = params.cell_mean
        self.cell_slope_ = params.cell_slope
        self.cell_std_ = params.cell_std
        self.n_features_out_ = len(params.column_names())
        return self

    @property
    def params_(self) -> EncoderParams:
        return EncoderParams(
            tuple(self.features_),
            bool(self.cell_z),
            self.cell_mean_,
            self.cell_slope_,
            self.cell_std_,
            bool(getattr(self, "site", False)),  # encoders saved before `site` had none
        )

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        return encode(self.params_, X)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(self.params_.column_names(), dtype=object)
