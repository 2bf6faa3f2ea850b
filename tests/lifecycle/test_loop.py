"""The continuous-training loop end to end, as a user (or the CT workflow) runs it.

One temporary copy of the project, its own git history and a temporary local DVC
remote; the real pipeline on the real data, with fast parameters. The tests run
in order and each continues from the state the previous one left (so run the
module as a whole; one test alone starts from an empty registry):

1. first training                      -> promoted (1.0.0)
2. retrain with no change              -> kept
3. more data and a better model        -> promoted (1.1.0), production swapped in place
4. a deliberately worse challenger     -> kept
5. invalid new data                    -> failed, nothing changed
6. the remote is unreachable           -> failed at pull, nothing changed
7. rollback                            -> 1.0.0 again, its bundle from the remote
8. the served model reloads            -> needs `treesurv serve` (the serve branch)
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import SHARED_REMOTE, copy_project, run
from treesurv.inference.bundle import BundleError, load_verified

pytestmark = pytest.mark.slow

RAW = Path("data/raw/Tree_Data.csv")
POINTER = Path("data/raw/Tree_Data.csv.dvc")
PROD = Path("models/production")
NEW_ROWS = 400  # the study's last rows arrive as a later census

FAST = {"search_iterations": 1, "cv_folds": 3, "group_folds": 3, "calibration": "none"}
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


def test_1_first_training_is_promoted(loop: Loop) -> None:
    report = loop.retrain()
    assert report["decision"] == "promoted"
    assert report["version"] == "1.0.0" and report["production"] == {
        "stage": "prod",
        "before": None,
        "after": "1.0.0",
    }
    assert report["challenger"]["metrics"]["rows"] == report["evaluation"]["rows"] > 50
    assert loop.tags() == ["tree-survival#prod#1", "tree-survival@v1.0.0"]
    assert loop.production()["version"] == "1.0.0"
    assert "model: tree-survival 1.0.0" in loop.run("git", "log", "-1", "--format=%s").stdout
    # The version's commit holds everything that reproduces it: nothing is left over,
    # and the bundle itself is stored with DVC under a pointer of that commit.
    assert loop.run("git", "status", "--porcelain").stdout == ""
    committed = loop.run("git", "show", "--name-only", "--format=", "HEAD").stdout.split()
    assert {"dvc.lock", "models/registry/tree-survival.dvc"} <= set(committed)
    # Everything the version needs is on the remote: `dvc status --cloud` is clean.
    assert "in sync" in loop.run("dvc", "status", "--cloud").stdout
    for plot in report["plots"]:
        assert (loop.root / "reports" / plot).is_file()
    loop.digests["1.0.0"] = loop.production()["digest"]


def test_2_retrain_without_change_is_kept(loop: Loop) -> None:
    before = loop.snapshot()
    report = loop.retrain()
    assert report["decision"] == "kept"
    assert "production model itself" in report["reasons"][0]
    assert report["champion"]["version"] == "1.0.0"
    assert report["champion"]["metrics"] == report["challenger"]["metrics"]
    assert loop.snapshot() == before


def test_3_more_data_and_a_better_model_is_promoted(loop: Loop) -> None:
    loop.set_train(STRONG)
    inode = (loop.root / PROD).stat().st_ino
    with Watcher(loop.root / PROD) as watcher:
        report = loop.retrain("--data", str(loop.new_rows))
        time.sleep(0.2)
    assert report["decision"] == "promoted", report.get("reasons")
    assert report["version"] == "1.1.0" and report["version_bump"] == "minor"  # new data
    assert report["data"]["added"]["appended"] == NEW_ROWS - 1  # one row has no outcome
    new, old = report["challenger"]["metrics"], report["champion"]["metrics"]
    assert new["roc_auc"] > old["roc_auc"] and new["brier"] < old["brier"]
    assert "| ROC AUC ↑ |" in (loop.root / "reports/retrain.md").read_text()
    # The production bundle was swapped in place: a watcher saw 1.0.0, then 1.1.0,
    # and never a bundle that failed verification.
    assert watcher.seen == ["1.0.0", "1.1.0"]
    assert not [e for e in watcher.errors if "does not match" in e or "unexpected" in e]
    assert (loop.root / PROD).stat().st_ino != inode
    assert loop.production()["version"] == "1.1.0"
    log = loop.run("git", "log", "-2", "--format=%s").stdout
    assert "model: tree-survival 1.1.0" in log and "data: add" in log
    assert "version: 1.1.0" in (loop.root / "params.yaml").read_text()
    assert loop.run("git", "status", "--porcelain").stdout == ""
    loop.digests["1.1.0"] = loop.production()["digest"]


def test_4_worse_challenger_is_kept(loop: Loop) -> None:
    before = loop.snapshot()
    loop.set_train(CRIPPLED)
    report = loop.retrain()
    assert report["decision"] == "kept"
    assert report["reasons"][0].startswith("ROC AUC") and " < " in report["reasons"][0]
    assert report["challenger"]["metrics"]["roc_auc"] < report["champion"]["metrics"]["roc_auc"]
    assert loop.snapshot()[:3] == before[:3]  # no tag, no commit, same production
    loop.run("git", "checkout", "-q", "--", ".")
    loop.run("dvc", "checkout", "-q")


def test_5_invalid_new_data_fails_and_changes_nothing(loop: Loop, tmp_path: Path) -> None:
    before = loop.snapshot()
    with loop.new_rows.open(newline="") as fh:
        rows = list(csv.reader(fh))
    header, row = rows[0], rows[1]
    row[header.index("Light_ISF")] = "bright"
    bad = tmp_path / "bad.csv"
    with bad.open("w", newline="") as fh:
        csv.writer(fh).writerows([header, rows[2], row])
    report = loop.retrain("--data", str(bad), ok=False)
    assert report["decision"] == "failed" and report["failed_step"] == "data"
    assert "nothing was added" in report["error"]
    assert [(i["line"], i["column"], i["value"]) for i in report["data_report"]["issues"]] == [
        (3, "Light_ISF", "bright")
    ]
    assert loop.snapshot() == before
    assert "failed at step `data`" in (loop.root / "reports/retrain.md").read_text()


def test_6_unreachable_remote_fails_before_anything_changes(loop: Loop) -> None:
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
    # Found at the pull, before a minute of training (test_crashes.py loses the
    # remote between the pull and the push).
    assert report["decision"] == "failed" and report["failed_step"] == "pull"
    assert f"the DVC remote 'tmp' ({blocker / 'remote'}) is unreachable" in report["error"]
    assert loop.snapshot() == before  # no tag, no commit, same production and data
    loop.run("git", "checkout", "-q", "--", ".")
    loop.run("dvc", "checkout", "-q")


def test_7_rollback_restores_the_previous_version_from_the_remote(loop: Loop) -> None:
    shutil.rmtree(loop.root / ".dvc" / "cache")  # only the remote has the old bundle now
    with Watcher(loop.root / PROD) as watcher:
        out = loop.run("treesurv", "registry", "rollback")
        time.sleep(0.2)
    assert "from 1.1.0 to 1.0.0" in out.stderr
    assert watcher.seen == ["1.1.0", "1.0.0"]
    assert loop.production()["digest"] == loop.digests["1.0.0"]
    listed = json.loads(loop.run("treesurv", "registry", "list", "--json").stdout)
    assert {r["version"]: r["stage"] for r in listed} == {"1.1.0": "", "1.0.0": "prod"}
    assert "tree-survival#prod#3" in loop.tags()
    # And forward again, by name.
    loop.run("treesurv", "registry", "promote", "1.1.0")
    assert loop.production()["digest"] == loop.digests["1.1.0"]


# -------------------------------------------------------------- the service


def _serve_available() -> bool:
    treesurv = Path(sys.executable).parent / "treesurv"
    out = subprocess.run([str(treesurv), "serve", "--help"], capture_output=True, timeout=60)
    return out.returncode == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
def service(loop: Loop) -> Iterator[str]:
    if not _serve_available():
        pytest.skip("needs `treesurv serve` (the serve branch); runs once it is merged")
    port = _free_port()
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


# ENABLED BY MERGING the serve branch: this test starts the real service on the
# production directory, then rolls back and promotes and watches it reload (by its
# directory watcher, then by POST /v1/admin/reload). It skips itself while this
# checkout has no `treesurv serve`, and runs once it has.
def test_8_the_served_model_reloads_to_the_promoted_version(loop: Loop, service: str) -> None:
    _wait_version(service, "1.1.0")
    loop.run("treesurv", "registry", "rollback")
    _wait_version(service, "1.0.0")  # the watcher saw the new bundle renamed in
    loop.run("treesurv", "registry", "promote", "1.1.0")
    key = "lifecycle-test-key"
    _get(
        f"{service}/v1/admin/reload",
        headers={"X-API-Key": key, "Authorization": f"Bearer {key}"},
        method="POST",
    )
    _wait_version(service, "1.1.0", seconds=5)


def test_9_the_shared_remote_was_never_written(loop: Loop) -> None:
    """Checked after the whole loop: the read-only shared remote is exactly as it was,
    and the loop's own remote received the versions."""
    assert Loop.shared_state() == loop.shared_before
    assert len(list(loop.remote.rglob("*.dir"))) >= 2  # two bundles (and more) pushed
