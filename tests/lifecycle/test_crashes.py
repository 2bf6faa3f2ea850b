"""SIGKILL in the middle of `registry promote`, `retrain`'s promotion and `data add`.

Each command runs as a child process on a real git + DVC repository with a
temporary local remote, and dies by SIGKILL at one step (`TREESURV_FAULT_AT`,
see `treesurv.core.journal.checkpoint`). Afterwards the next command (`registry list`)
finishes or undoes the interrupted operation, and the registry, the data pointer,
the production bundle and the remote are consistent: the old state or the new
one, never a mix. Then the command runs again and works.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.helpers import (
    DATA_RAW,
    STORE,
    Repo,
    build_bundle,
    copy_of,
    make_data_repo,
    manifest,
    run,
    study_lines,
    versioned_repo,
)
from treesurv.core.files import file_md5
from treesurv.core.journal import DIRECTORY, FAULT_ENV
from treesurv.inference.bundle import load_verified
from treesurv.lifecycle.ingest import pointer_md5

pytestmark = pytest.mark.slow

PROD = Path("models/production")
POINTER = Path(f"{DATA_RAW}.dvc")
KILLED = -9


def kill_points(steps: dict[str, Any], *quick: str) -> list[Any]:
    """Every step of a matrix as a parameter: `make test` kills at the given ones,
    `make test-e2e` at every other step too."""
    return [pytest.param(step, marks=() if step in quick else pytest.mark.e2e) for step in steps]


def killed_at(repo: Repo, step: str, *args: str) -> None:
    out = run(["treesurv", *args], repo.root, check=False, env={FAULT_ENV: step})
    assert out.returncode == KILLED, f"never reached {step}:\n{out.stderr[-2000:]}"


def in_remote(repo: Repo, md5: str) -> bool:
    """The object is in the remote, and so is every file of a directory object."""
    path = repo.remote / "files" / "md5" / md5[:2] / md5[2:]
    if not path.is_file():
        return False
    if md5.endswith(".dir"):
        return all(in_remote(repo, entry["md5"]) for entry in json.loads(path.read_text()))
    return True


def pointer_at(repo: Repo, rev: str, pointer: Path) -> str:
    text = repo.run("git", "show", f"{rev}:{pointer.as_posix()}").stdout
    return str(yaml.safe_load(text)["outs"][0]["md5"])


def assert_consistent(repo: Repo, digests: dict[str, str], production: str | None) -> None:
    """After the next command: nothing half-done is left, every tag and pointer
    names content the remote holds, production is the stage's version."""
    rows = json.loads(repo.treesurv("registry", "list", "--json").stdout)  # recovers
    staged = [r["version"] for r in rows if r["stage"]]
    assert staged == ([production] if production else [])
    assert not list((repo.root / DIRECTORY).glob("*.json"))  # no journal left
    leftovers = [p for p in repo.root.rglob(".*") if p.name.startswith((".production.", ".tree-"))]
    leftovers += list((repo.root / DATA_RAW).parent.glob(f".{DATA_RAW.name}.*"))
    assert leftovers == []
    assert repo.run("git", "status", "--porcelain").stdout == ""
    for row in rows:
        assert in_remote(repo, pointer_at(repo, str(row["tag"]), Path(f"{STORE}.dvc")))
        assert digests[str(row["version"])]  # only versions that were meant to exist
    if production is not None:
        bundle, _ = load_verified(repo.root / PROD)
        assert bundle.version == production
        assert bundle.manifest["digest"] == digests[production]
    if (repo.root / POINTER).exists():
        md5 = pointer_at(repo, "HEAD", POINTER)
        assert pointer_md5(repo.root / POINTER) == md5 == file_md5(repo.root / DATA_RAW)
        assert in_remote(repo, md5)


# --------------------------------------------------------- registry promote

PROMOTE_STEPS = {  # step -> in production afterwards
    "promote:restored": "1.0.0",  # before the stage tag: undone
    "promote:assigned": "1.1.0",  # the stage tag is the commit point: finished
    "bundle:swapping": "1.1.0",  # no bundle in place at all: restored
    "promote:installed": "1.1.0",
}


@pytest.fixture(scope="module")
def two_versions(
    tmp_path_factory: pytest.TempPathFactory, real_study: pd.DataFrame
) -> tuple[Path, dict[str, str]]:
    base = tmp_path_factory.mktemp("two-versions")
    digests = versioned_repo(base, real_study, ("1.0.0", "1.1.0"))
    Repo(base / "repo", base / "remote").promote("1.0.0")
    return base, digests


