"""From the ten schema features to the numeric matrix the models read.

Pure NumPy, no scikit-learn: the service encodes requests with exactly the same
function the training pipeline used, from parameters stored in the bundle.

Columns, in order: one-hot of every category (schema order), the numeric
features (EMF's missing value filled with -1), an EMF-missing flag, — for
each trait — how far it lies from what is expected for the seedling's design
cell (Species x Soil) at its light level, in residual standard deviations, and,
for an encoder with `site`, a one-hot of the field plot (all zeros when the
plot is not given: a typical site).
Trait levels differ strongly between cells and rise with light, so "low for its
cell and light" carries more signal about mortality than the raw level (+0.02
cross-validated ROC AUC here). The expectations are a per-species least-squares
fit (one intercept per soil, one light slope), learnt from the training rows only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from treesurv.core import schema

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Coded:
    """A categorical column given as its categories' codes (their index in the schema's
    order), as the API's column check already holds them: `encode` takes them as
    they are instead of looking every value up again."""

    codes: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)


# Column-oriented input: a DataFrame or a mapping of column name to values.
Columns: TypeAlias = "Mapping[str, Sequence[Any] | np.ndarray | Coded] | pd.DataFrame"

EMF_FILL = -1.0


@dataclass(frozen=True)
class EncoderParams:
    """What `encode` needs; learnt by `fit_encoder`, stored in the bundle."""

    features: tuple[str, ...]
    cell_z: bool
    cell_mean: np.ndarray  # (n_species * n_soils, n_traits): expected trait at zero light
    cell_slope: np.ndarray  # change of the expected trait per unit of Light_ISF
    cell_std: np.ndarray  # residual standard deviation
    site: bool = False  # one-hot of the field plot (schema.SITE) after the rest

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(f for f in self.features if f in schema.CATEGORICAL)

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(f for f in self.features if f in schema.NUMERIC)

    @property
    def traits(self) -> tuple[str, ...]:
        return tuple(f for f in self.features if f in schema.TRAITS)

    @property
    def uses_cells(self) -> bool:
        return self.cell_z and bool(self.traits)

    def column_names(self) -> list[str]:
        names: list[str] = []
        for name in self.categorical:
            names += [f"{name}={c}" for c in schema.FEATURES_BY_NAME[name].categories]
        names += list(self.numeric)
        if "EMF" in self.features:
            names.append("EMF_missing")
        if self.uses_cells:
            names += [f"{t}_cell_z" for t in self.traits]
        if self.site:
            names += [f"{schema.SITE.name}={p}" for p in schema.PLOTS]
        return names

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"features": list(self.features), "cell_z": self.cell_z}
        if self.site:  # absent otherwise: encoders without it read as before
            out["site"] = True
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "encoder_cell_mean": self.cell_mean,
            "encoder_cell_slope": self.cell_slope,
            "encoder_cell_std": self.cell_std,
        }

    @classmethod
    def from_json(cls, spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> EncoderParams:
        features = tuple(spec["features"])
        unknown = [f for f in features if f not in schema.FEATURES_BY_NAME]
        if unknown:
            raise ValueError(f"encoder refers to unknown feature(s): {unknown}")
        try:
            mean, slope, std = (
                np.asarray(arrays[f"encoder_cell_{k}"], dtype=float)
                for k in ("mean", "slope", "std")
            )
        except KeyError as exc:
            raise ValueError(f"encoder array {exc.args[0]} is missing") from None
        n_traits = len([f for f in features if f in schema.TRAITS])
        if not mean.shape == slope.shape == std.shape == (N_CELLS, n_traits):
            raise ValueError("encoder cell arrays have the wrong shape")
        if np.any(std <= 0) or not np.all(np.isfinite(std)):
            raise ValueError("encoder standard deviations must be positive")
        site = spec.get("site", False)
        if not isinstance(site, bool):
            raise ValueError("encoder 'site' must be true or false")
        return cls(features, bool(spec["cell_z"]), mean, slope, std, site)


# Each categorical feature's codes: a category's index in the schema's order.
CODES: dict[str, dict[str, int]] = {
    name: {c: i for i, c in enumerate(schema.FEATURES_BY_NAME[name].categories)}
    for name in schema.CATEGORICAL
}
N_CELLS = len(schema.SPECIES) * len(schema.SOIL_SOURCES)


def category_codes(values: Sequence[Any] | np.ndarray | Coded, feature: str) -> np.ndarray:
    """A categorical column's codes (`CODES`); ValueError names an unknown category."""
    if isinstance(values, Coded):
        return values.codes
    try:
        return np.array(list(map(CODES[feature].__getitem__, values)), dtype=np.intp)
    except KeyError as exc:
        raise ValueError(
            f"{feature}: unknown category {exc.args[0]!r}; "
            f"must be {schema.FEATURES_BY_NAME[feature].allowed()}"
        ) from None


