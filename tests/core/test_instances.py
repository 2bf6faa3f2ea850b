"""The column check of API instances accepts only what the request models accept,
with the same values: a body it declines goes to the models, which name the problem."""

from __future__ import annotations

import json
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
from treesurv.core.instances import ColumnRows, batch_columns
from treesurv.serving.schemas import PredictionInstance


def _model_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """What the request model makes of the instances, or None if it refuses one."""
    try:
        return [PredictionInstance.model_validate(r).__dict__ for r in rows]
    except ValidationError:
        return None


def body_of(rows: Any, **more: Any) -> bytes:
    """A request body as a client writes it (Python's json: NaN and Infinity appear
    as such, and the column check must decline them)."""
    return json.dumps({"instances": rows, **more}).encode()


def test_valid_instances_become_the_columns_the_rows_encode_to(study: pd.DataFrame) -> None:
    rows = instances(study.head(300))
    rows[0] = {**rows[0], schema.SITE.name: 3}  # the plot may come along
    columns = batch_columns(body_of(rows), 1000)
    assert columns is not None
    params = fit_encoder(study)
    validated = _model_rows(rows)
    assert validated is not None
    encoder = RowEncoder(params)
    by_rows = np.vstack([encoder.encode(r) for r in validated])
    # Bit for bit: the batch path scores what the per-instance path scored.
    assert np.array_equal(encode(params, columns), by_rows, equal_nan=True)
    assert schema.SITE.name not in columns  # the classifier does not read the plot


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
    columns = batch_columns(body_of(rows), 1000)
    if columns is None:
        return  # declined: the request models decide (accept or name the problem)
    validated = _model_rows(rows)
    assert validated is not None, "accepted what the request model refuses"
    for name in schema.FEATURE_NAMES:
        expected = [r[name] for r in validated]
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


def test_what_is_not_a_batch_of_objects_is_declined() -> None:
    example = schema.EXAMPLE
    assert batch_columns(body_of([example, example]), 1000) is not None
    assert batch_columns(body_of([example, example], horizon_days=None), 1000) is not None
    declined = [
        body_of([]),
        body_of([example]),  # one instance: the single-row path
        body_of({"Species": "Quercus rubra"}),
        body_of([example, "x"]),
        body_of([example, [1, 2]]),
        body_of([example, example], horizon_days=60),  # the survival model's question
        body_of([example, example], extra=1),
        b'{"instances": [' + json.dumps(example).encode() + b"]",  # malformed
        b"[]",
        b"",
    ]
    for body in declined:
        assert batch_columns(body, 1000) is None, body
    assert batch_columns(body_of([example] * 3), 2) is None  # more than the batch bound


def test_a_repeated_key_takes_its_last_value_as_the_request_models_parser_does() -> None:
    first = json.dumps(schema.EXAMPLE)[:-1]
    light = schema.EXAMPLE["Light_ISF"]
    twice = f'{first}, "Light_ISF": {light / 2}}}'
    body = f'{{"instances": [{twice}, {json.dumps(schema.EXAMPLE)}]}}'.encode()
    assert json.loads(body)["instances"][0]["Light_ISF"] == light / 2
    columns = batch_columns(body, 1000)
    assert columns is not None
    assert columns["Light_ISF"].tolist() == [light / 2, light]


def test_column_rows_read_columns_as_instance_dicts() -> None:
    values: dict[str, list[Any]] = {
        "Species": ["Acer saccharum", "Quercus rubra"],
        "EMF": [None, 12.5],
    }
    rows = ColumnRows(values)
    assert len(rows) == 2
    assert rows[0] == {"Species": "Acer saccharum", "EMF": None}
    assert rows[-1] == {"Species": "Quercus rubra", "EMF": 12.5}
    assert rows[1:] == [rows[1]]
    assert list(rows) == [rows[0], rows[1]]
    with pytest.raises(IndexError):
        rows[2]
