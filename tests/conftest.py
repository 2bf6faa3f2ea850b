"""Shared fixtures: small frames built in memory, and a real copy of the project.

`project` is a temporary copy of this checkout (its own git repository) with the
study data pulled from the real DVC remote; `pipeline_project` has also run
`dvc repro` with the production parameters. Both are built once per session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from treesurv.core import schema

ROOT = Path(__file__).resolve().parents[1]
SHARED_REMOTE = (ROOT.parent / "shared" / "dvc-remote").resolve()
BIN = Path(sys.executable).parent


def run(
    cmd: list[str],
    cwd: Path,
    check: bool = True,
    timeout: float = 900,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "GIT_AUTHOR_NAME": "treesurv tests",
        "GIT_AUTHOR_EMAIL": "tests@example.invalid",
        "GIT_COMMITTER_NAME": "treesurv tests",
        "GIT_COMMITTER_EMAIL": "tests@example.invalid",
        **(env or {}),
    }
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def project_files() -> list[str]:
    """What a clone would hold: tracked files plus new, not-ignored ones (work in
    progress), but not a local dvc.lock that was never committed."""
    tracked = run(["git", "ls-files", "-z"], ROOT).stdout.split("\0")
    others = run(["git", "ls-files", "-z", "--others", "--exclude-standard"], ROOT).stdout
    new = [f for f in others.split("\0") if f != "dvc.lock"]
    return sorted({f for f in tracked + new if f and (ROOT / f).is_file()})


def copy_project(dest: Path) -> Path:
    """A fresh project: this checkout's files, a new git repo, the real remote."""
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["dvc", "remote", "modify", "--local", "shared", "url", str(SHARED_REMOTE)], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "test copy"], dest)
    return dest


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SHARED_REMOTE.is_dir():
        pytest.fail(f"the shared DVC remote is missing: {SHARED_REMOTE}")
    dest = copy_project(tmp_path_factory.mktemp("project"))
    # A plain `dvc pull`, as on a fresh clone: it fails if a committed dvc.lock
    # names outputs that the remote does not hold.
    run(["dvc", "pull"], dest)
    return dest


@pytest.fixture(scope="session")
def real_csv(project: Path) -> Path:
    return project / "data" / "raw" / "Tree_Data.csv"


@pytest.fixture(scope="session")
def real_frame(real_csv: Path) -> pd.DataFrame:
    return pd.read_csv(real_csv, dtype=str, keep_default_na=False, na_values=["", "NA"])


@pytest.fixture(scope="session")
def pipeline_project(project: Path) -> Path:
    """The project after `dvc repro` on the real data (about a minute)."""
    run(["dvc", "repro"], project)
    return project


@pytest.fixture(scope="session")
def bundle_dir(pipeline_project: Path) -> Path:
    return pipeline_project / "models" / "tree-survival"


def good_row(**overrides: Any) -> dict[str, Any]:
    """A valid row of the study's file (as text, like a CSV cell)."""
    row: dict[str, Any] = {
        "No": "1",
        "Plot": "1",
        "Subplot": "C",
        "Species": "Quercus rubra",
        "Light_ISF": "0.106",
        "Light_Cat": "Med",
        "Core": "2017",
        "Soil": "Prunus serotina",
        "Adult": "J",
        "Sterile": "Non-Sterile",
        "Conspecific": "Heterospecific",
        "Myco": "EMF",
        "SoilMyco": "AMF",
        "PlantDate": "5/31/18",
        "AMF": "24.45",
        "EMF": "28.19",
        "Phenolics": "3.36",
        "Lignin": "24.74",
        "NSC": "15.01",
        "Census": "18",
        "Time": "63",
        "Event": "1",
        "Harvest": "0",
        "Alive": "Dead",
    }
    row.update(overrides)
    return row


def frame_of(*rows: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


@pytest.fixture
def small_frame() -> pd.DataFrame:
    """Eight valid rows covering every species and both outcomes."""
    rows = []
    species_soil = [
        ("Acer saccharum", "Prunus serotina"),
        ("Prunus serotina", "Sterile"),
        ("Quercus alba", "Quercus alba"),
        ("Quercus rubra", "Acer rubrum"),
    ]
    for i in range(8):
        sp, soil = species_soil[i % 4]
        amf_species = schema.SPECIES_MYCO[sp] == "AMF"
        rows.append(
            good_row(
                No=str(i + 1),
                Species=sp,
                Soil=soil,
                Sterile="Sterile" if soil == "Sterile" else "Non-Sterile",
                Conspecific=schema.expected_conspecific(sp, soil),
                EMF=None if amf_species else str(20 + i),
                Event=str(i % 2),
            )
        )
    return frame_of(*rows)


@pytest.fixture
def chdir_tmp(tmp_path: Path) -> Iterator[Path]:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)
