"""The encoder: one function for training and serving, and a fast row path equal to it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from treesurv import data, schema
from treesurv.encoding import RowEncoder, encode, fit_encoder


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    clean, report = data.validate(frame, "t")
    assert report.ok
    return clean


def test_row_encoder_equals_column_encoder(small_frame: pd.DataFrame) -> None:
    frame = typed(small_frame)
    params = fit_encoder(frame)
    matrix = encode(params, frame)
    fast = RowEncoder(params)
    for i, row in enumerate(frame[list(schema.FEATURE_NAMES)].to_dict("records")):
        row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        np.testing.assert_array_equal(fast.encode(row), matrix[i])


def test_row_encoder_equals_on_real_rows(real_csv) -> None:  # type: ignore[no-untyped-def]
    frame, _ = data.validate_file(real_csv)
    params = fit_encoder(frame)
    matrix = encode(params, frame)
    fast = RowEncoder(params)
    records = frame[list(schema.FEATURE_NAMES)].to_dict("records")
    for i in range(0, len(records), 7):
        row = {
            k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in records[i].items()
        }
        np.testing.assert_allclose(fast.encode(row), matrix[i], rtol=0, atol=1e-12)


def test_columns_and_names_agree(small_frame: pd.DataFrame) -> None:
    frame = typed(small_frame)
    params = fit_encoder(frame)
    names = params.column_names()
    matrix = encode(params, frame)
    assert matrix.shape == (8, len(names))
    # One-hot blocks sum to one per categorical feature.
    for feature in schema.CATEGORICAL:
        cols = [i for i, n in enumerate(names) if n.startswith(f"{feature}=")]
        np.testing.assert_array_equal(matrix[:, cols].sum(axis=1), 1.0)
    emf_flag = matrix[:, names.index("EMF_missing")]
    np.testing.assert_array_equal(emf_flag, frame["EMF"].isna().to_numpy(dtype=float))


def test_trait_deviation_is_relative_to_cell_and_light() -> None:
    # One cell, NSC rising with light exactly: every seedling is "as expected" (z = 0)
    # except the one planted off the line.
    light = np.linspace(0.04, 0.16, 12)
    nsc = 10 + 50 * light
    nsc[5] += 3.0
    frame = pd.DataFrame(
        {
            "Species": ["Quercus rubra"] * 12,
            "Light_ISF": light,
            "Soil": ["Acer rubrum"] * 12,
            "Sterile": ["Non-Sterile"] * 12,
            "Conspecific": ["Heterospecific"] * 12,
            "AMF": 20.0,
            "EMF": 30.0,
            "Phenolics": 1.0,
            "Lignin": 15.0,
            "NSC": nsc,
        }
    )
    params = fit_encoder(frame)
    z = encode(params, frame)[:, params.column_names().index("NSC_cell_z")]
    assert np.argmax(np.abs(z)) == 5
    assert z[5] > 2.5


def test_tiny_training_sets_never_divide_by_zero(small_frame: pd.DataFrame) -> None:
    frame = typed(small_frame).iloc[:1]
    params = fit_encoder(frame)
    assert np.all(params.cell_std > 0)
    assert np.all(np.isfinite(encode(params, typed(small_frame))))


def test_unknown_category_names_the_feature(small_frame: pd.DataFrame) -> None:
    frame = typed(small_frame)
    params = fit_encoder(frame)
    frame.loc[0, "Soil"] = "Peat"
    with pytest.raises(ValueError, match="Soil: unknown category 'Peat'"):
        encode(params, frame)


def test_design_only_encoder_ignores_traits(small_frame: pd.DataFrame) -> None:
    frame = typed(small_frame)
    params = fit_encoder(frame, schema.DESIGN)
    assert not params.uses_cells
    assert all(not n.startswith(tuple(schema.TRAITS)) for n in params.column_names())
    assert encode(params, frame).shape[1] == len(params.column_names())
