"""A real server process started without a usable model: it stays up, /readyz says 503
with the reason, and it becomes ready when a valid bundle is renamed into place."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import BIN, free_port, request, running

pytestmark = pytest.mark.slow


def missing(model: Path) -> None:
    model.parent.mkdir(parents=True, exist_ok=True)


def a_file(model: Path) -> None:
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_text("not a bundle\n")


def unreadable_manifest(model: Path) -> None:
    # Root reads any file whatever its mode, so the unreadable manifest is a directory.
    (model / "manifest.json").mkdir(parents=True)


def garbage_manifest(model: Path) -> None:
    model.mkdir(parents=True)
    (model / "manifest.json").write_bytes(b"\x00\xff{")


@pytest.mark.parametrize(
    ("break_it", "reason"),
    [
        (missing, "no model bundle here"),
        (a_file, "no model bundle here"),
        (unreadable_manifest, "cannot read manifest.json"),
        (garbage_manifest, "manifest.json is not valid JSON"),
    ],
)
def test_unusable_model_at_start_then_a_valid_bundle_appears(
    bundle_dir: Path, tmp_path: Path, break_it: Callable[[Path], None], reason: str
) -> None:
    model = tmp_path / "models" / "tree-survival"
    break_it(model)
    port = free_port()
    cmd = [str(BIN / "treesurv"), "serve", "--port", str(port), "--model", str(model)]
    with running(cmd, {"TREESURV_WATCH_INTERVAL": "0.2"}, port, tmp_path) as base:
        status, body = request(f"{base}/readyz")
        assert status == 503 and body["status"] == "not ready"
        assert reason in body["reason"], body
        assert request(f"{base}/healthz")[0] == 200
        status, _ = request(f"{base}/v1/predictions", {"instances": []})
        assert status in (422, 503)
        time.sleep(1.0)  # the watcher polls the broken path several times: still up, not ready
        assert request(f"{base}/readyz")[0] == 503
        # A deploy: the bundle written beside the path and renamed into place.
        staging = model.with_name(".staging")
        shutil.copytree(bundle_dir, staging)
        if model.is_dir():
            shutil.rmtree(model)
        elif model.exists():
            os.unlink(model)
        staging.rename(model)
        deadline = time.monotonic() + 30
        while request(f"{base}/readyz")[0] != 200:
            assert time.monotonic() < deadline, "not ready 30 s after a valid bundle appeared"
            time.sleep(0.1)
        status, body = request(f"{base}/readyz")
        assert body["status"] == "ready" and body["model_version"]
