"""`POST /v1/survival` (survival curves) and `POST /v1/compare` (what-if).

Both answer with the full models when the instances give the traits and with the
planning models when they omit all of them (see `model_choice`). Like the prediction
endpoints they parse their own body in JSON mode and write orjson answers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from treesurv.core import schema
from treesurv.serving import errors, model_choice
from treesurv.serving.deps import served_model, settings_of
from treesurv.serving.http import INVALID, RequestRoute, body_schema, json_response, parse
from treesurv.serving.schemas import (
    DESIGN_EXAMPLE,
    MAX_VARIANTS,
    CompareRequest,
    CompareResponse,
    PredictionInstance,
    SurvivalRequest,
    SurvivalResponse,
)
from treesurv.serving.scoring import THREADPOOL_MIN_ROWS, check_batch, score
from treesurv.serving.state import Served

router = APIRouter(route_class=RequestRoute)
# Request models whose schemas the OpenAPI document lists (see app.openapi).
BODY_MODELS = (SurvivalRequest, CompareRequest)
DEFAULT_STEPS = 11
NOT_INSTANCE = {
    **INVALID,
    501: {"description": "The served bundle has no survival model (made before they existed)"},
}

SURVIVAL_EXAMPLES = {
    "default days": {
        "summary": "One Quercus rubra seedling, the bundle's default days",
        "value": {"instances": [schema.EXAMPLE]},
    },
    "chosen days": {
        "summary": "P(alive) on days 30, 60 and 90",
        "value": {"instances": [schema.EXAMPLE], "horizons": [30, 60, 90]},
    },
    "planning (no traits)": {
        "summary": "Before planting: the planning survival model answers",
        "value": {"instances": [DESIGN_EXAMPLE], "horizons": [30, 60, 90]},
    },
    "in a plot of the study": {
        "summary": "The same seedling in field plot 5 (its site effect); omit Plot elsewhere",
        "value": {"instances": [{**DESIGN_EXAMPLE, schema.SITE.name: 5}], "horizons": [30, 60, 90]},
    },
}
COMPARE_EXAMPLES = {
    "soil": {
        "summary": "Which soil inoculum gives this seedling the best odds (planning model)?",
        "value": {"instance": DESIGN_EXAMPLE, "vary": "Soil"},
    },
    "light": {
        "summary": "Light_ISF over 6 points of the observed range, risk by day 60",
        "value": {"instance": DESIGN_EXAMPLE, "vary": "Light_ISF", "steps": 6, "horizon_days": 60},
    },
    "light values": {
        "summary": "Chosen light levels, full model (traits given)",
        "value": {"instance": schema.EXAMPLE, "vary": "Light_ISF", "values": [0.05, 0.1, 0.15]},
    },
}


def _number(value: Any) -> float | None:
    return float(value) if not math.isnan(value) else None


@router.post(
    "/v1/survival",
    response_model=SurvivalResponse,
    responses=NOT_INSTANCE,
    tags=["predictions"],
    summary="Probability that each seedling is alive on each day",
    openapi_extra=body_schema(SurvivalRequest, SURVIVAL_EXAMPLES),
)
async def survival(request: Request) -> Response:
    """Survival curves, censoring handled: P(alive on each of `horizons`) and the
    median survival day (null when more than half are alive at the end of the study).
    Answers come in the order of `instances`; `model` says which model answered."""
    body = await parse(request, SurvivalRequest)
    served = served_model(request)
    check_batch(body.instances, settings_of(request).max_batch, ("body", "instances"))
    rows = [i.__dict__ for i in body.instances]
    model = model_choice.choose_model(served, rows, ("instances",))
    predictor = model_choice.survival(served, model)
    if body.horizons is None:
        days = np.asarray(model_choice.default_days(served, predictor))
    else:
        days = model_choice.check_days(predictor, body.horizons, ("horizons",), many=True)

    def curves() -> tuple[np.ndarray, np.ndarray]:
        return predictor.survival_at(rows, days), predictor.median_survival_days(rows)

    surv, median = curves() if len(rows) < THREADPOOL_MIN_ROWS else await run_in_threadpool(curves)
    day_list = days.tolist()
    request.app.state.metrics.count_predictions(f"v1_survival_{model}", len(rows))
    return json_response(
        {
            "model_version": served.version,
            "model": model,
            "predictions": [
                {
                    "survival": [
                        {"day": d, "survival_probability": s}
                        for d, s in zip(day_list, row.tolist(), strict=True)
                    ],
                    "median_survival_days": _number(m),
                }
                for row, m in zip(surv, median, strict=True)
            ],
        }
    )


# ------------------------------------------------------------------ what-if


def _error(loc: tuple[str | int, ...], msg: str, value: Any, allowed: str) -> Any:
    return {
        "type": "value_error",
        "loc": ("body", *loc),
        "msg": msg,
        "input": value,
        "ctx": {"expected": allowed},
    }


def variable_fields(model: str) -> tuple[str, ...]:
    """Fields a what-if may vary: not the implied ones (they follow Species and Soil),
    and only the design fields when the planning model answers."""
    return tuple(
        f
        for f in schema.FEATURE_NAMES
        if f not in schema.IMPLIED and (model == model_choice.FULL or f in schema.DESIGN)
    )


def observed_range(served: Served, feature: schema.Feature) -> tuple[float, float]:
    """The training data's range of a numeric field (from the bundle's reference
    profile), else the schema's: a default grid stays where the model has seen data."""
    lo, hi = float(feature.minimum or 0.0), float(feature.maximum or 0.0)
    try:
        seen = served.bundle.json_file("reference_profile.json")["features"][feature.name]
        return max(lo, float(seen["min"])), min(hi, float(seen["max"]))
    except (KeyError, TypeError, ValueError):
        return lo, hi


