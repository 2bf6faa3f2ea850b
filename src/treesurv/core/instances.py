"""Instances as the API receives them (JSON objects), checked column by column: the
fast path of a batch request.

`full_model_columns` returns a list of instances as columns when every instance is
valid for the full model under the schema (types, ranges, categories and the
cross-field rules the request models enforce); otherwise None, and the request
models then validate the body and name every problem. The check only ever accepts:
a body it declines is answered exactly as before, and a body it accepts holds the
values the request models would have given, so the scores are the same bit for bit.
It takes a few NumPy operations per column instead of one Python object per
instance. `checked_columns` is the same check on values already held as columns
(the Open Inference Protocol's tensors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any, overload

import numpy as np

from treesurv.core import schema
from treesurv.core.encoding import Coded

ALLOWED = frozenset(schema.INPUT_NAMES)
# The full model needs every feature but the nullable ones (EMF, absent for AMF species).
REQUIRED = frozenset(f.name for f in schema.FEATURES if not f.nullable)
REQUIRED_ORDER = tuple(f.name for f in schema.FEATURES if not f.nullable)
_get_required = itemgetter(*REQUIRED_ORDER)
OPTIONAL = tuple(n for n in schema.INPUT_NAMES if n not in REQUIRED)  # nullable, the plot
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


def _codes(values: Sequence[Any], name: str) -> np.ndarray | None:
    """Category codes, or None if a value is not one of the feature's categories."""
    try:
        return np.array(list(map(CODES[name].__getitem__, values)), dtype=np.int64)
    except (KeyError, TypeError):  # unknown (or unhashable) value
        return None


def _numbers(values: Sequence[Any], feature: schema.Feature) -> np.ndarray | None:
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
    """The instances as columns (categories as their codes, numbers as float arrays,
    the plot too when given), or None unless all are valid full-model instances."""
    if not isinstance(instances, list) or not instances:
        return None
    if set(map(type, instances)) != {dict}:
        return None
    # The required fields of every instance, transposed into columns, in C (itemgetter
    # and zip): a KeyError is an instance without one of them.
    try:
        required = dict(
            zip(REQUIRED_ORDER, zip(*map(_get_required, instances), strict=True), strict=True)
        )
    except KeyError:
        return None
    given = {name: sum(1 for i in instances if name in i) for name in OPTIONAL}
    # Every instance holds the required keys, so the key count says whether any holds
    # one that is neither those nor an optional one: an unknown field.
    if sum(map(len, instances)) != len(REQUIRED_ORDER) * len(instances) + sum(given.values()):
        return None
    values = {
        f.name: required[f.name] if f.name in required else [i.get(f.name) for i in instances]
        for f in schema.FEATURES
    }
    if given[schema.SITE.name]:
        values[schema.SITE.name] = [i.get(schema.SITE.name) for i in instances]
    return checked_columns(values)


def checked_columns(values: Mapping[str, Sequence[Any]]) -> dict[str, Any] | None:
    """Columns of equal length, one per feature (None where a value is missing; the
    plot optional), as `full_model_columns` returns them, or None unless every row is
    a valid full-model instance. `values` holds what an instance would hold: the
    same rows as dicts would be accepted by the request models with these values."""
    columns: dict[str, Any] = {}
    codes: dict[str, np.ndarray] = {}
    for feature in schema.FEATURES:
        column = values[feature.name]
        if feature.kind == "categorical":
            found = _codes(column, feature.name)
            if found is None:
                return None
            codes[feature.name] = found
            columns[feature.name] = Coded(found)
        else:
            numbers = _numbers(column, feature)
            if numbers is None:
                return None
            columns[feature.name] = numbers
    if schema.SITE.name in values:
        plots = _numbers(values[schema.SITE.name], schema.SITE)
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


class ColumnRows(Sequence[dict[str, Any]]):
    """Columns read as instance dicts, each built only when read: what the prediction
    log encodes after the answer has gone, so the scoring path builds none."""

    def __init__(self, values: dict[str, list[Any]]) -> None:
        self._values = values
        self._n = len(next(iter(values.values()))) if values else 0

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._n))]
        if not -self._n <= index < self._n:
            raise IndexError(index)
        return {name: column[index] for name, column in self._values.items()}
