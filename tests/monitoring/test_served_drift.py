"""The issue's done-when, end to end: traffic through a real `treesurv serve` process
(the pipeline's bundle, the prediction log on) over every prediction endpoint, then
the real `treesurv monitor drift` CLI on the log it wrote. Shifted light and soil
are flagged, and nothing else; traffic resampled from the real data flags nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.helpers import BIN, free_port, records, request, running
from tests.helpers import drift_cli as drift
from treesurv.core import schema
from treesurv.monitoring.prediction_log.reader import read_log

pytestmark = pytest.mark.slow
SHIFTED = ["Light_ISF", "Soil"]
ROWS = 1000


def shift_light_and_soil(rows: pd.DataFrame) -> pd.DataFrame:
    """Brighter plots, and heterospecific soil all from one source (Acer rubrum, not
    a seedling species): Sterile and Conspecific, and every rule, stay as they were."""
    out = rows.copy()
    out["Light_ISF"] = (out["Light_ISF"] + 0.04).clip(upper=1.0)
    out.loc[out["Conspecific"] == "Heterospecific", "Soil"] = "Acer rubrum"
    return out


def as_instances(rows: pd.DataFrame) -> list[dict[str, Any]]:
    frame = rows[list(schema.FEATURE_NAMES)].astype(object)
    frame = frame.where(frame.notna(), None)
    return records(frame)


def tensors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": f.name,
            "shape": [len(rows)],
            "datatype": "BYTES" if f.kind == "categorical" else "FP64",
            "data": [r[f.name] for r in rows],
        }
        for f in schema.FEATURES
    ]


def serve_traffic(bundle_dir: Path, log_dir: Path, cwd: Path, rows: list[dict[str, Any]]) -> int:
    """Send the rows through all three prediction endpoints; return the requests made."""
    port = free_port()
    env = {"TREESURV_PREDICTION_LOG_DIR": str(log_dir), "TREESURV_WATCH_INTERVAL": "0"}
    cmd = [str(BIN / "treesurv"), "serve", "--port", str(port), "--model", str(bundle_dir)]
    sent = 0
    with running(cmd, env, port, cwd, ready="/readyz") as base:
        model = request(f"{base}/v1/model")[1]["name"]
        batches, v2, singles = rows[:600], rows[600:800], rows[800:]
        for i in range(0, len(batches), 50):
            status, body = request(f"{base}/v1/predictions", {"instances": batches[i : i + 50]})
            assert status == 200, body
            sent += 1
        for i in range(0, len(v2), 40):
            chunk = v2[i : i + 40]
            status, body = request(f"{base}/v2/models/{model}/infer", {"inputs": tensors(chunk)})
            assert status == 200, body
            sent += 1
        for row in singles:
            status, body = request(f"{base}/v1/predic", row)
            assert status == 200, body
            sent += 1
    # `running` stopped the server with SIGTERM: the log is flushed.
    return sent


@pytest.fixture(scope="module")
def real_rows(pipeline_project: Path) -> pd.DataFrame:
    # The held-out rows of the real data: the model never trained on them.
    return pd.read_parquet(pipeline_project / "data" / "processed" / "test.parquet")


@pytest.mark.parametrize("shifted", [True, False], ids=["shifted", "unshifted"])
def test_drift_on_the_log_of_the_real_server(
    shifted: bool,
    pipeline_project: Path,
    bundle_dir: Path,
    real_rows: pd.DataFrame,
    tmp_path: Path,
) -> None:
    rows = real_rows.sample(ROWS, replace=True, random_state=21).reset_index(drop=True)
    if shifted:
        rows = shift_light_and_soil(rows)
    log_dir = tmp_path / "predictions"
    requests = serve_traffic(bundle_dir, log_dir, tmp_path, as_instances(rows))

    logged = read_log(log_dir).frame
    assert len(logged) == ROWS and logged["request_id"].nunique() == requests
    assert np.allclose(logged["Light_ISF"].to_numpy(), rows["Light_ISF"].to_numpy())
    assert logged["Soil"].tolist() == rows["Soil"].tolist()

    code, report, output = drift(pipeline_project, log_dir, bundle_dir, tmp_path)
    assert report["rows"] == ROWS
    if shifted:
        assert code == 3, output
        assert report["status"] == "drift"
        assert report["drifted_features"] == SHIFTED
        for name in SHIFTED:
            assert report["features"][name]["psi"] >= 0.2
    else:
        assert code == 0, output
        assert report["status"] == "ok" and report["drifted_features"] == []
        assert not report["prediction_drifted"]
