"""deploy/Dockerfile: hadolint-clean, and its entry command and health check work when
run as plain processes (no Docker engine here) on the real bundle."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    BIN,
    DOCKERFILE,
    ROOT,
    env_of,
    exec_form,
    free_port,
    instructions,
    request,
    running,
    runtime_stage,
    wait_for_workers,
)
from treesurv.core import schema


def test_hadolint_is_clean() -> None:
    proc = subprocess.run(
        [str(BIN / "hadolint"), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_shape() -> None:
    steps = instructions(DOCKERFILE.read_text())
    assert sum(word == "FROM" for word, _ in steps) >= 2  # multi-stage
    stage = runtime_stage()
    words = [w for w, _ in stage]
    user = next(rest for w, rest in stage if w == "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert words.index("USER") < words.index("CMD")
    assert "HEALTHCHECK" in words
    env = env_of(stage)
    assert env["NUMBA_CACHE_DIR"].startswith("/tmp/")
    assert "WEB_CONCURRENCY" in env
    install = next(
        rest for w, rest in instructions(DOCKERFILE.read_text()) if "pip install" in rest
    )
    assert "-c requirements/constraints.txt" in install
    assert re.findall(r"\.\[([^\]]*)\]", install) == ["serve"]  # no train/dev extras
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text()
    assert "!models/tree-survival/" in ignore and "!src/" in ignore


@pytest.mark.slow
def test_entry_command_and_healthcheck_as_plain_processes(bundle_dir: Path, tmp_path: Path) -> None:
    stage = runtime_stage()
    cmd = exec_form(next(rest for w, rest in stage if w == "CMD"))
    healthcheck = next(rest for w, rest in stage if w == "HEALTHCHECK")
    check = exec_form(re.sub(r"^(--\S+\s+)*CMD\s+", "", healthcheck))
    port = free_port()
    env: dict[str, Any] = {
        **env_of(stage),
        # What the image sets, with this machine's paths and a free loopback port.
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "TREESURV_MODEL_DIR": str(bundle_dir),
        "TREESURV_HOST": "127.0.0.1",
        "TREESURV_PORT": str(port),
        "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"),
        "TREESURV_WATCH_INTERVAL": "0",
    }
    cmd[0] = str(BIN / cmd[0])
    with running(cmd, env, port, tmp_path, "/readyz") as base:
        status, body = request(f"{base}/v1/predictions", {"instances": [schema.EXAMPLE]})
        assert status == 200 and 0 <= body["predictions"][0]["death_probability"] <= 1
        # WEB_CONCURRENCY workers, each with the model loaded.
        assert wait_for_workers(base, int(env["WEB_CONCURRENCY"]))
        check[0] = str(BIN / "python") if check[0] == "python" else check[0]
        proc = subprocess.run(check, env={**os.environ, **env}, capture_output=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
    # Once the server is gone the health check fails.
    proc = subprocess.run(check, env={**os.environ, **env}, capture_output=True, timeout=30)
    assert proc.returncode != 0