@pytest.mark.parametrize("step", kill_points(PROMOTE_STEPS, "promote:assigned"))
def test_promote_killed_at_each_step(
    two_versions: tuple[Path, dict[str, str]], tmp_path: Path, step: str
) -> None:
    base, digests = two_versions
    repo = copy_of(base, tmp_path / "copy")
    tags = set(repo.tags())
    killed_at(repo, step, "registry", "promote", "1.1.0")
    assert_consistent(repo, digests, PROMOTE_STEPS[step])
    undone = PROMOTE_STEPS[step] == "1.0.0"
    assert (set(repo.tags()) == tags) is undone  # finished: exactly one more stage tag
    assert len(set(repo.tags()) - tags) == (0 if undone else 1)
    # And the registry works on: rollback or promotion from the state left.
    repo.treesurv("registry", "promote", "1.1.0")
    repo.treesurv("registry", "rollback")
    assert_consistent(repo, digests, "1.0.0")


# ----------------------------------------------------------------- data add

DATA_STEPS = {  # step -> the rows were added
    "data-add:journaled": False,
    "data-add:written": False,  # appended, pointer not yet updated
    "data-add:dvc-added": False,  # pointer updated, data not yet in the remote
    "data-add:pushed": False,  # pushed, not committed
    "data-add:committed": True,  # the commit point
}


@pytest.mark.parametrize("step", kill_points(DATA_STEPS, "data-add:committed"))
def test_data_add_killed_at_each_step(
    data_repo: Repo, real_csv: Path, tmp_path: Path, step: str
) -> None:
    repo = data_repo
    lines = study_lines(real_csv)
    before = (repo.root / DATA_RAW).read_bytes()
    after = before + b"".join(lines[301:321])
    new = tmp_path / "census.csv"
    new.write_bytes(lines[0] + b"".join(lines[301:321]))
    head = repo.head()
    killed_at(repo, step, "data", "add", str(new))
    assert_consistent(repo, {}, None)
    added = DATA_STEPS[step]
    assert (repo.root / DATA_RAW).read_bytes() == (after if added else before)
    assert (repo.head() == head) is not added
    # Adding the file again completes the job (or finds only duplicates).
    out = repo.treesurv("data", "add", str(new))
    assert ("0 row(s) appended, 20 duplicate(s)" if added else "20 row(s) appended") in (
        out.stderr.replace("\n", " ")
    )
    assert (repo.root / DATA_RAW).read_bytes() == after
    assert_consistent(repo, {}, None)


# ---------------------------------------------------- retrain's promotion

# A repository where `retrain` runs for real but fast: the study's first 300 rows
# as the data version, a pipeline whose only stage does nothing, and bundles built
# by the tests in the pipeline's place (so `dvc repro` costs nothing).
RETRAIN_STEPS = {  # step -> in production afterwards
    "retrain:journaled": "1.0.0",
    "retrain:stored": "1.0.0",  # bundle in the store, its pointer not committed
    "retrain:pushed": "1.0.0",  # in the remote, nothing refers to it yet
    "retrain:committed": "1.0.1",  # the commit point: registered and promoted on recovery
    "retrain:registered": "1.0.1",
    "promote:assigned": "1.0.1",
}


@pytest.fixture(scope="module")
def retrain_template(
    tmp_path_factory: pytest.TempPathFactory, real_csv: Path, real_study: pd.DataFrame
) -> tuple[Path, dict[str, str]]:
    base = tmp_path_factory.mktemp("retrain")
    repo = make_data_repo(base / "repo", base / "remote", real_csv)
    params = yaml.safe_load((repo.root / "params.yaml").read_text())
    params["retrain"].update(roc_auc_tolerance=1.0, brier_tolerance=1.0)  # any new model passes
    (repo.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo.root / "dvc.yaml").write_text("stages:\n  noop:\n    cmd: 'true'\n")
    with (repo.root / ".gitignore").open("a") as fh:
        fh.write("/models/tree-survival/\n/data/processed/\n/reports/\n")
    test = repo.root / "data" / "processed" / "test.parquet"
    test.parent.mkdir(parents=True)
    real_study.iloc[300:700].to_parquet(test)
    train = real_study.iloc[:300]
    first = build_bundle(repo.root / "models/tree-survival", train, trees=4)
    digests = {"1.0.0": str(first["digest"])}
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "a pipeline that does nothing")
    repo.treesurv("retrain")
    assert manifest(repo.root / PROD)["version"] == "1.0.0"
    # The next challenger: another model, already packaged under its next version.
    built = build_bundle(repo.root / "models/tree-survival", train, "1.0.1", trees=4, seed=1)
    digests["1.0.1"] = str(built["digest"])
    return base, digests


