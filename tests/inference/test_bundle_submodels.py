"""A bundle with four sub-models: each verified, parsed and reachable by variant."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import build_bundle, build_four_model_bundle, flip_middle_byte
from treesurv.core import schema
from treesurv.inference import bundle as bundle_mod
from treesurv.inference.bundle import (
    MANIFEST,
    BundleError,
    load_verified,
    read_bundle,
    require_complete,
)
from treesurv.inference.predictor import SurvivalPredictor

SUBMODEL_FILES = (
    "predictor.json",
    "predictor.npz",
    "planning.json",
    "planning.npz",
    "survival.json",
    "survival.npz",
    "planning_survival.json",
    "planning_survival.npz",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, model_study: pd.DataFrame) -> Path:
    path = tmp_path_factory.mktemp("four") / "tree-survival"
    build_four_model_bundle(path, model_study, "1.4.0", trees=5)
    return path


@pytest.fixture
def four(built: Path, tmp_path: Path) -> Path:
    """A private copy of the bundle (tests tamper with it): built once per module."""
    return Path(shutil.copytree(built, tmp_path / "tree-survival"))


def test_four_models_by_variant(four: Path, model_study: pd.DataFrame) -> None:
    bundle, compiled = load_verified(four)
    require_complete(bundle)
    assert set(bundle.manifest["files"]) >= set(SUBMODEL_FILES)
    assert bundle.variants == ("full", "planning")
    assert compiled.features == schema.FEATURE_NAMES
    assert bundle.classifier("full").spec == compiled.spec
    assert bundle.classifier("planning").features == schema.DESIGN
    assert bundle.survival("full").features == schema.FEATURE_NAMES
    planning = bundle.survival("planning")
    assert planning.features == schema.DESIGN
    # The planning models need no trait: design columns alone are enough.
    design_only = model_study[list(schema.DESIGN)].head(20)
    p = bundle.classifier("planning").proba_columns(design_only)
    assert np.all((p >= 0) & (p <= 1))
    surv = SurvivalPredictor(planning).survival_at(design_only, [30, 60, 115.5])
    assert np.all(np.diff(surv, axis=1) <= 0)


@pytest.mark.parametrize("name", SUBMODEL_FILES[2:])
def test_a_changed_byte_in_any_submodel_is_refused(four: Path, name: str) -> None:
    flip_middle_byte(four / name)
    with pytest.raises(BundleError, match=f"{name} does not match its sha256"):
        load_verified(four)


@pytest.mark.parametrize("name", ["survival.npz", "planning.json"])
def test_a_missing_submodel_file_is_refused(four: Path, name: str) -> None:
    (four / name).unlink()
    with pytest.raises(BundleError, match=f"{name} is missing"):
        read_bundle(four)


def test_invalid_submodel_refuses_the_whole_bundle(
    tmp_path: Path, four: Path, model_study: pd.DataFrame
) -> None:
    # Hashes that match but content that is no survival model (a classifier's files):
    # load_verified parses every sub-model, so this bundle is refused as a whole.
    bundle = read_bundle(four)
    files = dict(bundle.files)
    files["survival.json"], files["survival.npz"] = files["planning.json"], files["planning.npz"]
    extra = {k: v for k, v in bundle.manifest.items() if k not in bundle_mod.MANIFEST_KEYS}
    bundle_mod.write_bundle(
        tmp_path / "bad", files, name=bundle.name, version=bundle.version, extra=extra
    )
    with pytest.raises(BundleError, match="full survival model is invalid"):
        load_verified(tmp_path / "bad")


def test_manifest_naming_an_unlisted_file_is_refused(four: Path) -> None:
    manifest = json.loads((four / MANIFEST).read_text())
    manifest["submodels"]["planning"]["survival"]["arrays"] = "elsewhere.npz"
    manifest["digest"] = bundle_mod._digest(manifest)
    (four / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"'elsewhere\.npz' is not among the bundle's files"):
        read_bundle(four)


def test_write_refuses_submodels_without_their_files(tmp_path: Path, four: Path) -> None:
    bundle = read_bundle(four)
    files = {k: v for k, v in bundle.files.items() if not k.startswith("planning_survival")}
    extra = {k: v for k, v in bundle.manifest.items() if k not in bundle_mod.MANIFEST_KEYS}
    with pytest.raises(BundleError, match="planning survival model's spec file"):
        bundle_mod.write_bundle(tmp_path / "b", files, name="x", version="1.0.0", extra=extra)
    assert not (tmp_path / "b").exists()


def test_classifier_only_bundle_still_loads(tmp_path: Path, model_study: pd.DataFrame) -> None:
    # Bundles made before sub-models existed: the predictor is the full classifier.
    build_bundle(tmp_path / "old", model_study, "0.9.0", trees=3)
    bundle, compiled = load_verified(tmp_path / "old")
    assert bundle.variants == ("full",)
    assert bundle.classifier().spec == compiled.spec
    assert not bundle.has("full", "survival")
    with pytest.raises(BundleError, match="has no full survival model"):
        bundle.survival("full")
    with pytest.raises(BundleError, match="lacks the full survival, planning classifier"):
        require_complete(bundle)
    with pytest.raises(BundleError, match="no sub-model 'later'"):
        bundle.classifier("later")


def test_serving_path_needs_neither_sklearn_nor_sksurv(four: Path) -> None:
    # What the service does, in a fresh interpreter: load, verify, score curves.
    example = dict(schema.EXAMPLE)
    code = f"""
import sys
from treesurv.inference.bundle import load_verified
from treesurv.inference.predictor import SurvivalPredictor
bundle, _ = load_verified({str(four)!r})
row = {example!r}
for variant in bundle.variants:
    s = SurvivalPredictor(bundle.survival(variant)).survival_at([row], [30, 115.5])
    assert s.shape == (1, 2) and s[0, 0] >= s[0, 1]
    assert 0 <= bundle.classifier(variant).proba_columns({{k: [v] for k, v in row.items()}})[0] <= 1
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & {{"sklearn", "sksurv"}})
print(loaded)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    assert out.strip() == "[]"
