"""The encoder: one function for training and serving, and a fast row path equal to it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.helpers import records
from treesurv.core import schema
from treesurv.core.encoding import RowEncoder, encode, fit_encoder
from treesurv.core.validation import validate


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    clean, report = validate(frame, "t")
    assert report.ok
    return clean


def test_row_encoder_equals_column_encoder(small_frame: pd.DataFrame) -> None:
    frame = typed(small_frame)
    params = fit_encoder(frame)
    matrix = encode(params, frame)
    fast = RowEncoder(params)
    for i, row in enumerate(records(frame[list(schema.FEATURE_NAMES)])):
        row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        np.testing.assert_array_equal(fast.encode(row), matrix[i])


def test_row_encoder_equals_on_study_rows(study: pd.DataFrame) -> None:
    frame = study
    params = fit_encoder(frame)
    matrix = encode(params, frame)
    fast = RowEncoder(params)
    rows = records(frame[list(schema.FEATURE_NAMES)])
    for i in range(0, len(rows), 7):
        row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rows[i].items()}
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


def test_site_one_hot_of_the_plot_missing_is_a_typical_site(model_study: pd.DataFrame) -> None:
    frame = model_study
    params = fit_encoder(frame, schema.DESIGN, site=True)
    names = params.column_names()
    plots = [i for i, n in enumerate(names) if n.startswith("Plot=")]
    assert [names[i] for i in plots] == [f"Plot={p}" for p in schema.PLOTS]
    assert plots == list(range(len(names) - len(schema.PLOTS), len(names)))  # last
    matrix = encode(params, frame)
    np.testing.assert_array_equal(matrix[:, plots].argmax(axis=1) + 1, frame["Plot"].to_numpy())
    np.testing.assert_array_equal(matrix[:, plots].sum(axis=1), 1.0)
    # The rest of the row is what an encoder without the site gives.
    without = encode(fit_encoder(frame, schema.DESIGN), frame)
    np.testing.assert_array_equal(matrix[:, : len(names) - len(schema.PLOTS)], without)
    # No plot (column absent, null, NaN, or not a study plot): no plot column set.
    rows = frame.head(5).copy()
    assert not encode(params, rows.drop(columns=["Plot"]))[:, plots].any()
    rows["Plot"] = [None, np.nan, pd.NA, 19, 2.5]
    assert not encode(params, rows.astype({"Plot": object}))[:, plots].any()
    # The fast row path agrees, with and without a plot.
    fast = RowEncoder(params)
    for plot in (None, 1, 7, 18, 19):
        row = {**{k: frame[k].iloc[0] for k in schema.DESIGN}, "Plot": plot}
        one = pd.DataFrame([row]).astype({"Plot": object})
        np.testing.assert_array_equal(fast.encode(row), encode(params, one)[0])
    assert fast.encode({k: frame[k].iloc[0] for k in schema.DESIGN})[plots].sum() == 0


def test_site_survives_the_bundle_format_and_old_encoders_read_as_before() -> None:
    from treesurv.core.encoding import EncoderParams

    frame = pd.DataFrame({k: [schema.EXAMPLE[k]] * 3 for k in schema.DESIGN})
    for site in (False, True):
        params = fit_encoder(frame, schema.DESIGN, site=site)
        spec = params.to_json()
        assert ("site" in spec) == site  # encoders without it keep their old spec
        back = EncoderParams.from_json(spec, params.arrays())
        assert back.site == site and back.column_names() == params.column_names()
    with pytest.raises(ValueError, match="'site' must be true or false"):
        EncoderParams.from_json({**spec, "site": "yes"}, params.arrays())