@pytest.mark.parametrize("step", kill_points(RETRAIN_STEPS, "retrain:committed"))
def test_retrain_promotion_killed_at_each_step(
    retrain_template: tuple[Path, dict[str, str]], tmp_path: Path, step: str
) -> None:
    base, digests = retrain_template
    repo = copy_of(base, tmp_path / "copy")
    head, tags = repo.head(), set(repo.tags())
    params = (repo.root / "params.yaml").read_bytes()
    killed_at(repo, step, "retrain")
    production = RETRAIN_STEPS[step]
    assert_consistent(repo, digests, production)
    if production == "1.0.0":  # undone: git, tags and files as before
        assert (repo.head(), set(repo.tags())) == (head, tags)
        assert (repo.root / "params.yaml").read_bytes() == params
        again = "promoted"
    else:  # finished: the version's commit, tag and stage tag
        assert repo.run("git", "log", "-1", "--format=%s").stdout.startswith(
            "model: tree-survival 1.0.1"
        )
        assert set(repo.tags()) - tags == {"tree-survival@v1.0.1", "tree-survival#prod#2"}
        again = "kept"  # the challenger is now the production model itself
    repo.treesurv("retrain")
    report = json.loads((repo.root / "reports" / "retrain.json").read_text())
    assert report["decision"] == again
    assert_consistent(repo, digests, "1.0.1")


# ------------------------------------------------------- unreachable remote


def snapshot(repo: Repo) -> tuple[object, ...]:
    """What a failed retrain must leave alone."""
    return (
        repo.head(),
        sorted(repo.tags()),
        manifest(repo.root / PROD)["digest"],
        (repo.root / POINTER).read_text(),
        file_md5(repo.root / DATA_RAW),
        (repo.root / f"{STORE}.dvc").read_text(),
        (repo.root / "params.yaml").read_text(),
    )


def failed_retrain(repo: Repo) -> tuple[str, dict[str, object]]:
    out = repo.treesurv("retrain", check=False)
    assert out.returncode == 1, out.stderr[-2000:]
    report = json.loads((repo.root / "reports" / "retrain.json").read_text())
    assert report["decision"] == "failed"
    return " ".join(out.stderr.split()), report


@pytest.mark.e2e
def test_remote_unreachable_at_the_start_changes_nothing(
    retrain_template: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    base, digests = retrain_template
    repo = copy_of(base, tmp_path / "copy")
    before = snapshot(repo)
    repo.break_remote()  # the data is in the local cache: only the check finds out
    stderr, report = failed_retrain(repo)
    assert report["failed_step"] == "pull"
    broken = str(repo.root.parent / "not-a-directory" / "remote")
    assert f"the DVC remote 'tmp' ({broken}) is unreachable" in stderr
    assert "production model and its tags are unchanged" in stderr
    assert snapshot(repo) == before
    # A remote that is there but lacks the data version is refused the same way.
    empty = tmp_path / "empty-remote"
    empty.mkdir()
    repo.run("dvc", "remote", "modify", "--local", "tmp", "url", str(empty))
    stderr, report = failed_retrain(repo)
    assert "does not hold the current data version" in stderr
    assert snapshot(repo) == before
    repo.mend_remote()
    assert_consistent(repo, digests, "1.0.0")


@pytest.mark.e2e
def test_remote_lost_between_pull_and_push_changes_nothing(
    retrain_template: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    base, digests = retrain_template
    repo = copy_of(base, tmp_path / "copy")
    # The pipeline's stage runs after the pull: it points the remote at a dead path.
    blocker = repo.root.parent / "not-a-directory"
    blocker.write_text("")
    broken = repo.root.parent / "broken-config"
    broken.write_text(f"[core]\n    remote = tmp\n['remote \"tmp\"']\n    url = {blocker}/r\n")
    stage = f"stages:\n  noop:\n    cmd: cp {broken} .dvc/config.local\n"
    (repo.root / "dvc.yaml").write_text(stage)
    repo.run("git", "commit", "-qam", "a pipeline that loses the remote")
    before = snapshot(repo)
    stderr, report = failed_retrain(repo)
    assert report["failed_step"] == "push" and report["version"] == "1.0.1"
    assert f"cannot push to the DVC remote 'tmp' ({blocker}/r)" in stderr
    assert snapshot(repo) == before  # no commit, no tag, same production and pointers
    assert not list((repo.root / DIRECTORY).glob("*.json"))
    (repo.root / "dvc.yaml").write_text("stages:\n  noop:\n    cmd: 'true'\n")
    repo.run("git", "commit", "-qam", "the remote is back")
    repo.mend_remote()
    repo.treesurv("retrain")
    assert_consistent(repo, digests, "1.0.1")
