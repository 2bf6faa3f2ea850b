"""Turn validation errors into answers that name the field, the value and what is allowed.

Pydantic's errors are precise but speak in types ("Input should be 'a' or 'b'");
clients of this API want "instances[2].Soil: 'Oak' is not allowed; must be one of …".
The allowed values come from `treesurv.core.schema`, like everything else.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from treesurv.core import schema
from treesurv.serving.schemas import RULE_ERROR

MAX_VALUE_CHARS = 200
OBJECT_PROBLEMS = {"model_attributes_type", "dict_type", "model_type"}
NUMBER_PROBLEMS = {"float_type", "float_parsing", "int_type", "int_parsing"}
RANGE_PROBLEMS = {"greater_than_equal", "less_than_equal", "finite_number"}
# Fields holding days since planting (their upper bound is the served model's).
DAY_FIELDS = {"horizons", "horizon_days"}


def field_path(loc: Sequence[str | int]) -> str:
    """('body', 'instances', 0, 'Soil') -> 'instances[0].Soil'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _json_safe(value: Any) -> Any:
    """Echo the value back, but never something JSON cannot hold or a huge blob."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"


def _allowed_feature(feature: schema.Feature) -> str:
    text = feature.allowed()
    if feature.nullable:
        text += f" (or null/omitted {feature.null_means})"
    return text


def describe(
    error: Mapping[str, Any],
    *,
    instance_fields: Sequence[str] = schema.INPUT_NAMES,
    container_fields: Iterable[str] = ("instances",),
    max_batch: int | None = None,
    strip: int = 1,
) -> dict[str, Any]:
    """One pydantic/FastAPI error as {field, value, allowed, msg, type, loc}.

    `strip` drops the leading location parts that say where the body came from
    ("body"); `container_fields` are the fields of the top-level object when the
    body is not a single instance.
    """
    kind = str(error.get("type", "value_error"))
    loc = [p for p in error.get("loc", ()) if isinstance(p, str | int)]
    inner = loc[strip:]
    name = next((p for p in reversed(inner) if isinstance(p, str)), None)
    feature = schema.INPUTS_BY_NAME.get(name) if name else None
    value = error.get("input")
    ctx = error.get("ctx") or {}
    field = field_path(inner)
    shown: Any = _json_safe(value)

    if kind == RULE_ERROR:
        columns = str(ctx.get("columns", "")).split(",")
        field = f"{field_path(inner)}.{'+'.join(columns)}" if inner else "+".join(columns)
        shown = str(ctx.get("values", ""))
        allowed = str(ctx.get("rules", ""))
        msg = f"{field}: {shown} breaks a rule: {allowed}"
    elif kind == "missing":
        shown = None
        if feature is not None:
            allowed = _allowed_feature(feature)
        elif name == "instances":
            allowed = f"a list of 1 to {max_batch or 'max_batch'} instances"
        else:
            allowed = "a value"
        msg = f"{field}: required field is missing; must be {allowed}"
        if feature is not None and feature.trait:
            msg += f" (or omit all of {', '.join(schema.TRAITS)}: the planning model answers)"
    elif kind == "extra_forbidden":
        # An unknown key inside an instance, or beside "instances".
        inside_instance = len(inner) >= 2 and (
            isinstance(inner[-2], int) or inner[-2] == "instance"
        )
        known = list(instance_fields) if inside_instance or not container_fields else []
        known = known or list(container_fields)
        allowed = "only the fields " + ", ".join(known)
        msg = f"{field}: unknown field; allowed are {', '.join(known)}"
    elif feature is not None and (
        kind == "literal_error" or kind in NUMBER_PROBLEMS or kind in RANGE_PROBLEMS
    ):
        allowed = _allowed_feature(feature)
        if kind == "literal_error":
            problem = f"{shown!r} is not an allowed value"
        elif kind in NUMBER_PROBLEMS:
            problem = f"{shown!r} is not a {'whole ' if feature.whole else ''}number"
        else:
            problem = f"{shown!r} is out of range"
        msg = f"{field}: {problem}; must be {allowed}"
    elif name in DAY_FIELDS and kind in NUMBER_PROBLEMS | RANGE_PROBLEMS | {"list_type"}:
        allowed = "a number of days from 0 to the study's follow-up (see GET /v1/model)"
        if name == "horizons":
            allowed = "a list of such numbers, each once: " + allowed
        msg = f"{field}: {shown!r} is not allowed; must be {allowed}"
    elif kind in {"too_short", "too_long"} or (kind == "list_type" and name == "instances"):
        upper = max_batch if max_batch is not None else ctx.get("max_length", "the maximum")
        allowed = f"a list of 1 to {upper} instances"
        count = len(value) if isinstance(value, list) else None
        got = f"{count} instance(s)" if count is not None else repr(shown)
        shown = count if count is not None else shown
        msg = f"{field}: got {got}; must be {allowed}"
    elif kind == "json_invalid":
        field = "body"
        allowed = "a valid JSON document"
        reason = ctx.get("error", "cannot be parsed")
        msg = f"malformed JSON: {reason}"
        shown = None
    elif kind in OBJECT_PROBLEMS:
        allowed = (
            "a JSON object with the fields " + ", ".join(instance_fields)
            if not container_fields or (inner and isinstance(inner[-1], int))
            else "a JSON object with the field " + ", ".join(container_fields)
        )
        msg = f"{field}: must be {allowed}"
    elif kind == "string_type" and feature is not None:
        allowed = _allowed_feature(feature)
        msg = f"{field}: {shown!r} is not text; must be {allowed}"
    else:
        allowed = str(ctx.get("expected", "a valid value"))
        msg = f"{field}: {error.get('msg', 'invalid value')}"
    return {
        "field": field,
        "value": shown,
        "allowed": allowed,
        "msg": msg,
        "type": kind,
        "loc": loc,
    }


def describe_all(errors: Iterable[Mapping[str, Any]], **options: Any) -> list[dict[str, Any]]:
    return [describe(e, **options) for e in errors]
