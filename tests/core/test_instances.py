"""The column check of API instances accepts only what the request models accept,
with the same values: a body it declines goes to the models, which name the problem."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.helpers import instances
from treesurv.core import schema
from treesurv.core.encoding import Coded, RowEncoder, encode, fit_encoder
from treesurv.core.instances import ColumnRows, full_model_columns
from treesurv.serving.schemas import PredictionInstance


def _model_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """What the request model makes of the instances, or None if it refuses one."""
    try:
        return [PredictionInstance.model_validate(r).__dict__ for r in rows]
    except ValidationError:
        return None


def test_valid_instances_become_the_columns_the_rows_encode_to(study: pd.DataFrame) -> None:
    rows = instances(study.head(300))
    rows[0] = {**rows[0], schema.SITE.name: 3}  # the plot may come along
    columns = full_model_columns(rows)
    assert columns is not None
    params = fit_encoder(study)
    validated = _model_rows(rows)
    assert validated is not None
    encoder = RowEncoder(params)
    by_rows = np.vstack([encoder.encode(r) for r in validated])
    # Bit for bit: the batch path scores what the per-instance path scored.
    assert np.array_equal(encode(params, columns), by_rows, equal_nan=True)
    assert columns[schema.SITE.name][0] == 3 and np.isnan(columns[schema.SITE.name][1:]).all()


# One change to a valid instance: every kind of thing a client gets wrong.
CHANGES: list[tuple[str, Any]] = [
    ("Light_ISF", "0.1"),
    ("Light_ISF", True),
    ("Light_ISF", None),
    ("Light_ISF", -1.0),
    ("Light_ISF", 10**6),
    ("Light_ISF", 0),
    ("Light_ISF", 1),
    ("Phenolics", 0),
    ("NSC", float("nan")),
    ("NSC", float("inf")),
    ("Lignin", [1.0]),
    ("EMF", None),
    ("EMF", 0),
    ("EMF", 50.0),
    ("EMF", "x"),
    ("Species", "Quercus velutina"),
    ("Species", "Acer saccharum"),
    ("Species", ["Quercus rubra"]),
    ("Species", None),
    ("Soil", "Sterile"),
    ("Soil", "Acer saccharum"),
    ("Sterile", "Sterile"),
    ("Conspecific", "Conspecific"),
    ("Conspecific", "Heterospecific"),
    (schema.SITE.name, 3),
    (schema.SITE.name, 3.0),
    (schema.SITE.name, 3.5),
    (schema.SITE.name, 0),
    (schema.SITE.name, None),
    (schema.SITE.name, "3"),
    ("extra", 1),
]


@pytest.mark.parametrize(("field", "value"), CHANGES)
@pytest.mark.parametrize("drop", [False, True])
def test_accepted_only_when_the_request_model_accepts_it_with_the_same_values(
    study: pd.DataFrame, field: str, value: Any, drop: bool
) -> None:
    rows = instances(study.sample(20, random_state=len(field)))
    changed = dict(rows[7])
    if drop:
        changed.pop(field, None)
    else:
        changed[field] = value
    rows[7] = changed
    _agrees(rows)


def _agrees(rows: list[Any]) -> None:
    columns = full_model_columns(rows)
    if columns is None:
        return  # declined: the request models decide (accept or name the problem)
    validated = _model_rows(rows)
    assert validated is not None, "accepted what the request model refuses"
    for name in (*schema.FEATURE_NAMES, schema.SITE.name):
        expected = [r[name] for r in validated]
        if name not in columns:
            assert all(v is None for v in expected)
            continue
        got = columns[name]
        if isinstance(got, Coded):  # categories as their codes: back to the categories
            got = [schema.FEATURES_BY_NAME[name].categories[c] for c in got.codes]
        for a, b in zip(got, expected, strict=True):
            assert (b is None and math.isnan(a)) or (a == b and type(b)(a) == b), (name, a, b)


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([c for f in schema.FEATURES for c in f.categories]),
    st.text(max_size=3),
)


@settings(max_examples=120, deadline=None)
@given(
    index=st.integers(0, 9),
    changes=st.dictionaries(st.sampled_from([*schema.INPUT_NAMES, "x"]), VALUES, max_size=3),
    drops=st.sets(st.sampled_from(schema.INPUT_NAMES), max_size=2),
)
def test_random_instances_never_pass_what_the_model_refuses(
    study: pd.DataFrame, index: int, changes: dict[str, Any], drops: set[str]
) -> None:
    rows = instances(study.head(10))
    row = {k: v for k, v in {**rows[index], **changes}.items() if k not in drops}
    rows[index] = row
    _agrees(rows)


def test_what_is_not_a_list_of_objects_is_declined() -> None:
    assert full_model_columns([]) is None
    assert full_model_columns({"Species": "Quercus rubra"}) is None
    assert full_model_columns([schema.EXAMPLE, "x"]) is None
    assert full_model_columns([schema.EXAMPLE, [1, 2]]) is None
    assert full_model_columns([schema.EXAMPLE, schema.EXAMPLE]) is not None


def test_column_rows_read_columns_as_instance_dicts() -> None:
    values = {"Species": ["Acer saccharum", "Quercus rubra"], "EMF": [None, 12.5]}
    rows = ColumnRows(values)
    assert len(rows) == 2
    assert rows[0] == {"Species": "Acer saccharum", "EMF": None}
    assert rows[-1] == {"Species": "Quercus rubra", "EMF": 12.5}
    assert rows[1:] == [rows[1]]
    assert list(rows) == [rows[0], rows[1]]
    with pytest.raises(IndexError):
        rows[2]
