"""Row-level validation of the study's data against the schema (pandera).

Every bad cell or row is reported with its line number in the file, the column,
the value and the rule it breaks, so that whoever owns the file can fix it in one
pass. Pure functions over DataFrames; `validate_file` reads the file first."""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from treesurv.core import schema
from treesurv.core.files import DataFileError, read_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowIssue:
    """One broken rule: `line` is the 1-based line in the file (header is line 1)."""

    line: int | None
    column: str
    value: str
    rule: str

    def describe(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        return f"{where}: {self.column}={self.value}: {self.rule}"


@dataclass
class ValidationReport:
    source: str
    rows: int = 0
    valid_rows: int = 0
    issues: list[RowIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fatal: str | None = None  # a reason that makes the whole file unusable

    @property
    def ok(self) -> bool:
        return self.fatal is None and not self.issues

    @property
    def bad_lines(self) -> set[int]:
        return {i.line for i in self.issues if i.line is not None}

    def summary(self) -> str:
        if self.fatal:
            return f"{self.source}: unusable: {self.fatal}"
        if self.ok:
            return f"{self.source}: {self.valid_rows} valid rows" + (
                f" ({'; '.join(self.notes)})" if self.notes else ""
            )
        return (
            f"{self.source}: {len(self.issues)} problem(s) in "
            f"{len(self.bad_lines)} row(s) of {self.rows}"
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


@dataclass(frozen=True)
class ValidationOptions:
    """What a file must carry: training data needs ids and targets, scoring data not;
    the planning model's files only the design fields (the traits are unknown then)."""

    require_id: bool = True
    require_target: bool = True
    features: tuple[str, ...] = schema.FEATURE_NAMES

    def checked(self) -> tuple[schema.Feature, ...]:
        return tuple(f for f in schema.FEATURES if f.name in self.features)

    def rules(self) -> tuple[schema.Rule, ...]:
        """The cross-field rules on the checked fields (EMF's is not one for a planning file)."""
        return tuple(r for r in schema.RULES if set(r.columns) <= set(self.features))


TRAINING = ValidationOptions()


SCORING = ValidationOptions(require_id=False, require_target=False)
PLANNING_SCORING = ValidationOptions(require_id=False, require_target=False, features=schema.DESIGN)


def _rule_text(check: str, column: str) -> str:
    feature = schema.FEATURES_BY_NAME.get(column)
    if check.startswith("coerce_dtype") or check.startswith("dtype("):
        if column == schema.ID:
            return "must be a whole number"
        return "must be a number"
    if check == "not_nullable":
        return "is required (the cell is empty)"
    if check == "field_uniqueness":
        return f"duplicate {column}: ids must be unique"
    if check == "column_in_dataframe":
        return "required column is missing"
    if feature is not None and (check.startswith("isin") or check.startswith("in_range")):
        return f"must be {feature.allowed()}"
    if column == schema.TARGET:
        return "must be 0 (censored) or 1 (died)"
    return check


def _pandera() -> Any:
    # Imported lazily: pandera is heavy and scoring a validated request needs none of it.
    import pandera.pandas as pa

    return pa


def _type_schema(options: ValidationOptions) -> Any:
    pa = _pandera()
    columns: dict[str, Any] = {}
    for f in options.checked():
        dtype = str if f.kind == "categorical" else float
        columns[f.name] = pa.Column(dtype, coerce=True, nullable=True)
    if options.require_id:
        columns[schema.ID] = pa.Column("Int64", coerce=True, nullable=True)
    if options.require_target:
        columns[schema.TARGET] = pa.Column(float, coerce=True, nullable=True)
    return pa.DataFrameSchema(columns)


def _value_schema(options: ValidationOptions) -> Any:
    pa = _pandera()
    columns: dict[str, Any] = {}
    for f in options.checked():
        if f.kind == "categorical":
            columns[f.name] = pa.Column(str, pa.Check.isin(list(f.categories)), nullable=False)
        else:
            columns[f.name] = pa.Column(
                float, pa.Check.in_range(f.minimum, f.maximum), nullable=f.nullable
            )
    if options.require_id:
        columns[schema.ID] = pa.Column("Int64", unique=True, nullable=False)
    if options.require_target:
        columns[schema.TARGET] = pa.Column(float, pa.Check.isin([0.0, 1.0]), nullable=False)
    checks = [
        pa.Check(_rule_check(rule), name=rule.name, error=rule.message) for rule in options.rules()
    ]
    return pa.DataFrameSchema(columns, checks=checks)


def _rule_check(rule: schema.Rule) -> Any:
    def check_frame(frame: pd.DataFrame) -> pd.DataFrame:
        ok = pd.Series(rule_mask(frame, rule), index=frame.index)
        # Report once per row, on the rule's first column.
        out = pd.DataFrame(True, index=frame.index, columns=frame.columns)
        out[rule.columns[0]] = ok
        return out

    return check_frame


def rule_mask(frame: pd.DataFrame, rule: schema.Rule) -> np.ndarray:
    """True where the row obeys the rule (rows with unknown categories pass: those
    are reported by the category check already)."""
    species = frame["Species"].astype("object")
    soil = frame["Soil"].astype("object")
    if rule.name == "emf_matches_species":
        myco = species.map(schema.SPECIES_MYCO)
        emf_missing = frame["EMF"].isna()
        ok = myco.isna() | (emf_missing == (myco == "AMF"))
    elif rule.name == "sterile_matches_soil":
        sterile = frame["Sterile"].astype("object")
        known = soil.isin(schema.SOIL_SOURCES) & sterile.isin(schema.STERILE)
        ok = ~known | ((soil == "Sterile") == (sterile == "Sterile"))
    elif rule.name == "conspecific_matches_soil":
        consp = frame["Conspecific"].astype("object")
        known = (
            species.isin(schema.SPECIES)
            & soil.isin(schema.SOIL_SOURCES)
            & consp.isin(schema.CONSPECIFIC)
        )
        expected = np.where(
            soil == "Sterile",
            "Sterilized",
            np.where(soil == species, "Conspecific", "Heterospecific"),
        )
        ok = ~known | (consp == expected)
    else:  # pragma: no cover - every rule in schema.RULES is handled above
        raise KeyError(rule.name)
    return np.asarray(ok, dtype=bool)


def _failures(frame: pd.DataFrame, pandera_schema: Any) -> pd.DataFrame:
    pa = _pandera()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            pandera_schema.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as exc:
            return exc.failure_cases
    return pd.DataFrame(columns=["column", "check", "failure_case", "index"])


def cell_text(value: Any, empty: str = "") -> str:
    """A cell as a person wrote it: a whole float without ".0", a missing value as
    `empty`. Reports name bad values so; XLSX cells are read as text so."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return empty
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _fmt(value: Any) -> str:
    return cell_text(value, "(empty)")


def coerce(frame: pd.DataFrame, options: ValidationOptions = SCORING) -> pd.DataFrame:
    """Typed copy of the model columns; cells that do not parse become missing.

    The other columns are shared with `frame` (a shallow copy): every column
    changed here is replaced, never written into."""
    out = frame.copy(deep=False)
    for f in schema.FEATURES:
        if f.name not in out.columns:
            continue
        if f.kind == "numeric":
            out[f.name] = pd.to_numeric(out[f.name], errors="coerce").astype(float)
        else:
            out[f.name] = out[f.name].astype("object").where(out[f.name].notna(), None)
    if options.require_id and schema.ID in out.columns:
        num = pd.to_numeric(out[schema.ID], errors="coerce")
        whole = num.notna() & (num == np.floor(num.fillna(0)))
        out[schema.ID] = num.where(whole).astype("Int64")
    if schema.TARGET in out.columns:
        out[schema.TARGET] = pd.to_numeric(out[schema.TARGET], errors="coerce").astype(float)
    return out


def validate(
    frame: pd.DataFrame, source: str = "data", options: ValidationOptions = TRAINING
) -> tuple[pd.DataFrame, ValidationReport]:
    """Validate a raw frame against the schema.

    Returns the typed rows that pass (rows with an empty target are dropped with a
    note when targets are required) and the report. The caller decides whether a
    report with issues stops the pipeline (training) or only skips rows (scoring).
    """
    report = ValidationReport(source=source, rows=len(frame))
    required = list(options.features)
    if options.require_id:
        required.append(schema.ID)
    if options.require_target:
        required.append(schema.TARGET)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        report.fatal = "missing required column(s): " + ", ".join(missing)
        report.issues = [
            RowIssue(None, c, "(absent)", "required column is missing") for c in missing
        ]
        return frame.iloc[0:0], report
    if len(frame) == 0:
        report.fatal = "the file has no data rows"
        return frame, report

    frame = frame.reset_index(drop=True)
    issues: list[RowIssue] = []
    seen: set[tuple[int, str]] = set()

    def add(index: Any, column: str, value: Any, check: str, message: str | None = None) -> None:
        idx = (
            None
            if index is None or (isinstance(index, float) and math.isnan(index))
            else int(index)
        )
        if idx is not None:
            if (idx, column) in seen:
                return
            seen.add((idx, column))
        line = idx + 2 if idx is not None else None
        issues.append(RowIssue(line, column, _fmt(value), message or _rule_text(check, column)))

    # Pass 1: does every cell parse as its type?
    types = _failures(frame, _type_schema(options))
    for case in types.to_dict("records"):
        if str(case["check"]).startswith("coerce_dtype"):
            add(case["index"], str(case["column"]), case["failure_case"], str(case["check"]))
    typed = coerce(frame, options)

    # An empty target is a row the study never resolved: drop it, with a note.
    if options.require_target:
        empty_target = frame[schema.TARGET].isna()
        if empty_target.any():
            lines = ", ".join(str(i + 2) for i in np.flatnonzero(empty_target.to_numpy()))
            report.notes.append(
                f"dropped {int(empty_target.sum())} row(s) with an empty target (line {lines})"
            )
            log.info("%s: %s", source, report.notes[-1])
            typed = typed[~empty_target]

    # Pass 2: values, uniqueness and cross-field rules on the typed rows.
    values = _failures(typed, _value_schema(options))
    rules = {r.name: r for r in schema.RULES}
    for case in values.to_dict("records"):
        check, column, index = str(case["check"]), str(case["column"]), case["index"]
        if index is None or (isinstance(index, float) and math.isnan(index)):
            continue
        if check.startswith("dtype("):
            continue  # reported by pass 1
        if check in rules or check in {r.message for r in schema.RULES}:
            rule = rules.get(check) or next(r for r in schema.RULES if r.message == check)
            vals = ", ".join(f"{c}={_fmt(frame.at[int(index), c])}" for c in rule.columns)
            add(index, "+".join(rule.columns), vals, check, rule.message)
            continue
        if check == "not_nullable" and (int(index), column) in seen:
            continue  # an unparseable cell became empty; already reported
        raw = frame.at[int(index), column] if column in frame.columns else case["failure_case"]
        add(index, column, raw, check)
    issues.sort(key=lambda i: (i.line or 0, i.column))
    report.issues = issues
    bad = {i.line - 2 for i in issues if i.line is not None}
    clean = typed[~typed.index.isin(bad)]
    report.valid_rows = len(clean)
    if report.valid_rows == 0 and not issues:
        report.fatal = "no usable rows"
    return clean, report


def all_valid(frame: pd.DataFrame, options: ValidationOptions = SCORING) -> pd.DataFrame | None:
    """Fast vectorised check of the same rules as `validate`, for large clean files.

    Returns the typed frame (what `validate` would return) when every row passes
    every check, and None otherwise: the caller then runs `validate` for the
    row-level report. It never accepts a row that `validate` would refuse: a cell
    that does not parse, is out of range, is empty where required, or breaks a
    category or cross-field rule fails here too. Ids and targets (training
    files) are left to `validate`.
    """
    if options.require_id or options.require_target:
        return None
    if len(frame) == 0 or any(c not in frame.columns for c in options.features):
        return None
    typed = coerce(frame, options)
    for f in options.checked():
        raw, col = frame[f.name], typed[f.name]
        if f.kind == "categorical":
            if not col.isin(f.categories).all():
                return None
            continue
        values = col.to_numpy(dtype=float)
        missing = np.isnan(values)
        # A cell that was given but did not parse is a type error, not a gap.
        if (missing & raw.notna().to_numpy()).any() or (missing.any() and not f.nullable):
            return None
        present = values[~missing]
        if ((present < f.minimum) | (present > f.maximum)).any():
            return None
    if not all(rule_mask(typed, rule).all() for rule in options.rules()):
        return None
    return typed


def validate_file(
    path: Path | str, options: ValidationOptions = TRAINING
) -> tuple[pd.DataFrame, ValidationReport]:
    """Read and validate; a file that cannot be read gives a fatal one-line reason."""
    try:
        frame = read_table(path)
    except DataFileError as exc:
        report = ValidationReport(source=str(path), fatal=str(exc).split(": ", 1)[-1])
        return pd.DataFrame(), report
    return validate(frame, source=str(path), options=options)
