"""Scoring validated instances on the served classifier, shared by the protocols."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from treesurv.core.instances import batch_columns
from treesurv.inference.predictor import FastPredictor
from treesurv.monitoring.service import remember
from treesurv.serving import model_choice

# Batches this large are scored in a worker thread (the kernels release the GIL),
# so one big request does not hold up the event loop.
THREADPOOL_MIN_ROWS = 64
THREADPOOL_MIN_BYTES = THREADPOOL_MIN_ROWS * 200  # about 200 bytes an instance


async def score(predictor: FastPredictor, rows: list[dict[str, Any]]) -> list[float]:
    """P(death) for validated instances (their field dicts), in order."""
    if len(rows) == 1:
        return [predictor.predict_one(rows[0])]
    if len(rows) < THREADPOOL_MIN_ROWS:
        return predictor.predict_rows(rows).tolist()
    proba = await run_in_threadpool(predictor.predict_rows, rows)
    return proba.tolist()


async def score_batch(predictor: FastPredictor, body: bytes, max_batch: int) -> np.ndarray | None:
    """P(death) for a `{"instances": [...]}` body that `full_model_batch` takes as
    columns, else None. A large body is parsed, checked and scored in a worker
    thread: the event loop goes on reading requests and answering probes meanwhile."""
    if len(body) < THREADPOOL_MIN_BYTES:
        return _parse_and_score(predictor, body, max_batch)
    return await run_in_threadpool(_parse_and_score, predictor, body, max_batch)


def _parse_and_score(predictor: FastPredictor, body: bytes, max_batch: int) -> np.ndarray | None:
    columns = full_model_batch(body, max_batch)
    return None if columns is None else predictor.compiled.proba_columns(columns)


def full_model_batch(body: bytes, max_batch: int) -> dict[str, Any] | None:
    """The instances of a `{"instances": [...]}` body as columns, when there are 2 to
    `max_batch` of them and all are valid full-model instances; else None, and the
    request model validates the body (one instance takes that path too: it is scored
    by the single-row kernel). See `treesurv.core.instances.batch_columns`."""
    if body.count(b"{") < 3:  # the body and at least two instances: else not parsed twice
        return None
    return batch_columns(body, max_batch)


def check_batch(instances: list[Any], max_batch: int, loc: tuple[str | int, ...]) -> None:
    if len(instances) > max_batch:
        raise RequestValidationError(
            [
                {
                    "type": "too_long",
                    "loc": loc,
                    "msg": f"at most {max_batch} instances",
                    "input": instances,
                    "ctx": {"max_length": max_batch},
                }
            ]
        )


def prediction_items(probabilities: list[float], threshold: float) -> list[dict[str, Any]]:
    return [
        {
            "death_probability": p,
            "survival_probability": 1.0 - p,
            "predicted_event": 1 if p >= threshold else 0,
        }
        for p in probabilities
    ]


def account(
    request: Request,
    version: str,
    endpoint: str,
    model: str,
    probabilities: Sequence[float],
    logged: Callable[[], bytes | Sequence[Any]],
    horizon: bool = False,
) -> None:
    """Counts a route's answers in the metrics. The full classifier's probabilities
    go to the histogram and, with `logged()` (the request as the log keeps it), to the
    prediction log: they are comparable with the drift check's reference profile.
    Other models' answers (planning, by a horizon) are only counted."""
    metrics = request.app.state.metrics
    if model == model_choice.FULL and not horizon:
        metrics.observe_predictions(endpoint, probabilities)
        remember(request.scope, version, logged(), probabilities)
    else:
        metrics.count_predictions(
            f"{endpoint}_{model}{'_horizon' if horizon else ''}", len(probabilities)
        )
