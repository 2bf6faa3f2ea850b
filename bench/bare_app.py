"""The yardstick: a bare FastAPI app with the service's request model and nothing else.

Same request model (`PredictionRequest`, with its schema-derived validation), same
uvicorn settings; no model, no metrics, no middleware. `bench/load.py` compares the
real service against it.
"""

from __future__ import annotations

from fastapi import FastAPI

from treesurv.serving.schemas import PredictionRequest


def create_app() -> FastAPI:
    app = FastAPI(title="bare")

    @app.post("/v1/predictions")
    async def predictions(body: PredictionRequest) -> dict[str, int]:
        return {"instances": len(body.instances)}

    return app
