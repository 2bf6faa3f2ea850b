"""The continuous-training loop end to end, as a user (or the CT workflow) runs it.

One temporary copy of the project, its own git history and a temporary local DVC
remote; the real pipeline on the real data, with tiny searches (one candidate,
few folds: each retrain takes seconds; the loop's behaviour is under test, not
the model's quality). The loop's steps build on each other, so each step is a
module-scoped fixture that runs once, records what the tests check, and depends
on the step before; every test asks for the step it checks, and so passes alone
and in any order:

1. first training                      -> promoted (1.0.0)
2. retrain with no change              -> kept
3. more data and a better model        -> promoted (1.1.0), production swapped in place
4. a deliberately worse challenger     -> kept
5. invalid new data                    -> failed, nothing changed
6. the remote is unreachable           -> failed at pull, nothing changed
7. rollback                            -> 1.0.0 again, its bundle from the remote
8. the served model reloads            -> `treesurv serve` on the production directory
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import SHARED_REMOTE, copy_project, free_port, run
from treesurv.inference.bundle import BundleError, load_verified

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

RAW = Path("data/raw/Tree_Data.csv")
POINTER = Path("data/raw/Tree_Data.csv.dvc")
PROD = Path("models/production")
NEW_ROWS = 400  # the study's last rows arrive as a later census

FAST = {"search_iterations": 1, "cv_folds": 3, "group_folds": 3, "calibration": "none"}
# The planning classifier and the survival models: one small candidate each.
TINY = {
    "planning": {
        "candidates": ["logreg"],
        "search_iterations": 1,
        "grids": {"logreg": {"C": [1.0]}},
    },
    "survival": {
        "candidates": ["cox"],
        "cv_folds": 3,
        "search_iterations": 1,
        "grids": {"cox": {"alpha": [1.0], "ties": ["efron"]}},
    },
}
WEAK = {"candidates": ["logreg"], "grids": {"logreg": {"C": [1.0]}}}
STRONG = {
    "candidates": ["forest"],
    "grids": {
        "forest": {
            "n_estimators": [60],
            "max_depth": [8],
            "max_features": [0.5],
            "min_samples_leaf": [3],
        }
    },
}
# One tree of depth one: a model that can only be worse.
CRIPPLED = {
    "candidates": ["forest"],
    "grids": {
        "forest": {
            "n_estimators": [1],
            "max_depth": [1],
            "max_features": [0.1],
            "min_samples_leaf": [1],
        }
    },
}


class Loop:
    def __init__(self, root: Path, remote: Path, new_rows: Path) -> None:
        self.root, self.remote, self.new_rows = root, remote, new_rows
        self.digests: dict[str, str] = {}
        self.shared_before = self.shared_state()

    @staticmethod
    def shared_state() -> dict[str, float]:
        return {str(p): p.stat().st_mtime for p in SHARED_REMOTE.rglob("*")}

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(list(cmd), self.root, check=check)

    def set_train(self, train: dict[str, Any], **extra: Any) -> None:
        params = yaml.safe_load((self.root / "params.yaml").read_text())
        params["train"].update(FAST)
        params["train"].update(train)
        for section, values in extra.items():
            params[section].update(values)
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def retrain(self, *args: str, ok: bool = True) -> dict[str, Any]:
        out = self.run("treesurv", "retrain", *args, check=False)
        assert (out.returncode == 0) is ok, out.stderr[-3000:]
        report: dict[str, Any] = json.loads((self.root / "reports/retrain.json").read_text())
        assert (self.root / "reports/retrain.md").read_text().startswith("# Retrain:")
        return report

    def tags(self) -> list[str]:
        return sorted(self.run("git", "tag").stdout.split())

    def production(self) -> dict[str, Any]:
        return dict(load_verified(self.root / PROD)[0].manifest)

    def snapshot(self) -> tuple[Any, ...]:
        """What a failed run must leave alone."""
        return (
            self.tags(),
            self.run("git", "rev-parse", "HEAD").stdout,
            self.production()["digest"],
            (self.root / POINTER).read_text(),
            (self.root / RAW).read_bytes(),
        )


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Loop:
    base = tmp_path_factory.mktemp("loop")
    root, remote = base / "project", base / "remote"
    root.mkdir()
    remote.mkdir()
    copy_project(root)
    lp = Loop(root, remote, base / "census-2019.csv")
    lp.run("dvc", "pull", "-q", str(POINTER))  # from the (read-only) shared remote
    # From here on, the temporary remote is the only one written to.
    lp.run("dvc", "remote", "add", "--local", "-d", "tmp", str(remote))
    lines = (root / RAW).read_bytes().splitlines(keepends=True)
    lp.new_rows.write_bytes(lines[0] + b"".join(lines[-NEW_ROWS:]))
    (root / RAW).write_bytes(b"".join(lines[:-NEW_ROWS]))
    lp.run("dvc", "add", "-q", str(RAW))
    lp.run("dvc", "push", "-q", str(POINTER))
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    lp.set_train(WEAK)
    lp.run("git", "add", "-A")
    lp.run("git", "commit", "-qm", "an earlier census and a simple model")
    return lp


class Watcher:
    """Polls the production directory like the service's watcher does, and
    records every version it could load."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                version = load_verified(self.path)[0].version
                if not self.seen or self.seen[-1] != version:
                    self.seen.append(version)
            except BundleError as exc:
                self.errors.append(str(exc))
            time.sleep(0.02)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class Step:
    """What one step of the loop did, recorded when it ran."""

    report: dict[str, Any]
    before: tuple[Any, ...] = ()
    after: tuple[Any, ...] = ()
    seen: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def step_1(loop: Loop) -> Step:
    report = loop.retrain()
    committed = loop.run("git", "show", "--name-only", "--format=", "HEAD").stdout.split()
    step = Step(
        report,
        seen={
            "tags": loop.tags(),
            "production": loop.production()["version"],
            "subject": loop.run("git", "log", "-1", "--format=%s").stdout,
            "status": loop.run("git", "status", "--porcelain").stdout,
            "committed": set(committed),
            "cloud": loop.run("dvc", "status", "--cloud").stdout,
            "plots": {p: (loop.root / "reports" / p).is_file() for p in report["plots"]},
        },
    )
    loop.digests["1.0.0"] = loop.production()["digest"]
    return step


