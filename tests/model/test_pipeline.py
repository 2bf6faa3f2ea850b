"""The DVC pipeline on the real data: reproducible, honest and strong."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.helpers import run
from treesurv.core import schema
from treesurv.core.files import file_md5
from treesurv.core.validation import validate_file
from treesurv.inference.bundle import load_verified
from treesurv.training.stages import load_pipeline

pytestmark = pytest.mark.slow


def test_repro_builds_bundle_metrics_and_plots(pipeline_project: Path) -> None:
    p = pipeline_project
    for rel in (
        "metrics.json",
        "plots/roc.json",
        "plots/calibration.json",
        "plots/confusion.json",
        "plots/roc.png",
        "reports/model_card.md",
        "models/tree-survival/manifest.json",
    ):
        assert (p / rel).is_file(), rel
    run(["treesurv", "model", "verify", "models/tree-survival"], p)


def test_metrics_beat_the_original_models(pipeline_project: Path) -> None:
    metrics = json.loads((pipeline_project / "metrics.json").read_text())
    # Floors above the original notebook (about 0.90 / 0.12 here).
    assert metrics["cv"]["roc_auc"] >= 0.92
    assert metrics["cv"]["brier"] <= 0.115
    assert metrics["test"]["roc_auc"] >= 0.91
    assert metrics["test"]["brier"] <= 0.115
    assert metrics["cv_group"]["roc_auc"] >= 0.89  # a new field site
    for split in ("cv", "cv_group", "test"):
        assert set(metrics[split]) >= {"roc_auc", "brier", "log_loss", "accuracy", "ece"}
        assert metrics[split]["ece"] < 0.08


def test_second_repro_does_nothing(trained_copy: Path) -> None:
    out = run(["dvc", "repro"], trained_copy).stdout
    assert "Running stage" not in out
    assert "up to date" in run(["dvc", "status"], trained_copy).stdout


def test_dvc_metrics_and_plots_show(trained_copy: Path) -> None:
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], trained_copy).stdout)
    flat = json.dumps(shown)
    assert "roc_auc" in flat and "brier" in flat
    run(["dvc", "plots", "show", "-o", "dvc_plots"], trained_copy)
    html = (trained_copy / "dvc_plots" / "index.html").read_text()
    # Vega specs of the three JSON plots (by their axes) and the three images.
    for marker in (
        "false positive rate",
        '"title": "observed"',
        '"title": "actual"',
        "workspace_plots_roc.png",
        "workspace_plots_calibration.png",
        "workspace_plots_confusion.png",
        # The study report's series (explore stage): importances, light, survival curves.
        "ROC AUC lost",
        "share that died",
        "Kaplan-Meier survival by soil inoculum",
    ):
        assert marker in html, marker


def test_exp_run_with_a_changed_param(trained_copy: Path) -> None:
    # The decision threshold is a parameter of `evaluate` only: the experiment re-runs
    # evaluate and package on the trained models, and trains nothing again.
    out = run(
        ["dvc", "exp", "run", "-n", "low-threshold", "-S", "evaluate.threshold=0.35"],
        trained_copy,
    ).stdout
    ran = set(re.findall(r"Running stage '([\w-]+)'", out))
    assert ran == {"evaluate", "package"}, out
    table = json.loads(run(["dvc", "exp", "show", "--json"], trained_copy).stdout)
    text = json.dumps(table)
    assert "low-threshold" in text and "0.35" in text


# The stages that read the schema and the shared I/O (every one of them).
STAGES = {
    "validate",
    "prepare",
    "train",
    "train_planning",
    "train_survival",
    "evaluate",
    "explore",
    "package",
}


def stale_stages(project: Path) -> set[str]:
    """The stages `dvc status` reports as changed (a stage name, or dvc.yaml:name)."""
    status = json.loads(run(["dvc", "status", "--json"], project).stdout or "{}")
    return {name.rsplit(":", 1)[-1] for name in status}


def test_editing_the_schema_or_the_shared_io_makes_every_stage_stale(
    trained_copy: Path,
) -> None:
    assert stale_stages(trained_copy) == set()
    for rel in ("src/treesurv/core/schema.py", "src/treesurv/core/files.py"):
        with (trained_copy / rel).open("a") as fh:
            fh.write("# edited\n")
    assert stale_stages(trained_copy) == STAGES


def test_editing_what_no_stage_reads_leaves_the_pipeline_up_to_date(
    trained_copy: Path,
) -> None:
    with (trained_copy / "src/treesurv/serving/app.py").open("a") as fh:
        fh.write("# edited\n")
    assert stale_stages(trained_copy) == set()
    assert "up to date" in run(["dvc", "status"], trained_copy).stdout


def test_bundle_matches_sklearn_on_every_real_row(bundle_dir: Path, real_csv: Path) -> None:
    bundle, compiled = load_verified(bundle_dir)
    pipeline = load_pipeline(bundle_dir.parent / "model.skops")
    frame, _ = validate_file(real_csv)
    features = frame[list(schema.FEATURE_NAMES)]
    gap = np.max(np.abs(compiled.proba_columns(features) - pipeline.predict_proba(features)[:, 1]))
    assert gap < 1e-6
    manifest = bundle.manifest
    assert manifest["data"]["md5"] == file_md5(real_csv)
    assert set(manifest["files"]) >= {"model.skops", "predictor.npz", "model_card.md"}
    assert manifest["schema"]["features"][0]["name"] == "Species"
    assert "sklearn" not in json.dumps(manifest["model"]["features"])


def test_model_card_states_the_limits(bundle_dir: Path) -> None:
    card = (bundle_dir / "model_card.md").read_text()
    assert "taken at harvest\n  or at death" in card or "at harvest or at death" in card.replace(
        "\n  ", " "
    )
    for heading in ("## Data", "## Features", "## Metrics", "## Intended use", "## Limits"):
        assert heading in card


# ---------------------------------------------------------------- behaviour


@pytest.fixture(scope="module")
def scored(bundle_dir: Path, real_csv: Path) -> tuple[Any, pd.DataFrame]:
    _, compiled = load_verified(bundle_dir)
    frame, _ = validate_file(real_csv)
    return compiled, frame


def test_invariance_to_columns_the_model_ignores(scored: tuple[Any, pd.DataFrame]) -> None:
    compiled, frame = scored
    base = compiled.proba_columns(frame)
    shuffled = frame.copy()
    for col in ("Plot", "Census", "Time", "Harvest", "Alive", "No"):
        shuffled[col] = np.random.default_rng(0).permutation(shuffled[col].to_numpy())
    np.testing.assert_array_equal(compiled.proba_columns(shuffled), base)


def test_direction_species(scored: tuple[Any, pd.DataFrame]) -> None:
    # In the study, about 85% of the AMF-species seedlings died and 25% of the oaks.
    compiled, frame = scored
    p = compiled.proba_columns(frame)
    amf = frame["Species"].map(schema.SPECIES_MYCO).eq("AMF").to_numpy()
    assert p[amf].mean() > p[~amf].mean() + 0.4


def test_direction_sterile_soil_saves_amf_seedlings(scored: tuple[Any, pd.DataFrame]) -> None:
    # Maple and cherry died far less in sterilised soil (about 63% against 90%):
    # soil pathogens. The model must show the same direction on those rows.
    compiled, frame = scored
    p = compiled.proba_columns(frame)
    amf = frame["Species"].map(schema.SPECIES_MYCO).eq("AMF").to_numpy()
    sterile = frame["Sterile"].eq("Sterile").to_numpy()
    assert p[amf & sterile].mean() < p[amf & ~sterile].mean() - 0.15


def test_probabilities_are_probabilities(scored: tuple[Any, pd.DataFrame]) -> None:
    compiled, frame = scored
    p = compiled.proba_columns(frame)
    assert np.all((p >= 0) & (p <= 1))
    assert 0.3 < p.mean() < 0.8
