"""The typed parameters: the shipped params.yaml and the code agree."""

from __future__ import annotations

from tests.helpers import ROOT
from treesurv.core.config import DEFAULT_PATHS, Paths, load_params


def test_paths_in_params_match_code_defaults() -> None:
    params = load_params(ROOT / "params.yaml")
    assert Paths.from_params(params) == DEFAULT_PATHS
