"""Instances in the shapes other servers' clients send them, scored like /v1/predictions.

KServe V1 and MLflow's scoring server take a table in several layouts: records
(one object per row), columns (one list per field), rows by position (the ten
features in schema order), pandas' "split" orientation, or CSV text. Each is
turned into the same instance dicts and validated by the same models as
`POST /v1/predictions`; an error's location says where the value sat in the
client's own layout (`dataframe_split.data[3].Soil`, `csv[3].EMF`), so the 422
names the field, the value and what is allowed, as everywhere else.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from treesurv.core import schema
from treesurv.serving import model_choice
from treesurv.serving.deps import served_model, settings_of
from treesurv.serving.schemas import PredictionRequest
from treesurv.serving.scoring import account, check_batch, prediction_items, score

Loc = tuple[str | int, ...]
# Where row `i` sits in the client's body (the error locations).
Locator = Callable[[int], Loc]


def invalid(loc: Loc, msg: str, value: Any, allowed: str, kind: str = "value_error") -> Any:
    """A 422 for a body that is not one of the accepted layouts."""
    return RequestValidationError(
        [
            {
                "type": kind,
                "loc": ("body", *loc),
                "msg": msg,
                "input": value,
                "ctx": {"expected": allowed},
            }
        ]
    )


def rows_from_table(value: Any, loc: Loc) -> tuple[list[Any], Locator]:
    """Records, columns ({field: [values]}) or rows by position, as row dicts."""
    if isinstance(value, Mapping):
        columns = {str(k): v for k, v in value.items()}
        bad = next((k for k, v in columns.items() if not isinstance(v, list)), None)
        if bad is not None:
            raise invalid((*loc, bad), "a column must be a list of values", columns[bad], "a list")
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise invalid(loc, "the columns differ in length", sorted(lengths), "equal lengths")
        n = lengths.pop() if lengths else 0
        rows = [{k: v[i] for k, v in columns.items()} for i in range(n)]
        return rows, lambda i: (*loc, i)
    if not isinstance(value, list) or not value:
        raise invalid(loc, "must be a non-empty list of rows", value, "a list of 1 or more rows")
    return [_positional(row, (*loc, i)) for i, row in enumerate(value)], lambda i: (*loc, i)


def _positional(row: Any, loc: Loc) -> Any:
    """A row given as a list: the ten features in the schema's order."""
    if not isinstance(row, list):
        return row  # a record (validated as such) or a wrong type (named by validation)
    if len(row) != len(schema.FEATURE_NAMES):
        raise invalid(
            loc,
            f"a row given as a list holds the {len(schema.FEATURE_NAMES)} features in order",
            len(row),
            "the values of " + ", ".join(schema.FEATURE_NAMES),
        )
    return dict(zip(schema.FEATURE_NAMES, row, strict=True))


def rows_from_split(value: Any, loc: Loc) -> tuple[list[Any], Locator]:
    """pandas' `to_json(orient="split")`: {"columns": [...], "data": [[...]], "index": [...]}."""
    if not isinstance(value, Mapping) or not isinstance(value.get("columns"), list):
        raise invalid(loc, "must hold `columns` and `data`", value, 'pandas\' orient="split"')
    columns, data = value["columns"], value.get("data")
    if not isinstance(data, list) or not data:
        raise invalid((*loc, "data"), "must be a non-empty list of rows", data, "a list of rows")
    rows = []
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise invalid(
                (*loc, "data", i),
                f"a row must hold one value per column ({len(columns)})",
                row,
                f"a list of {len(columns)} values",
            )
        rows.append({str(c): v for c, v in zip(columns, row, strict=True)})
    return rows, lambda i: (*loc, "data", i)


