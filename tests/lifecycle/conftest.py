"""Small real git + DVC repositories with a temporary local remote."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run
from tests.helpers import build_bundle
from treesurv.core.validation import validate_file
from treesurv.lifecycle.registry import Registry, promote

STORE = Path("models/registry/tree-survival")
DATA_RAW = Path("data/raw/Tree_Data.csv")
PARAMS = """\
paths:
  raw: data/raw/Tree_Data.csv
  bundle: models/tree-survival
  metrics: metrics.json
package:
  name: tree-survival
  version: 1.0.0
retrain:
  stage: prod
  production_dir: models/production
  store: models/registry
"""


@dataclass
class Repo:
    root: Path
    remote: Path

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(list(cmd), self.root, check=check)

    def treesurv(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("treesurv", *args, check=check)

    @property
    def registry(self) -> Registry:
        return Registry(self.root, "tree-survival", STORE)

    def promote(self, version: str) -> None:
        """Promote through the Python API (setup steps; the CLI is tested on its own)."""
        promote(self.registry, version, self.root / "models" / "production")

    def tags(self) -> list[str]:
        return self.run("git", "tag", "--list").stdout.split()

    def head(self) -> str:
        return self.run("git", "rev-parse", "HEAD").stdout.strip()

    def break_remote(self) -> None:
        """Point the remote under a regular file: every push fails, like a dead host."""
        blocker = self.root.parent / "not-a-directory"
        blocker.write_text("")
        self.run("dvc", "remote", "modify", "--local", "tmp", "url", str(blocker / "remote"))

    def mend_remote(self) -> None:
        self.run("dvc", "remote", "modify", "--local", "tmp", "url", str(self.remote))


def init_repo(root: Path, remote: Path) -> Repo:
    root.mkdir(parents=True, exist_ok=True)
    remote.mkdir(parents=True, exist_ok=True)
    repo = Repo(root, remote)
    repo.run("git", "init", "-q", "-b", "main")
    repo.run("dvc", "init", "-q")
    repo.run("dvc", "remote", "add", "--local", "-d", "tmp", str(remote))
    (root / "params.yaml").write_text(PARAMS)
    (root / ".gitignore").write_text("/models/production/\n/models/.production.*\n")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "init")
    return repo


@pytest.fixture
def small_repo(tmp_path: Path) -> Repo:
    return init_repo(tmp_path / "repo", tmp_path / "remote")


@pytest.fixture(scope="module")
def study(real_csv: Path) -> pd.DataFrame:
    frame, _ = validate_file(real_csv)
    return frame


def add_version(
    repo: Repo, study: pd.DataFrame, version: str, *, seed: int, push: bool = True
) -> str:
    """Build a small real bundle, store it with DVC as the registry does, commit it
    and register it; returns the bundle's manifest digest."""
    built = build_bundle(repo.root / STORE, study, version, trees=4, seed=seed)
    metrics = {"test": {"roc_auc": 0.9 + seed / 1000, "brier": 0.1 - seed / 1000}}
    (repo.root / "metrics.json").write_text(json.dumps(metrics))
    repo.run("dvc", "add", "-q", str(STORE))
    if push:
        repo.run("dvc", "push", "-q")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", f"model {version}")
    repo.registry.register(version)
    return str(built["digest"])


def versioned_repo(base: Path, study: pd.DataFrame, versions: tuple[str, ...]) -> dict[str, str]:
    """A repository (`base/repo`) and its remote (`base/remote`) with `versions`
    registered; returns their bundles' digests. Built once per module, then copied
    for each test with `copy_of`."""
    repo = init_repo(base / "repo", base / "remote")
    return {v: add_version(repo, study, v, seed=i) for i, v in enumerate(versions)}


def copy_of(base: Path, dest: Path) -> Repo:
    """A copy of the repository and remote that `versioned_repo` built under `base`."""
    shutil.copytree(base, dest, symlinks=True)
    repo = Repo(dest / "repo", dest / "remote")
    repo.mend_remote()
    return repo


def manifest(path: Path) -> dict[str, object]:
    return dict(json.loads((path / "manifest.json").read_text()))


def study_lines(real_csv: Path) -> list[bytes]:
    """The real file's lines, byte for byte (CRLF endings included)."""
    return real_csv.read_bytes().splitlines(keepends=True)


@pytest.fixture
def data_repo(tmp_path: Path, real_csv: Path) -> Repo:
    return make_data_repo(tmp_path / "repo", tmp_path / "remote", real_csv)


def make_data_repo(root: Path, remote: Path, real_csv: Path) -> Repo:
    """A repository whose data version is the study's first 300 rows."""
    repo = init_repo(root, remote)
    lines = study_lines(real_csv)
    (repo.root / DATA_RAW).parent.mkdir(parents=True)
    (repo.root / DATA_RAW).write_bytes(b"".join(lines[:301]))
    repo.run("dvc", "add", "-q", str(DATA_RAW))
    repo.run("dvc", "push", "-q")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "data v1")
    return repo