@pytest.fixture(scope="module")
def step_2(step_1: Step, loop: Loop) -> Step:
    before = loop.snapshot()
    report = loop.retrain()
    return Step(report, before, loop.snapshot())


@pytest.fixture(scope="module")
def step_3(step_2: Step, loop: Loop) -> Step:
    loop.set_train(STRONG)
    inode = (loop.root / PROD).stat().st_ino
    with Watcher(loop.root / PROD) as watcher:
        report = loop.retrain("--data", str(loop.new_rows))
        time.sleep(0.2)
    step = Step(
        report,
        seen={
            "watcher": watcher,
            "inode_before": inode,
            "inode_after": (loop.root / PROD).stat().st_ino,
            "production": loop.production()["version"],
            "retrain_md": (loop.root / "reports/retrain.md").read_text(),
            "log": loop.run("git", "log", "-2", "--format=%s").stdout,
            "params": (loop.root / "params.yaml").read_text(),
            "status": loop.run("git", "status", "--porcelain").stdout,
        },
    )
    loop.digests["1.1.0"] = loop.production()["digest"]
    return step


@pytest.fixture(scope="module")
def step_4(step_3: Step, loop: Loop) -> Step:
    before = loop.snapshot()
    loop.set_train(CRIPPLED)
    report = loop.retrain()
    step = Step(report, before, loop.snapshot())
    loop.run("git", "checkout", "-q", "--", ".")
    loop.run("dvc", "checkout", "-q")
    return step


@pytest.fixture(scope="module")
def step_5(step_4: Step, loop: Loop, tmp_path_factory: pytest.TempPathFactory) -> Step:
    before = loop.snapshot()
    with loop.new_rows.open(newline="") as fh:
        rows = list(csv.reader(fh))
    header, row = rows[0], rows[1]
    row[header.index("Light_ISF")] = "bright"
    bad = tmp_path_factory.mktemp("step5") / "bad.csv"
    with bad.open("w", newline="") as fh:
        csv.writer(fh).writerows([header, rows[2], row])
    report = loop.retrain("--data", str(bad), ok=False)
    return Step(
        report,
        before,
        loop.snapshot(),
        seen={"retrain_md": (loop.root / "reports/retrain.md").read_text()},
    )