def _check_value(feature: schema.Feature, value: Any) -> bool:
    if feature.kind == "categorical":
        return value in feature.categories
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and float(feature.minimum or 0) <= value <= float(feature.maximum or 0)
    )


def variant_values(served: Served, body: CompareRequest, model: str) -> list[Any]:
    """The values to try, or a 422 naming the field and what is allowed."""
    fields = variable_fields(model)
    if body.vary not in fields:
        why = "" if model == model_choice.FULL else " (the planning model answers: no traits given)"
        allowed = "one of " + ", ".join(fields)
        raise RequestValidationError(
            [
                _error(
                    ("vary",),
                    f"{body.vary!r} cannot be varied{why}; must be {allowed}",
                    body.vary,
                    allowed,
                )
            ]
        )
    feature = schema.FEATURES_BY_NAME[body.vary]
    # `steps` is checked whenever given, even where it is not used (a categorical
    # field, or with `values`): a wrong request is refused, never half-read.
    steps = DEFAULT_STEPS if body.steps is None else body.steps
    if not 2 <= steps <= MAX_VARIANTS:
        allowed = f"a whole number from 2 to {MAX_VARIANTS}"
        raise RequestValidationError(
            [_error(("steps",), f"{steps} grid points; must be {allowed}", steps, allowed)]
        )
    if body.values is not None:
        problems = [
            _error(
                ("values", k),
                f"{v!r} is not a possible {feature.name}; must be {feature.allowed()}",
                v,
                feature.allowed(),
            )
            for k, v in enumerate(body.values[: MAX_VARIANTS + 1])
            if not _check_value(feature, v)
        ]
        if not 1 <= len(body.values) <= MAX_VARIANTS:
            allowed = f"a list of 1 to {MAX_VARIANTS} values"
            problems.append(
                _error(
                    ("values",),
                    f"got {len(body.values)} values; must be {allowed}",
                    len(body.values),
                    allowed,
                )
            )
        if problems:
            raise RequestValidationError(problems)
        return list(body.values)
    if feature.kind == "categorical":
        return list(feature.categories)
    lo, hi = observed_range(served, feature)
    return [round(float(v), 6) for v in np.linspace(lo, hi, steps)]


def variant_rows(
    base: dict[str, Any], field: str, values: list[Any]
) -> list[tuple[dict[str, Any] | None, str | None]]:
    """Each variant as a validated instance dict, or the rule it breaks (e.g. a species
    whose mycorrhizal type does not match the EMF given)."""
    out: list[tuple[dict[str, Any] | None, str | None]] = []
    for value in values:
        row = {k: v for k, v in {**base, field: value}.items() if v is not None}
        row.update(schema.implied_values(str(row["Species"]), str(row["Soil"])))
        try:
            out.append((PredictionInstance.model_validate(row).__dict__, None))
        except ValidationError as exc:
            described = errors.describe(exc.errors()[0], strip=0, container_fields=())
            out.append((None, str(described["msg"])))
    return out


@router.post(
    "/v1/compare",
    response_model=CompareResponse,
    responses=NOT_INSTANCE,
    tags=["predictions"],
    summary="What-if: the risk of one seedling under each option of one field",
    openapi_extra=body_schema(CompareRequest, COMPARE_EXAMPLES),
)
async def compare(request: Request) -> Response:
    """Vary one field of `instance` (a categorical one over all its categories, a numeric
    one over `values` or an even grid of the observed range) and get the death
    probability of each variant (by `horizon_days` if given); the lowest is `best`.
    Sterile and Conspecific follow the soil and species of each variant. Without
    traits the planning model answers: a different soil would change them anyway."""
    body = await parse(request, CompareRequest)
    served = served_model(request)
    model = model_choice.choose_model(served, [body.instance.__dict__], ("instance",))
    values = variant_values(served, body, model)
    tried = variant_rows(body.instance.__dict__, body.vary, values)
    rows = [row for row, _ in tried if row is not None]
    if not rows:
        probabilities: list[float] = []
    elif body.horizon_days is None:
        probabilities = await score(model_choice.classifier(served, model), rows)
    else:
        probabilities = model_choice.death_by(served, model, rows, body.horizon_days)
    scored = iter(probabilities)
    items = [
        {
            "value": v,
            "death_probability": next(scored) if row is not None else None,
            "best": False,
            "error": err,
        }
        for v, (row, err) in zip(values, tried, strict=True)
    ]
    valid = [it for it in items if it["death_probability"] is not None]
    best = min(valid, key=lambda it: it["death_probability"]) if valid else None
    if best is not None:
        best["best"] = True
    request.app.state.metrics.count_predictions(f"v1_compare_{model}", len(rows))
    return json_response(
        {
            "model_version": served.version,
            "model": model,
            "vary": body.vary,
            "horizon_days": body.horizon_days,
            "best": best["value"] if best is not None else None,
            "variants": items,
        }
    )
