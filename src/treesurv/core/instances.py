"""Instances as the API receives them, checked column by column: the fast path of
a batch request.

`batch_columns` takes a whole `{"instances": [...]}` body and returns its instances
as columns when every instance is valid for the full model under the schema (types,
ranges, categories and the cross-field rules the request models enforce); otherwise
None, and the request models then validate the body and name every problem. msgspec
decodes the body straight into typed instances built from the schema, checking
types, ranges and categories in C as it parses; the cross-field rules are checked
on the columns. `checked_columns` is the same check on values already held as
columns (the Open Inference Protocol's tensors). The check only ever accepts: a body
it declines is answered exactly as before, and a body it accepts holds the values
the request models would have given, so the scores are the same bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, overload

import msgspec
import numpy as np

from treesurv.core import schema
from treesurv.core.encoding import CODES, Coded, category_codes

NUMBER_TYPES = frozenset({int, float})


def _categories(name: str) -> tuple[str, ...]:
    return schema.FEATURES_BY_NAME[name].categories


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


Column = Sequence[Any] | np.ndarray | Coded  # what `checked_columns` takes


def _codes(values: Column, name: str) -> np.ndarray | None:
    """Category codes, or None if a value is not one of the feature's categories (a
    `Coded` column holds them already: a binary tensor read straight into codes)."""
    if isinstance(values, np.ndarray):
        return None  # numbers
    try:
        return category_codes(values, name)
    except (ValueError, TypeError):  # unknown (or unhashable) value
        return None


def _numbers(values: Column, feature: schema.Feature) -> np.ndarray | None:
    """The values as floats (None, or NaN in a float array, as missing where the feature
    is nullable), or None if one is of the wrong type or out of range."""
    if isinstance(values, Coded):
        return None  # categories
    if isinstance(values, np.ndarray):  # a binary tensor's floats
        if feature.whole or values.dtype != np.float64:
            return None  # as 3.0 in JSON for a whole number: the request models decide
        array = values
    else:
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


def _field(feature: schema.Feature) -> tuple[Any, ...]:
    """A msgspec field that takes what the request models take for the feature: its
    categories, or a JSON number in its range (a JSON integer for a whole number; no
    bool, no string), null where the feature is nullable (the default when omitted)."""
    if feature.kind == "categorical":
        kind: Any = Literal[feature.categories]
    else:
        number = int if feature.whole else float
        kind = Annotated[number, msgspec.Meta(ge=feature.minimum, le=feature.maximum)]
    return (feature.name, kind | None, None) if feature.nullable else (feature.name, kind)


_INPUTS = sorted((schema.INPUTS_BY_NAME[n] for n in schema.INPUT_NAMES), key=lambda f: f.nullable)
# Unknown fields refused; gc=False: the instances hold only strings and numbers.
_Instance = msgspec.defstruct(
    "Instance", [_field(f) for f in _INPUTS], forbid_unknown_fields=True, gc=False
)
_Batch = msgspec.defstruct(
    "Batch",
    [("instances", list[_Instance]), ("horizon_days", type(None), None)],  # type: ignore[valid-type]
    forbid_unknown_fields=True,
)
_BATCH = msgspec.json.Decoder(_Batch)
_ORDER = tuple(f.name for f in _INPUTS)  # the fields of an instance's `astuple`


def batch_columns(body: bytes, max_batch: int) -> dict[str, Any] | None:
    """The instances of a `{"instances": [...]}` body as columns (categories as their
    codes, numbers as float arrays, NaN where null; not the plot, which the
    classifier does not read), when the body holds
    2 to `max_batch` valid full-model instances and no horizon; else None, and the
    request models validate the body. As strict as they are: a duplicated key takes
    its last value, as in the request models' JSON parser."""
    try:
        found: list[Any] = _BATCH.decode(body).instances  # type: ignore[attr-defined]
    except msgspec.DecodeError:  # malformed, or not what the schema allows
        return None
    if not 2 <= len(found) <= max_batch:
        return None
    values = dict(zip(_ORDER, zip(*map(msgspec.structs.astuple, found), strict=True), strict=True))
    columns: dict[str, Any] = {}
    codes: dict[str, np.ndarray] = {}
    for feature in schema.FEATURES:
        if feature.kind == "categorical":
            found_codes = _codes(values[feature.name], feature.name)
            if found_codes is None:  # not reached: msgspec took only the categories
                return None
            codes[feature.name] = found_codes
            columns[feature.name] = Coded(found_codes)
        else:  # None (a nullable feature's) becomes NaN
            columns[feature.name] = np.array(values[feature.name], dtype=np.float64)
    return columns if _rules_hold(columns, codes) else None


def _rules_hold(columns: Mapping[str, Any], codes: Mapping[str, np.ndarray]) -> bool:
    """The cross-field rules (schema.RULES), on every row at once."""
    species, soil = codes["Species"], codes["Soil"]
    return bool(
        np.array_equal(np.isnan(columns["EMF"]), AMF[species])
        and STERILE_OK[soil, codes["Sterile"]].all()
        and np.array_equal(CONSPECIFIC_EXPECTED[species, soil], codes["Conspecific"])
    )


def checked_columns(values: Mapping[str, Column]) -> dict[str, Any] | None:
    """Columns of equal length, one per feature (None where a value is missing; the
    plot optional), as `batch_columns` returns them (with the plot, when given), or
    None unless every row is a valid full-model instance. `values` holds what an
    instance would hold: the same rows as dicts would be accepted by the request
    models with these values. A numeric column may also be a float64 array (NaN:
    missing) and a categorical one `Coded`, as a binary tensor is read."""
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
    return columns if _rules_hold(columns, codes) else None


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