def rows_from_csv(text: str) -> tuple[list[Any], Locator]:
    """CSV with a header row; empty cells are missing, numeric cells are numbers."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    numeric = set(schema.NUMERIC) | {schema.SITE.name}
    rows: list[dict[str, Any]] = []
    try:
        for record in reader:
            row: dict[str, Any] = {}
            for key, cell in record.items():
                if key is None:  # more cells than header fields
                    raise invalid(("csv", len(rows)), "more cells than columns", cell, "one each")
                row[key] = _cell(cell, key in numeric)
            rows.append(row)
    except csv.Error as exc:
        raise invalid(("csv", len(rows)), f"not CSV: {exc}", None, "CSV text") from None
    if not rows:
        raise invalid(
            ("csv",), "no rows after the header", text[:200], "a header and 1 or more rows"
        )
    return rows, lambda i: ("csv", i)


def _cell(cell: str | None, numeric: bool) -> Any:
    if cell is None or cell.strip() in ("", "NA", "NaN", "nan", "null"):
        return None
    if not numeric:
        return cell
    try:
        return float(cell)
    except ValueError:
        return cell  # validation names it: not a number


def _missing_is_none(rows: list[Any]) -> list[Any]:
    # pandas writes a missing number as NaN (CSV, Python lists): null, as in JSON.
    return [
        {k: None if isinstance(v, float) and v != v else v for k, v in r.items()}
        if isinstance(r, dict)
        else r
        for r in rows
    ]


async def score_rows(
    request: Request, rows: list[Any], locate: Locator, endpoint: str
) -> list[dict[str, Any]]:
    """Validate the rows as /v1/predictions instances and score them with the model
    they call for (full, or planning when the traits are omitted)."""
    served = served_model(request)
    rows = _missing_is_none(rows)
    check_batch(rows, settings_of(request).max_batch, ("body", *locate(0)[:-1]))
    try:
        body = PredictionRequest.model_validate({"instances": rows})
    except ValidationError as exc:
        raise RequestValidationError(
            [_relocated(e, locate) for e in exc.errors(include_url=False)]
        ) from None
    instances = [i.__dict__ for i in body.instances]
    try:
        model = model_choice.choose_model(served, instances, ("instances",))
    except RequestValidationError as exc:
        raise RequestValidationError(
            [_relocated({**e, "loc": e["loc"][1:]}, locate) for e in exc.errors()]
        ) from None
    probabilities = await score(model_choice.classifier(served, model), instances)
    account(
        request,
        served.version,
        endpoint,
        model,
        probabilities,
        lambda: orjson.dumps({"instances": instances}),
    )
    return prediction_items(probabilities, served.bundle.threshold)


def _relocated(error: Mapping[str, Any], locate: Locator) -> dict[str, Any]:
    """("instances", i, field...) -> ("body", <where row i sits>, field...)."""
    loc = list(error.get("loc", ()))
    if len(loc) >= 2 and loc[0] == "instances" and isinstance(loc[1], int):
        return {**error, "loc": ("body", *locate(loc[1]), *loc[2:])}
    return {**error, "loc": ("body", *locate(0)[:-1], *loc[1:])}


def parse_json(body: bytes) -> Any:
    """The body as JSON. Python's `json` (what `requests` sends) writes a missing value
    of a pandas frame as the token NaN, which strict JSON parsers refuse; it is read
    here too, as a missing value."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise invalid(
                (), f"malformed JSON: {exc}", None, "a valid JSON document", "json_invalid"
            ) from None


def one_layout(payload: Any, layouts: Sequence[str], allowed: str) -> tuple[str, Any]:
    """The single layout key a JSON body uses, or a 422 saying which are accepted."""
    if not isinstance(payload, Mapping):
        raise invalid((), "must be a JSON object", payload, allowed, "model_attributes_type")
    keys = [k for k in payload if k in layouts]
    unknown = [k for k in payload if k not in layouts]
    if unknown:
        raise invalid(
            (unknown[0],),
            f"unknown field; allowed are {', '.join(layouts)}",
            payload[unknown[0]],
            allowed,
            "extra_forbidden",
        )
    if len(keys) != 1:
        raise invalid((), f"give exactly one of {', '.join(layouts)}", sorted(payload), allowed)
    return keys[0], payload[keys[0]]
