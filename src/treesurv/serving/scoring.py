"""Scoring validated instances on the served classifier, shared by the protocols."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from treesurv.inference.predictor import FastPredictor

# Batches this large are scored in a worker thread (the kernels release the GIL),
# so one big request does not hold up the event loop.
THREADPOOL_MIN_ROWS = 64


async def score(predictor: FastPredictor, rows: list[dict[str, Any]]) -> list[float]:
    """P(death) for validated instances (their field dicts), in order."""
    if len(rows) == 1:
        return [predictor.predict_one(rows[0])]
    if len(rows) < THREADPOOL_MIN_ROWS:
        return predictor.predict_rows(rows).tolist()
    proba = await run_in_threadpool(predictor.predict_rows, rows)
    return proba.tolist()


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
