"""`GET /v1/model`: the served model's version, metrics, schema and card."""

from __future__ import annotations

from fastapi import APIRouter, Request

from treesurv.core import schema
from treesurv.serving.deps import served_model
from treesurv.serving.http import NOT_READY
from treesurv.serving.schemas import ModelInfo

router = APIRouter()


@router.get("/v1/model", response_model=ModelInfo, tags=["model"], responses=NOT_READY)
def model_info(request: Request) -> ModelInfo:
    """The served model: version, metrics, feature schema (with the allowed
    categories and ranges) and the model card."""
    served = served_model(request)
    manifest = served.bundle.manifest
    return ModelInfo(
        name=served.name,
        version=served.version,
        created=manifest.get("created"),
        decision_threshold=served.bundle.threshold,
        metrics=manifest.get("metrics") or {},
        feature_schema=schema.schema_document(),
        card=served.bundle.card,
        manifest=manifest,
    )
