"""Turn validation errors into answers that name the field, the value and what is allowed.

Pydantic's errors are precise but speak in types ("Input should be 'a' or 'b'");
clients of this API want "instances[2].Soil: 'Oak' is not allowed; must be one of …".
The allowed values come from `treesurv.core.schema`, like everything else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from treesurv.core import schema
from treesurv.serving.schemas import RULE_ERROR

MAX_VALUE_CHARS = 200
OBJECT_PROBLEMS = {"model_attributes_type", "dict_type", "model_type"}
NUMBER_PROBLEMS = {"float_type", "float_parsing", "int_type", "int_parsing"}
RANGE_PROBLEMS = {"greater_than_equal", "less_than_equal", "finite_number"}
# Fields holding days since planting (their upper bound is the served model's).
DAY_FIELDS = {"horizons", "horizon_days"}
DAY_PROBLEMS = NUMBER_PROBLEMS | RANGE_PROBLEMS | {"list_type"}


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


@dataclass(frozen=True)
class _Problem:
    """One validation error, with what every description needs looked up once."""

    kind: str
    loc: list[str | int]
    inner: list[str | int]  # loc without the leading "body"
    name: str | None  # the innermost field name
    feature: schema.Feature | None
    value: Any
    ctx: Mapping[str, Any]
    field: str
    shown: Any
    msg: str
    instance_fields: Sequence[str]
    container_fields: tuple[str, ...]
    max_batch: int | None


# What a handler gives: the field, the value shown, what is allowed and the message.
Described = tuple[str, Any, str, str]


def _rule(p: _Problem) -> Described:
    columns = str(p.ctx.get("columns", "")).split(",")
    field = f"{field_path(p.inner)}.{'+'.join(columns)}" if p.inner else "+".join(columns)
    shown = str(p.ctx.get("values", ""))
    allowed = str(p.ctx.get("rules", ""))
    return field, shown, allowed, f"{field}: {shown} breaks a rule: {allowed}"


def _missing(p: _Problem) -> Described:
    if p.feature is not None:
        allowed = _allowed_feature(p.feature)
    elif p.name == "instances":
        allowed = f"a list of 1 to {p.max_batch or 'max_batch'} instances"
    else:
        allowed = "a value"
    msg = f"{p.field}: required field is missing; must be {allowed}"
    if p.feature is not None and p.feature.trait:
        msg += f" (or omit all of {', '.join(schema.TRAITS)}: the planning model answers)"
    return p.field, None, allowed, msg


def _unknown_field(p: _Problem) -> Described:
    # An unknown key inside an instance, or beside "instances".
    inner = p.inner
    inside_instance = len(inner) >= 2 and (isinstance(inner[-2], int) or inner[-2] == "instance")
    known = list(p.instance_fields) if inside_instance or not p.container_fields else []
    known = known or list(p.container_fields)
    allowed = "only the fields " + ", ".join(known)
    return p.field, p.shown, allowed, f"{p.field}: unknown field; allowed are {', '.join(known)}"


def _bad_feature_value(p: _Problem) -> Described:
    assert p.feature is not None
    allowed = _allowed_feature(p.feature)
    if p.kind == "literal_error":
        problem = f"{p.shown!r} is not an allowed value"
    elif p.kind in NUMBER_PROBLEMS:
        problem = f"{p.shown!r} is not a {'whole ' if p.feature.whole else ''}number"
    else:
        problem = f"{p.shown!r} is out of range"
    return p.field, p.shown, allowed, f"{p.field}: {problem}; must be {allowed}"


def _bad_days(p: _Problem) -> Described:
    allowed = "a number of days from 0 to the study's follow-up (see GET /v1/model)"
    if p.name == "horizons":
        allowed = "a list of such numbers, each once: " + allowed
    return p.field, p.shown, allowed, f"{p.field}: {p.shown!r} is not allowed; must be {allowed}"


def _batch_size(p: _Problem) -> Described:
    upper = p.max_batch if p.max_batch is not None else p.ctx.get("max_length", "the maximum")
    allowed = f"a list of 1 to {upper} instances"
    count = len(p.value) if isinstance(p.value, list) else None
    got = f"{count} instance(s)" if count is not None else repr(p.shown)
    shown = count if count is not None else p.shown
    return p.field, shown, allowed, f"{p.field}: got {got}; must be {allowed}"


def _malformed(p: _Problem) -> Described:
    reason = p.ctx.get("error", "cannot be parsed")
    return "body", None, "a valid JSON document", f"malformed JSON: {reason}"


def _not_object(p: _Problem) -> Described:
    allowed = (
        "a JSON object with the fields " + ", ".join(p.instance_fields)
        if not p.container_fields or (p.inner and isinstance(p.inner[-1], int))
        else "a JSON object with the field " + ", ".join(p.container_fields)
    )
    return p.field, p.shown, allowed, f"{p.field}: must be {allowed}"


def _not_text(p: _Problem) -> Described:
    assert p.feature is not None
    allowed = _allowed_feature(p.feature)
    return p.field, p.shown, allowed, f"{p.field}: {p.shown!r} is not text; must be {allowed}"


def _other(p: _Problem) -> Described:
    allowed = str(p.ctx.get("expected", "a valid value"))
    return p.field, p.shown, allowed, f"{p.field}: {p.msg}"


# The first handler whose test matches describes the error.
HANDLERS: tuple[tuple[Callable[[_Problem], bool], Callable[[_Problem], Described]], ...] = (
    (lambda p: p.kind == RULE_ERROR, _rule),
    (lambda p: p.kind == "missing", _missing),
    (lambda p: p.kind == "extra_forbidden", _unknown_field),
    (
        lambda p: (
            p.feature is not None
            and (p.kind == "literal_error" or p.kind in NUMBER_PROBLEMS | RANGE_PROBLEMS)
        ),
        _bad_feature_value,
    ),
    (
        lambda p: (
            p.name in DAY_FIELDS and p.kind in NUMBER_PROBLEMS | RANGE_PROBLEMS | {"list_type"}
        ),
        _bad_days,
    ),
    (
        lambda p: (
            p.kind in {"too_short", "too_long"} or (p.kind == "list_type" and p.name == "instances")
        ),
        _batch_size,
    ),
    (lambda p: p.kind == "json_invalid", _malformed),
    (lambda p: p.kind in OBJECT_PROBLEMS, _not_object),
    (lambda p: p.kind == "string_type" and p.feature is not None, _not_text),
    (lambda p: True, _other),
)


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
    loc = [p for p in error.get("loc", ()) if isinstance(p, str | int)]
    inner = loc[strip:]
    name = next((p for p in reversed(inner) if isinstance(p, str)), None)
    problem = _Problem(
        kind=str(error.get("type", "value_error")),
        loc=loc,
        inner=inner,
        name=name,
        feature=schema.INPUTS_BY_NAME.get(name) if name else None,
        value=error.get("input"),
        ctx=error.get("ctx") or {},
        field=field_path(inner),
        shown=_json_safe(error.get("input")),
        msg=str(error.get("msg", "invalid value")),
        instance_fields=instance_fields,
        container_fields=tuple(container_fields),
        max_batch=max_batch,
    )
    handler = next(handle for matches, handle in HANDLERS if matches(problem))
    field, shown, allowed, msg = handler(problem)
    return {
        "field": field,
        "value": shown,
        "allowed": allowed,
        "msg": msg,
        "type": problem.kind,
        "loc": loc,
    }


def describe_all(errors: Iterable[Mapping[str, Any]], **options: Any) -> list[dict[str, Any]]:
    return [describe(e, **options) for e in errors]
