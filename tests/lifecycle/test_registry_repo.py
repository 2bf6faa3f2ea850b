"""The registry on a real git + DVC repository: list, promote, rollback, checkout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import Repo, add_version, build_bundle, copy_of, manifest, versioned_repo
from treesurv.inference.bundle import load_verified

pytestmark = pytest.mark.slow

PROD = Path("models/production")


VERSIONS = ("1.0.0", "1.1.0", "1.2.0")


@pytest.fixture(scope="module")
def template(
    tmp_path_factory: pytest.TempPathFactory, real_study: pd.DataFrame
) -> tuple[Path, dict[str, str]]:
    base = tmp_path_factory.mktemp("three-versions")
    return base, versioned_repo(base, real_study, VERSIONS)


@pytest.fixture
def three_versions(
    template: tuple[Path, dict[str, str]], tmp_path: Path
) -> tuple[Repo, dict[str, str]]:
    """Three registered versions (none in production) and their bundles' digests: a
    copy of one repository and remote built once for the module."""
    base, digests = template
    return copy_of(base, tmp_path / "copy"), digests


def listed(repo: Repo) -> dict[str, dict[str, object]]:
    rows = json.loads(repo.treesurv("registry", "list", "--json").stdout)
    return {r["version"]: r for r in rows}


def test_promote_and_list(three_versions: tuple[Repo, dict[str, str]]) -> None:
    repo, digests = three_versions
    assert all(r["stage"] == "" for r in listed(repo).values())
    repo.promote("1.0.0")
    repo.treesurv("registry", "promote", "1.2.0")
    rows = listed(repo)
    assert [v for v, r in rows.items() if r["stage"] == "prod"] == ["1.2.0"]
    assert rows["1.2.0"]["roc_auc"] == pytest.approx(0.902)
    assert str(rows["1.1.0"]["tag"]) == "tree-survival@v1.1.0"
    bundle, _ = load_verified(repo.root / PROD)
    assert bundle.version == "1.2.0" and bundle.manifest["digest"] == digests["1.2.0"]
    assert {"tree-survival#prod#1", "tree-survival#prod#2"} <= set(repo.tags())


def test_promote_refuses_an_unknown_version(three_versions: tuple[Repo, dict[str, str]]) -> None:
    repo, _ = three_versions
    out = repo.treesurv("registry", "promote", "9.9.9", check=False)
    assert out.returncode == 1
    assert "9.9.9 of tree-survival is not registered" in out.stderr
    assert not (repo.root / PROD).exists()


def test_rollback_walks_back_and_restores_from_the_remote(
    three_versions: tuple[Repo, dict[str, str]],
) -> None:
    repo, digests = three_versions
    for version in VERSIONS:
        repo.promote(version)
    # Nothing local to restore from: only the DVC remote has the old bundles.
    shutil.rmtree(repo.root / ".dvc" / "cache")
    shutil.rmtree(repo.root / "models" / "registry" / "tree-survival")

    out = repo.treesurv("registry", "rollback")
    assert "from 1.2.0 to 1.1.0" in out.stderr
    assert manifest(repo.root / PROD)["digest"] == digests["1.1.0"]
    repo.treesurv("registry", "rollback")
    assert manifest(repo.root / PROD)["digest"] == digests["1.0.0"]
    load_verified(repo.root / PROD)
    assert [v for v, r in listed(repo).items() if r["stage"] == "prod"] == ["1.0.0"]

    stuck = repo.treesurv("registry", "rollback", check=False)
    assert stuck.returncode == 1 and "no earlier one to roll back to" in stuck.stderr
    assert manifest(repo.root / PROD)["digest"] == digests["1.0.0"]
    history = repo.treesurv("registry", "history").stdout
    assert history.count("rollback from") == 2


def test_a_bundle_that_cannot_be_restored_changes_nothing(
    small_repo: Repo, real_study: pd.DataFrame
) -> None:
    repo = small_repo
    add_version(repo, real_study, "1.0.0", seed=0)
    repo.promote("1.0.0")
    add_version(repo, real_study, "1.1.0", seed=1, push=False)  # never reached the remote
    shutil.rmtree(repo.root / ".dvc" / "cache")
    tags = repo.tags()
    before = manifest(repo.root / PROD)

    out = repo.treesurv("registry", "promote", "1.1.0", check=False)
    assert out.returncode == 1
    assert "cannot restore the bundle of 1.1.0" in out.stderr
    assert repo.tags() == tags  # no stage tag was added
    assert manifest(repo.root / PROD) == before
    assert not list((repo.root / "models").glob(".production.*"))


def test_checkout_before_any_promotion_uses_the_pipeline_bundle(
    small_repo: Repo, real_study: pd.DataFrame
) -> None:
    repo = small_repo
    build_bundle(repo.root / "models" / "tree-survival", real_study, "1.0.0", trees=3)
    out = repo.treesurv("registry", "checkout")
    assert out.stdout.strip() == "1.0.0"
    assert "the pipeline bundle" in out.stderr and "updated" in out.stderr
    load_verified(repo.root / PROD)
    again = repo.treesurv("registry", "checkout")
    assert "already in place" in again.stderr


def test_checkout_a_registry_tag_elsewhere(
    three_versions: tuple[Repo, dict[str, str]], tmp_path: Path
) -> None:
    repo, digests = three_versions
    repo.promote("1.1.0")
    dest = tmp_path / "image-context" / "model"
    out = repo.treesurv("registry", "checkout", "--tag", "tree-survival#prod#1", "--out", str(dest))
    assert out.stdout.strip() == "1.1.0"
    assert load_verified(dest)[0].manifest["digest"] == digests["1.1.0"]
    bad = repo.treesurv("registry", "checkout", "--tag", "nope#prod#9", check=False)
    assert bad.returncode == 1 and "not a tag" in bad.stderr


def test_no_production_and_no_pipeline_bundle_is_a_clear_error(small_repo: Repo) -> None:
    out = small_repo.treesurv("registry", "checkout", check=False)
    assert out.returncode == 1
    assert "no pipeline bundle" in out.stderr and "dvc repro" in out.stderr
