"""The service as a real process on 127.0.0.1: uvicorn (1 worker) and gunicorn (2),
on the real pipeline's bundle."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import (
    BIN,
    free_port,
    instances,
    request,
    run_fresh_python,
    running,
    wait_for_workers,
)
from treesurv.core import schema
from treesurv.inference.bundle import load_verified

pytestmark = pytest.mark.slow


def test_uvicorn_server_on_the_real_bundle(
    bundle_dir: Path, real_study: pd.DataFrame, tmp_path: Path
) -> None:
    port = free_port()
    cmd = [str(BIN / "treesurv"), "serve", "--port", str(port), "--model", str(bundle_dir)]
    bundle, compiled = load_verified(bundle_dir)
    rows = real_study.sample(200, random_state=4)
    with running(cmd, {"TREESURV_WATCH_INTERVAL": "0"}, port, tmp_path, "/readyz") as base:
        status, body = request(f"{base}/v1/predictions", {"instances": instances(rows)})
        assert status == 200
        assert body["model_version"] == bundle.version
        got = [p["death_probability"] for p in body["predictions"]]
        np.testing.assert_allclose(got, compiled.proba_columns(rows), atol=1e-12)
        status, legacy = request(f"{base}/v1/predic", instances(rows.head(1))[0])
        assert status == 200 and legacy["Event"] in (0.0, 1.0)
        status, bad = request(f"{base}/v1/predictions", {"instances": [{"Species": "Oak"}]})
        assert status == 422 and bad["detail"][0]["field"] == "instances[0].Species"
        status, text = request(f"{base}/metrics")
        assert status == 200 and "treesurv_model_info" in text


def test_gunicorn_workers_share_their_metrics(bundle_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    cmd = [str(BIN / "treesurv"), "serve", "--port", str(port), "--workers", "2"]
    env = {"TREESURV_MODEL_DIR": str(bundle_dir), "TREESURV_WATCH_INTERVAL": "0"}
    with running(cmd, env, port, tmp_path, "/readyz") as base:
        for _ in range(30):
            assert request(f"{base}/v1/predictions", {"instances": [schema.EXAMPLE]})[0] == 200
        _, text = request(f"{base}/metrics")
        pattern = (
            r"^treesurv_http_requests_total\{[^}]*"
            r'route="/v1/predictions"[^}]*status="200"[^}]*\} (\S+)$'
        )
        line = re.search(pattern, text, re.M)
        assert line and float(line.group(1)) == 30  # summed over both workers
        # Each worker loaded and verified the bundle itself.
        assert wait_for_workers(base, 2)


def test_starts_without_a_model_and_picks_it_up(bundle_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    model = tmp_path / "models" / "tree-survival"
    cmd = [str(BIN / "treesurv"), "serve", "--port", str(port), "--model", str(model)]
    with running(cmd, {"TREESURV_WATCH_INTERVAL": "0.2"}, port, tmp_path) as base:
        status, body = request(f"{base}/readyz")
        assert status == 503 and "no model bundle here" in body["reason"]
        model.parent.mkdir(parents=True)
        staging = model.with_name(".staging")
        shutil.copytree(bundle_dir, staging)
        staging.rename(model)
        for _ in range(100):
            if request(f"{base}/readyz")[0] == 200:
                break
            time.sleep(0.1)
        assert request(f"{base}/readyz")[0] == 200


def test_serving_never_imports_scikit_learn(bundle_dir: Path) -> None:
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from treesurv.serving.app import create_app\n"
        "from treesurv.serving.settings import Settings\n"
        "from treesurv.core import schema\n"
        f"app = create_app(Settings(model_dir={str(bundle_dir)!r}, watch_interval=0))\n"
        "with TestClient(app) as c:\n"
        "    r = c.post('/v1/predictions', json={'instances': [schema.EXAMPLE]})\n"
        "    assert r.status_code == 200, r.text\n"
        "    assert c.get('/explore').status_code == 200\n"  # the study report, from the bundle
        # (SciPy is absent from the image; here Numba imports it when it is installed.)
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'skops', 'sksurv')\n"
        "             or m.startswith(('treesurv.training', 'treesurv.lifecycle')))\n"
        "assert not bad, bad\n"
    )
    run_fresh_python(code)
