"""Lifecycle fixtures: small real git + DVC repositories with a temporary local remote
(the helpers that build them are in tests/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Repo, init_repo, make_data_repo


@pytest.fixture
def small_repo(tmp_path: Path) -> Repo:
    return init_repo(tmp_path / "repo", tmp_path / "remote")


@pytest.fixture
def data_repo(tmp_path: Path, real_csv: Path) -> Repo:
    return make_data_repo(tmp_path / "repo", tmp_path / "remote", real_csv)