@pytest.fixture(scope="module")
def step_6(step_5: Step, loop: Loop) -> Step:
    before = loop.snapshot()
    # A different model that the gate would let through (the tolerances are wide open)...
    loop.set_train(STRONG, retrain={"roc_auc_tolerance": 1.0, "brier_tolerance": 1.0})
    params = yaml.safe_load((loop.root / "params.yaml").read_text())
    params["seed"] = 7
    (loop.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # ... but the remote cannot be written to.
    blocker = loop.root.parent / "not-a-directory"
    blocker.write_text("")
    loop.run("dvc", "remote", "modify", "--local", "tmp", "url", str(blocker / "remote"))
    try:
        report = loop.retrain(ok=False)
    finally:
        loop.run("dvc", "remote", "modify", "--local", "tmp", "url", str(loop.remote))
    step = Step(report, before, loop.snapshot(), seen={"blocker": blocker})
    loop.run("git", "checkout", "-q", "--", ".")
    loop.run("dvc", "checkout", "-q")
    return step


@pytest.fixture(scope="module")
def step_7(step_6: Step, loop: Loop) -> Step:
    shutil.rmtree(loop.root / ".dvc" / "cache")  # only the remote has the old bundle now
    with Watcher(loop.root / PROD) as watcher:
        out = loop.run("treesurv", "registry", "rollback")
        time.sleep(0.2)
    seen: dict[str, Any] = {
        "stderr": out.stderr,
        "watcher": watcher,
        "digest": loop.production()["digest"],
        "listed": json.loads(loop.run("treesurv", "registry", "list", "--json").stdout),
        "tags": loop.tags(),
    }
    # And forward again, by name.
    loop.run("treesurv", "registry", "promote", "1.1.0")
    seen["digest_again"] = loop.production()["digest"]
    return Step({}, seen=seen)


def test_1_first_training_is_promoted(step_1: Step) -> None:
    report, seen = step_1.report, step_1.seen
    assert report["decision"] == "promoted"
    assert report["version"] == "1.0.0" and report["production"] == {
        "stage": "prod",
        "before": None,
        "after": "1.0.0",
    }
    assert report["challenger"]["metrics"]["rows"] == report["evaluation"]["rows"] > 50
    assert seen["tags"] == ["tree-survival#prod#1", "tree-survival@v1.0.0"]
    assert seen["production"] == "1.0.0"
    assert "model: tree-survival 1.0.0" in seen["subject"]
    # The version's commit holds everything that reproduces it: nothing is left over,
    # and the bundle itself is stored with DVC under a pointer of that commit.
    assert seen["status"] == ""
    assert {"dvc.lock", "models/registry/tree-survival.dvc"} <= seen["committed"]
    # Everything the version needs is on the remote: `dvc status --cloud` is clean.
    assert "in sync" in seen["cloud"]
    assert all(seen["plots"].values()), seen["plots"]


def test_2_retrain_without_change_is_kept(step_2: Step) -> None:
    report = step_2.report
    assert report["decision"] == "kept"
    assert "production model itself" in report["reasons"][0]
    assert report["champion"]["version"] == "1.0.0"
    assert report["champion"]["metrics"] == report["challenger"]["metrics"]
    assert step_2.after == step_2.before


def test_3_more_data_and_a_better_model_is_promoted(step_3: Step) -> None:
    report, seen = step_3.report, step_3.seen
    assert report["decision"] == "promoted", report.get("reasons")
    assert report["version"] == "1.1.0" and report["version_bump"] == "minor"  # new data
    assert report["data"]["added"]["appended"] == NEW_ROWS - 1  # one row has no outcome
    new, old = report["challenger"]["metrics"], report["champion"]["metrics"]
    assert new["roc_auc"] > old["roc_auc"] and new["brier"] < old["brier"]
    assert "| ROC AUC ↑ |" in seen["retrain_md"]
    # The production bundle was swapped in place: a watcher saw 1.0.0, then 1.1.0,
    # and never a bundle that failed verification.
    watcher = seen["watcher"]
    assert watcher.seen == ["1.0.0", "1.1.0"]
    assert not [e for e in watcher.errors if "does not match" in e or "unexpected" in e]
    assert seen["inode_after"] != seen["inode_before"]
    assert seen["production"] == "1.1.0"
    assert "model: tree-survival 1.1.0" in seen["log"] and "data: add" in seen["log"]
    assert "version: 1.1.0" in seen["params"]
    assert seen["status"] == ""


def test_4_worse_challenger_is_kept(step_4: Step) -> None:
    report = step_4.report
    assert report["decision"] == "kept"
    assert report["reasons"][0].startswith("ROC AUC") and " < " in report["reasons"][0]
    assert report["challenger"]["metrics"]["roc_auc"] < report["champion"]["metrics"]["roc_auc"]
    assert step_4.after[:3] == step_4.before[:3]  # no tag, no commit, same production


def test_5_invalid_new_data_fails_and_changes_nothing(step_5: Step) -> None:
    report = step_5.report
    assert report["decision"] == "failed" and report["failed_step"] == "data"
    assert "nothing was added" in report["error"]
    assert [(i["line"], i["column"], i["value"]) for i in report["data_report"]["issues"]] == [
        (3, "Light_ISF", "bright")
    ]
    assert step_5.after == step_5.before
    assert "failed at step `data`" in step_5.seen["retrain_md"]


def test_6_unreachable_remote_fails_before_anything_changes(step_6: Step) -> None:
    report, blocker = step_6.report, step_6.seen["blocker"]
    # Found at the pull, before a minute of training (test_crashes.py loses the
    # remote between the pull and the push).
    assert report["decision"] == "failed" and report["failed_step"] == "pull"
    assert f"the DVC remote 'tmp' ({blocker / 'remote'}) is unreachable" in report["error"]
    assert step_6.after == step_6.before  # no tag, no commit, same production and data


def test_7_rollback_restores_the_previous_version_from_the_remote(step_7: Step, loop: Loop) -> None:
    seen = step_7.seen
    assert "from 1.1.0 to 1.0.0" in seen["stderr"]
    assert seen["watcher"].seen == ["1.1.0", "1.0.0"]
    assert seen["digest"] == loop.digests["1.0.0"]
    assert {r["version"]: r["stage"] for r in seen["listed"]} == {"1.1.0": "", "1.0.0": "prod"}
    assert "tree-survival#prod#3" in seen["tags"]
    assert seen["digest_again"] == loop.digests["1.1.0"]


# -------------------------------------------------------------- the service


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Any:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"null")


