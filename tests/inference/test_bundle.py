"""A bundle is complete and verified, or refused with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import build_bundle, flip_middle_byte
from treesurv.inference.bundle import MANIFEST, BundleError, load_verified, read_bundle


@pytest.fixture
def bundle_path(tmp_path: Path, study: pd.DataFrame) -> Path:
    path = tmp_path / "tree-survival"
    build_bundle(path, study, "1.2.3", trees=5)
    return path


def test_round_trip(bundle_path: Path) -> None:
    bundle, compiled = load_verified(bundle_path)
    assert bundle.version == "1.2.3" and bundle.name == "tree-survival"
    assert bundle.threshold == 0.5
    assert set(bundle.manifest["files"]) == {
        "predictor.json",
        "predictor.npz",
        "model_card.md",
        "reference_profile.json",
    }
    assert compiled.features[0] == "Species"


@pytest.mark.parametrize(
    "name", ["predictor.npz", "predictor.json", "model_card.md", "reference_profile.json"]
)
def test_one_changed_byte_is_refused(bundle_path: Path, name: str) -> None:
    flip_middle_byte(bundle_path / name)
    with pytest.raises(BundleError, match=f"{name} does not match its sha256"):
        read_bundle(bundle_path)


def test_edited_manifest_is_refused(bundle_path: Path) -> None:
    manifest = json.loads((bundle_path / MANIFEST).read_text())
    manifest["decision_threshold"] = 0.1
    (bundle_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="was modified"):
        read_bundle(bundle_path)


def test_extra_file_is_refused(bundle_path: Path) -> None:
    (bundle_path / "model.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(BundleError, match=r"unexpected file.*model\.pkl"):
        read_bundle(bundle_path)


def test_missing_file_is_refused(bundle_path: Path) -> None:
    (bundle_path / "predictor.npz").unlink()
    with pytest.raises(BundleError, match=r"predictor\.npz is missing"):
        read_bundle(bundle_path)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a directory"):
        read_bundle(tmp_path / "nowhere")
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        read_bundle(tmp_path)
    (tmp_path / MANIFEST).write_text("{oops")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_bundle(tmp_path)


def test_rewrite_replaces_atomically(bundle_path: Path, study: pd.DataFrame) -> None:
    build_bundle(bundle_path, study, "2.0.0", trees=3)
    assert read_bundle(bundle_path).version == "2.0.0"
    leftovers = [p.name for p in bundle_path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_version_must_be_semver(tmp_path: Path, study: pd.DataFrame) -> None:
    with pytest.raises(BundleError, match="not semantic"):
        build_bundle(tmp_path / "b", study, "latest", trees=2)
    assert not (tmp_path / "b").exists()


def test_swap_during_a_read_gives_a_whole_bundle(
    tmp_path: Path, study: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    from treesurv.inference import bundle as bundle_mod

    path = tmp_path / "tree-survival"
    build_bundle(path, study, "1.0.0", trees=3)
    staging = tmp_path / "next"
    build_bundle(staging, study, "2.0.0", trees=4, seed=1)
    real_read = bundle_mod._read_at
    swapped: list[bool] = []

    def read_then_swap(dir_fd: int, name: str, limit: int) -> bytes:
        data = real_read(dir_fd, name, limit)
        if name == MANIFEST and not swapped:
            bundle_mod.swap_into_place(staging, path)  # the new bundle lands mid-read
            swapped.append(True)
        return data

    monkeypatch.setattr(bundle_mod, "_read_at", read_then_swap)
    # The old directory is emptied by the swap: the read starts again on the new one
    # instead of failing or mixing the two.
    first = read_bundle(path)
    assert swapped and first.version == "2.0.0"
    assert set(first.files) == set(first.manifest["files"])