def cell_index(
    species: Sequence[Any] | np.ndarray | Coded, soil: Sequence[Any] | np.ndarray | Coded
) -> np.ndarray:
    return category_codes(species, "Species") * len(schema.SOIL_SOURCES) + category_codes(
        soil, "Soil"
    )


def fit_encoder(
    columns: Columns,
    features: Sequence[str] = schema.FEATURE_NAMES,
    cell_z: bool = True,
    site: bool = False,
) -> EncoderParams:
    """Learn each trait's expected level per design cell and light.

    Per species and trait: least squares of the trait on one intercept per soil
    source and a common light slope. A soil source without training rows for a
    species takes the mean of that species' intercepts; a species with too few
    rows has no slope, then no intercepts; a zero spread falls back to 1.
    """
    features = tuple(features)
    traits = [f for f in features if f in schema.TRAITS]
    n_soils = len(schema.SOIL_SOURCES)
    mean = np.zeros((N_CELLS, len(traits)))
    slope = np.zeros((N_CELLS, len(traits)))
    std = np.ones((N_CELLS, len(traits)))
    if cell_z and traits:
        cells = cell_index(_categories(columns["Species"]), _categories(columns["Soil"]))
        light = _floats(columns["Light_ISF"])
        for j, trait in enumerate(traits):
            x = _floats(columns[trait])
            for s in range(len(schema.SPECIES)):
                rows = ~np.isnan(x) & (cells // n_soils == s) & ~np.isnan(light)
                fit = _fit_species(cells[rows] % n_soils, light[rows], x[rows], n_soils)
                if fit is not None:
                    block = slice(s * n_soils, (s + 1) * n_soils)
                    mean[block, j], slope[block, j], std[block, j] = fit
    return EncoderParams(features, cell_z, mean, slope, std, site)


def _fit_species(
    soil: np.ndarray, light: np.ndarray, x: np.ndarray, n_soils: int
) -> tuple[np.ndarray, float, float] | None:
    present = np.unique(soil)
    if len(x) < 2:
        return None
    if len(x) >= len(present) + 3 and np.ptp(light) > 0:
        design = np.zeros((len(x), len(present) + 1))
        design[np.arange(len(x)), np.searchsorted(present, soil)] = 1.0
        design[:, -1] = light
        beta, *_ = np.linalg.lstsq(design, x, rcond=None)
        resid = x - design @ beta
        dof = len(x) - design.shape[1]
        intercepts, b = beta[:-1], float(beta[-1])
    else:  # too few rows for a slope: plain cell means
        intercepts = np.array([x[soil == k].mean() for k in present])
        b = 0.0
        resid = x - intercepts[np.searchsorted(present, soil)]
        dof = max(len(x) - len(present), 1)
    sd = float(np.sqrt(np.sum(resid**2) / dof))
    out = np.full(n_soils, float(np.mean(intercepts)))
    out[present] = intercepts
    return out, b, sd if sd > 1e-12 else 1.0


def encode(params: EncoderParams, columns: Columns) -> np.ndarray:
    """Encode column-oriented input (a DataFrame works) into a float64 matrix.

    Raises ValueError naming the feature for an unknown category; inputs are
    expected to have passed schema validation already.
    """
    n = len(columns[params.features[0]])
    blocks: list[np.ndarray] = []
    for name in params.categorical:
        k = len(schema.FEATURES_BY_NAME[name].categories)
        onehot = np.zeros((n, k))
        onehot[np.arange(n), category_codes(_categories(columns[name]), name)] = 1.0
        blocks.append(onehot)
    numeric = np.empty((n, len(params.numeric)))
    for j, name in enumerate(params.numeric):
        numeric[:, j] = _floats(columns[name])
    emf_missing = None
    if "EMF" in params.numeric:
        j = params.numeric.index("EMF")
        emf_missing = np.isnan(numeric[:, j])
        numeric[emf_missing, j] = EMF_FILL
    blocks.append(numeric)
    if emf_missing is not None:
        blocks.append(emf_missing[:, None].astype(float))
    if params.uses_cells:
        cells = cell_index(_categories(columns["Species"]), _categories(columns["Soil"]))
        light = _floats(columns["Light_ISF"])
        z = np.empty((n, len(params.traits)))
        for j, trait in enumerate(params.traits):
            x = _floats(columns[trait])
            expected = params.cell_mean[cells, j] + params.cell_slope[cells, j] * light
            zj = (x - expected) / params.cell_std[cells, j]
            z[:, j] = np.where(np.isnan(zj), 0.0, zj)  # missing EMF: neutral
        blocks.append(z)
    if params.site:
        blocks.append(_plot_onehot(columns, n))
    return np.hstack(blocks) if len(blocks) > 1 else blocks[0]


_PLOT_INDEX = {p: i for i, p in enumerate(schema.PLOTS)}


def _plot_column(plot: Any) -> int:
    """Index of a plot's one-hot column, -1 for none (missing, or not a study plot:
    validation refuses those at the API; in training data they count as unknown)."""
    try:
        value = float(plot)
    except (TypeError, ValueError):  # None, pandas' NA
        return -1
    return _PLOT_INDEX.get(int(value), -1) if value.is_integer() else -1


def _plot_onehot(columns: Columns, n: int) -> np.ndarray:
    onehot = np.zeros((n, len(schema.PLOTS)))
    if schema.SITE.name in columns:
        index = np.fromiter(
            (_plot_column(p) for p in _values(columns[schema.SITE.name])), np.intp, count=n
        )
        given = index >= 0
        onehot[np.flatnonzero(given), index[given]] = 1.0
    return onehot


def _categories(column: Any) -> Sequence[Any] | Coded:
    return column if isinstance(column, Coded) else _values(column)


def _values(column: Any) -> Sequence[Any]:
    return column.tolist() if hasattr(column, "tolist") else list(column)


def _floats(column: Any) -> np.ndarray:
    values = np.asarray(
        column.to_numpy(dtype=float, na_value=np.nan) if hasattr(column, "to_numpy") else column,
        dtype=float,
    )
    return values


class RowEncoder:
    """A faster path for one instance given as a dict (the API's hot path).

    Same output as `encode` for a one-row input (a test checks it), without the
    per-column array machinery: index arithmetic into a preallocated row.
    """

    def __init__(self, params: EncoderParams) -> None:
        self.params = params
        self.width = len(params.column_names())
        self._onehot: list[tuple[str, int, dict[str, int]]] = []
        offset = 0
        for name in params.categorical:
            cats = schema.FEATURES_BY_NAME[name].categories
            self._onehot.append((name, offset, {c: i for i, c in enumerate(cats)}))
            offset += len(cats)
        self._numeric = [(name, offset + j) for j, name in enumerate(params.numeric)]
        offset += len(params.numeric)
        self._emf_pos = -1
        self._emf_flag = -1
        if "EMF" in params.numeric:
            self._emf_pos = dict(self._numeric)["EMF"]
            self._emf_flag = offset
            offset += 1
        self._z = (
            [(name, offset + j) for j, name in enumerate(params.traits)]
            if params.uses_cells
            else []
        )
        self._site = offset + len(self._z) if params.site else -1
        self._mean = params.cell_mean.tolist()
        self._slope = params.cell_slope.tolist()
        self._std = params.cell_std.tolist()
        self._n_soils = len(schema.SOIL_SOURCES)
        self._species, self._soils = CODES["Species"], CODES["Soil"]

    def encode(self, row: Mapping[str, Any], out: np.ndarray | None = None) -> np.ndarray:
        x = np.zeros(self.width) if out is None else out
        for name, offset, index in self._onehot:
            x[offset + index[row[name]]] = 1.0
        for name, pos in self._numeric:
            v = row.get(name)
            x[pos] = np.nan if v is None else v
        emf_missing = False
        if self._emf_flag >= 0:
            emf_missing = bool(x[self._emf_pos] != x[self._emf_pos])
            if emf_missing:
                x[self._emf_pos] = EMF_FILL
            x[self._emf_flag] = 1.0 if emf_missing else 0.0
        if self._z:
            cell = self._species[row["Species"]] * self._n_soils + self._soils[row["Soil"]]
            means, slopes, stds = self._mean[cell], self._slope[cell], self._std[cell]
            light = float(row["Light_ISF"])
            for j, (name, pos) in enumerate(self._z):
                v = row.get(name)
                if v is None or v != v:
                    x[pos] = 0.0
                else:
                    x[pos] = (float(v) - (means[j] + slopes[j] * light)) / stds[j]
        if self._site >= 0:
            k = _plot_column(row.get(schema.SITE.name))
            if k >= 0:
                x[self._site + k] = 1.0
        return x
