"""Instances as the API receives them (JSON objects), checked column by column: the
fast path of a batch request.

`full_model_columns` returns a list of instances as columns when every instance is
valid for the full model under the schema (types, ranges, categories and the
cross-field rules the request models enforce); otherwise None, and the request
models then validate the body and name every problem. The check only ever accepts:
a body it declines is answered exactly as before, and a body it accepts holds the
values the request models would have given, so the scores are the same bit for bit.
It takes a few NumPy operations per column instead of one Python object per
instance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from treesurv.core import schema

ALLOWED = frozenset(schema.INPUT_NAMES)
# The full model needs every feature but the nullable ones (EMF, absent for AMF species).
REQUIRED = frozenset(f.name for f in schema.FEATURES if not f.nullable)
NUMBER_TYPES = frozenset({int, float})


def _categories(name: str) -> tuple[str, ...]:
    return schema.FEATURES_BY_NAME[name].categories


def _code_table(*names: str) -> dict[str, dict[str, int]]:
    return {n: {c: i for i, c in enumerate(_categories(n))} for n in names}


CODES = _code_table(*schema.CATEGORICAL)
# The cross-field rules (schema.RULES) as lookup tables over category codes, built
# from the schema's own functions.
AMF = np.array([schema.SPECIES_MYCO[s] == "AMF" for s in _categories("Species")])
STERILE_OK = np.array(
    [
        [(soil == "Sterile") == (sterile == "Sterile") for sterile in _categories("Sterile")]
        for soil in _categories("Soil")
    ]
)
CONSPECIFIC_EXPECTED = np.array(
    [
        [
            CODES["Conspecific"][schema.expected_conspecific(species, soil)]
            for soil in _categories("Soil")
        ]
        for species in _categories("Species")
    ]
)


def _codes(values: list[Any], name: str) -> np.ndarray | None:
    """Category codes, or None if a value is not one of the feature's categories."""
    table = CODES[name]
    try:
        return np.fromiter((table[v] for v in values), dtype=np.int64, count=len(values))
    except (KeyError, TypeError):  # unknown (or unhashable) value
        return None


def _numbers(values: list[Any], feature: schema.Feature) -> np.ndarray | None:
    """The values as floats (None as NaN where the feature is nullable), or None if one
    is of the wrong type or out of range."""
    allowed = NUMBER_TYPES | {type(None)} if feature.nullable else NUMBER_TYPES
    types = set(map(type, values))
    if not types <= allowed:  # bool is not a number here
        return None
    if feature.whole and float in types:
        return None  # 3.0 for a whole number: the request models decide
    array = np.array(values, dtype=np.float64)
    present = ~np.isnan(array)
    low = -np.inf if feature.minimum is None else feature.minimum
    high = np.inf if feature.maximum is None else feature.maximum
    inside = (array >= low) & (array <= high)
    if not np.all(inside | ~present):
        return None
    if not feature.nullable and not np.all(present):
        return None
    return array


def full_model_columns(instances: Any) -> dict[str, Any] | None:
    """The instances as columns (categories as lists of str, numbers as float arrays,
    the plot too when given), or None unless all are valid full-model instances."""
    if not isinstance(instances, list) or not instances:
        return None
    if not all(type(i) is dict and REQUIRED <= i.keys() <= ALLOWED for i in instances):
        return None
    columns: dict[str, Any] = {}
    codes: dict[str, np.ndarray] = {}
    for feature in schema.FEATURES:
        values = [i.get(feature.name) for i in instances]
        if feature.kind == "categorical":
            found = _codes(values, feature.name)
            if found is None:
                return None
            codes[feature.name] = found
            columns[feature.name] = values
        else:
            numbers = _numbers(values, feature)
            if numbers is None:
                return None
            columns[feature.name] = numbers
    if any(schema.SITE.name in i for i in instances):
        plots = _numbers([i.get(schema.SITE.name) for i in instances], schema.SITE)
        if plots is None:
            return None
        columns[schema.SITE.name] = plots
    species, soil = codes["Species"], codes["Soil"]
    emf_missing = np.isnan(columns["EMF"])
    if not (
        np.array_equal(emf_missing, AMF[species])
        and STERILE_OK[soil, codes["Sterile"]].all()
        and np.array_equal(CONSPECIFIC_EXPECTED[species, soil], codes["Conspecific"])
    ):
        return None
    return columns