def _wait_version(base: str, version: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = _get(f"{base}/v1/model")["version"]
            if seen == version:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the service still serves {seen}, not {version}")


@pytest.fixture
def service(step_7: Step, loop: Loop) -> Iterator[str]:
    """The real service on the production directory, once the loop has run."""
    port = free_port()
    env = {**os.environ, "TREESURV_API_KEY": "lifecycle-test-key"}
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "treesurv"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model",
            str(loop.root / PROD),
        ],
        cwd=loop.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                _get(f"{base}/readyz")
                break
            except OSError:
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# The real service on the production directory: a rollback and a promotion, and it
# reloads (by its directory watcher, then by POST /v1/admin/reload).
def test_8_the_served_model_reloads_to_the_promoted_version(loop: Loop, service: str) -> None:
    _wait_version(service, "1.1.0")
    loop.run("treesurv", "registry", "rollback")
    _wait_version(service, "1.0.0")  # the watcher saw the new bundle renamed in
    loop.run("treesurv", "registry", "promote", "1.1.0")  # back as step 7 left it
    key = "lifecycle-test-key"
    _get(
        f"{service}/v1/admin/reload",
        headers={"X-API-Key": key, "Authorization": f"Bearer {key}"},
        method="POST",
    )
    _wait_version(service, "1.1.0", seconds=5)


def test_9_the_shared_remote_was_never_written(step_7: Step, loop: Loop) -> None:
    """Checked after the whole loop: the read-only shared remote is exactly as it was,
    and the loop's own remote received the versions."""
    assert Loop.shared_state() == loop.shared_before
    assert len(list(loop.remote.rglob("*.dir"))) >= 2  # two bundles (and more) pushed
