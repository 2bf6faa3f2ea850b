"""Serving fixtures: small real bundles (a few trees on the in-memory study) and clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.helpers import API_KEY, build_bundle, build_four_model_bundle
from treesurv.serving.app import create_app
from treesurv.serving.settings import Settings


@pytest.fixture(scope="session")
def bundle_v1(tmp_path_factory: pytest.TempPathFactory, study: pd.DataFrame) -> Path:
    path = tmp_path_factory.mktemp("bundles") / "v1"
    build_bundle(path, study, "1.0.0", trees=8, seed=1)
    return path


@pytest.fixture(scope="session")
def bundle_v2(tmp_path_factory: pytest.TempPathFactory, study: pd.DataFrame) -> Path:
    path = tmp_path_factory.mktemp("bundles") / "v2"
    build_bundle(path, study, "2.0.0", trees=5, seed=7, threshold=0.4)
    return path


@pytest.fixture(scope="session")
def bundle_four(tmp_path_factory: pytest.TempPathFactory, study: pd.DataFrame) -> Path:
    """A small bundle with all four sub-models (full/planning x classifier/survival)."""
    path = tmp_path_factory.mktemp("bundles") / "four"
    build_four_model_bundle(path, study, "3.0.0", trees=8)
    return path


@pytest.fixture
def make_client() -> Iterator[Callable[..., Any]]:
    """Start an app (lifespan included) on a model dir; closed at the end of the test."""
    opened: list[Any] = []

    @contextmanager
    def _open(model_dir: Path, **settings: Any) -> Iterator[TestClient]:
        options = {"api_key": API_KEY, "watch_interval": 0, **settings}
        app = create_app(Settings(model_dir=model_dir, **options))
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client

    def factory(model_dir: Path, **settings: Any) -> TestClient:
        cm = _open(model_dir, **settings)
        opened.append(cm)
        return cm.__enter__()

    yield factory
    for cm in reversed(opened):
        cm.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., Any], bundle_v1: Path) -> TestClient:
    return make_client(bundle_v1)
