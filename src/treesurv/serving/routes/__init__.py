"""One router per resource and protocol, included by `create_app` in this order
(which is also the order of the OpenAPI document's paths)."""

from __future__ import annotations

from fastapi import APIRouter

from treesurv.serving.routes import (
    admin,
    kserve_v1,
    mlflow,
    model,
    open_inference,
    operations,
    original,
    predictions,
    report,
    survival,
    upload,
    web,
)

ROUTERS: tuple[APIRouter, ...] = (
    predictions.router,  # POST /v1/predictions
    original.router,  # POST /v1/predic
    model.router,  # GET /v1/model
    operations.router,  # /healthz, /readyz, /metrics
    admin.router,  # POST /v1/admin/reload
    open_inference.router,  # /v2/...
    survival.router,  # /v1/survival, /v1/compare
    kserve_v1.router,  # KServe V1: /v1/models/{name}, /v1/models/{name}:predict
    mlflow.router,  # MLflow scoring: /invocations, /ping, /health, /version
    upload.router,  # POST /ui/score: the web page's spreadsheet upload
    report.router,  # the study report: /explore, /explore.json, /explore-*.png
    web.router,  # the web page at /
)
