"""Which model answers a request, and the checks on the days asked for.

An instance gives all five traits (full model) or none of them (planning model:
before planting nobody knows them). Giving some is refused, naming the missing
ones. A batch is answered by one model, so full and planning instances cannot be
mixed in one request: the response's `model` says which one answered all of it.
Days are checked against the served survival model's follow-up, read from the
bundle, never assumed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError

from treesurv.core import schema
from treesurv.inference.predictor import FastPredictor, SurvivalPredictor
from treesurv.serving.schemas import REQUIRED_TRAITS
from treesurv.serving.state import Served

FULL, PLANNING = "full", "planning"
MAX_HORIZONS = 200


def trait_mode(row: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(model, missing traits) of one validated instance."""
    if all(row.get(t) is None for t in schema.TRAITS):
        return PLANNING, []
    missing = [t for t in REQUIRED_TRAITS if row.get(t) is None]
    if missing and schema.SPECIES_MYCO.get(row["Species"]) == "EMF":
        # EMF is a trait of EMF species: name it too (the schema's rule checks it
        # once the others are given).
        missing = [t for t in schema.TRAITS if row.get(t) is None]
    return FULL, missing


def _error(loc: tuple[str | int, ...], kind: str, msg: str, value: Any, allowed: str) -> Any:
    return {
        "type": kind,
        "loc": ("body", *loc),
        "msg": msg,
        "input": value,
        "ctx": {"expected": allowed},
    }


def choose_model(
    served: Served, rows: Sequence[Mapping[str, Any]], container: tuple[str | int, ...]
) -> str:
    """The one model that answers these instances, or a 422 naming what is wrong.

    `container` is where the instances sit in the body: ("instances",) for a list
    (the index is appended), ("instance",) for the single instance of /v1/compare.
    """
    errors: list[Any] = []
    modes: list[str] = []
    many = container == ("instances",)
    for i, row in enumerate(rows):
        where = (*container, i) if many else container
        mode, missing = trait_mode(row)
        modes.append(mode)
        errors += [{"type": "missing", "loc": ("body", *where, t), "input": row} for t in missing]
    if not errors and len(set(modes)) > 1:
        first = modes[0]
        odd = next(i for i, m in enumerate(modes) if m != first)
        errors.append(
            _error(
                (*container, odd),
                "mixed_models",
                f"instances[{odd}] {'omits' if modes[odd] == PLANNING else 'gives'} the traits "
                f"while instances[0] {'omits' if first == PLANNING else 'gives'} them; one "
                "request is answered by one model",
                None,
                "instances that all give the traits (full model) or all omit them "
                "(planning model); send the two kinds in separate requests",
            )
        )
    if not errors and modes and modes[0] == PLANNING and served.classifier(PLANNING) is None:
        # A bundle made before planning models existed: the traits are required.
        for i, row in enumerate(rows):
            where = (*container, i) if many else container
            errors += [
                {"type": "missing", "loc": ("body", *where, t), "input": row}
                for t in REQUIRED_TRAITS
            ]
    if errors:
        raise RequestValidationError(errors)
    return modes[0] if modes else FULL


def classifier(served: Served, model: str) -> FastPredictor:
    found = served.classifier(model)
    if found is None:  # choose_model refuses planning requests such a bundle cannot answer
        raise HTTPException(501, f"the served bundle {served.version} has no {model} classifier")
    return found


def survival(served: Served, model: str) -> SurvivalPredictor:
    found = served.survival.get(model)
    if found is None:
        raise HTTPException(
            501,
            f"the served bundle {served.version} has no {model} survival model "
            "(bundles from before survival models existed); rebuild it with the pipeline",
        )
    return found


def allowed_days(model: SurvivalPredictor) -> str:
    return f"a number of days from 0 to {model.max_days:g} (the study's follow-up)"


def check_days(
    model: SurvivalPredictor, days: Sequence[float], field: tuple[str, ...], many: bool
) -> np.ndarray:
    """The days as a sorted array, or a 422 naming each bad one and the allowed range."""
    allowed = allowed_days(model)
    errors: list[Any] = []
    if many and len(days) > MAX_HORIZONS:
        errors.append(
            _error(
                field,
                "too_many_days",
                f"got {len(days)} days; at most {MAX_HORIZONS}",
                len(days),
                f"a list of 1 to {MAX_HORIZONS} different days",
            )
        )
    if many and not days:
        errors.append(
            _error(
                field,
                "too_few_days",
                "give at least one day",
                0,
                f"a list of 1 to {MAX_HORIZONS} different days",
            )
        )
    if errors:  # too many or none: the days themselves are not looked at
        raise RequestValidationError(errors)
    seen: set[float] = set()
    for i, day in enumerate(days):
        loc: tuple[str | int, ...] = (*field, i) if many else field
        if day < 0 or day > model.max_days:
            problem = "negative" if day < 0 else "beyond the study's follow-up"
            errors.append(
                _error(
                    loc,
                    "day_out_of_range",
                    f"{day:g} is {problem}; must be {allowed}",
                    day,
                    allowed,
                )
            )
        elif many and day in seen:
            errors.append(
                _error(
                    loc,
                    "days_repeated",
                    f"{day:g} is given twice; each day once",
                    day,
                    "different days (in any order; the answer comes sorted by day)",
                )
            )
        seen.add(day)
    if errors:
        raise RequestValidationError(errors)
    # Sorted, so that every curve reads non-increasing from its first point.
    return np.sort(np.asarray(days, dtype=float))


def default_days(served: Served, model: SurvivalPredictor) -> list[float]:
    """The bundle's default grid (up to the end of the study), within the follow-up."""
    listed = (served.bundle.manifest.get("survival") or {}).get("default_days")
    if isinstance(listed, list) and listed:
        days = [float(d) for d in listed if 0 <= float(d) <= model.max_days]
        if days:
            return days
    return [float(d) for d in np.linspace(0, model.max_days, 12)[1:]]


def death_by(
    served: Served, model: str, rows: Sequence[Mapping[str, Any]], day: float
) -> list[float]:
    """P(dead by `day`) = 1 - S(day) from the survival model of `model`."""
    surv = survival(served, model)
    days = check_days(surv, [day], ("horizon_days",), many=False)
    return (1.0 - surv.survival_at(rows, days)[:, 0]).tolist()
