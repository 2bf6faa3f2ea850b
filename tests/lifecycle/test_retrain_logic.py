"""The champion/challenger gate, the shared evaluation rows and the report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from treesurv.core import schema
from treesurv.core.config import Params, ParamsError, RetrainParams
from treesurv.core.split import holdout_mask
from treesurv.lifecycle.retrain import (
    RetrainError,
    decide,
    evaluation_rows,
    render_markdown,
    same_predictor,
    set_package_version,
)

GATE = RetrainParams(roc_auc_tolerance=0.005, brier_tolerance=0.002)
CHAMP = {"roc_auc": 0.930, "brier": 0.100}


def test_first_model_is_promoted_without_a_champion() -> None:
    decision = decide({"roc_auc": 0.6, "brier": 0.3}, None, GATE)
    assert decision.promote
    assert "no model is in production" in decision.reasons[0]


def test_the_production_model_itself_is_never_promoted_again() -> None:
    decision = decide(CHAMP, CHAMP, GATE, same_model=True)
    assert not decision.promote


@pytest.mark.parametrize(
    ("auc", "brier", "promote"),
    [
        (0.930, 0.100, True),  # equal
        (0.925, 0.100, True),  # AUC exactly at the tolerance
        (0.9249, 0.100, False),  # just below it
        (0.950, 0.102, True),  # Brier exactly at the tolerance
        (0.950, 0.1021, False),  # better AUC does not excuse a worse Brier
        (0.900, 0.090, False),  # better Brier does not excuse a worse AUC
    ],
)
def test_gate_uses_both_metrics_with_their_tolerances(
    auc: float, brier: float, promote: bool
) -> None:
    decision = decide({"roc_auc": auc, "brier": brier}, CHAMP, GATE)
    assert decision.promote is promote
    assert len(decision.reasons) == 2
    assert ("<" in decision.reasons[0] or ">" in decision.reasons[1]) is not promote


def test_gate_refuses_undefined_metrics() -> None:
    with pytest.raises(RetrainError, match="undefined"):
        decide({"roc_auc": math.nan, "brier": 0.1}, CHAMP, GATE)


def test_lifecycle_params_are_checked() -> None:
    assert Params.parse({}).retrain == RetrainParams()
    cfg = Params.parse({"retrain": {"roc_auc_tolerance": "0.01", "stage": "live"}}).retrain
    assert cfg.roc_auc_tolerance == 0.01 and cfg.stage == "live"
    with pytest.raises(ParamsError, match=r"retrain\.auc_tol: Extra inputs are not permitted"):
        Params.parse({"retrain": {"auc_tol": 0.1}})
    with pytest.raises(ParamsError, match=r"retrain\.brier_tolerance: .*valid number.*'lots'"):
        Params.parse({"retrain": {"brier_tolerance": "lots"}})
    with pytest.raises(
        ParamsError, match=r"retrain\.brier_tolerance: .*greater than or equal to 0"
    ):
        Params.parse({"retrain": {"brier_tolerance": -1}})


def test_evaluation_rows_exclude_rows_the_champion_trained_on() -> None:
    ids = np.arange(1, 2001)
    test_mask = holdout_mask(ids, 20, "salt-a")
    test = pd.DataFrame({schema.ID: ids[test_mask], schema.TARGET: 0})
    same = {"params": {"data": {"test_percent": 20, "split_salt": "salt-a"}}}
    assert len(evaluation_rows(test, same)) == len(test)
    # A champion split with another salt held out other rows: only the rows held
    # out by both splits are fair to both models.
    other = {"params": {"data": {"test_percent": 20, "split_salt": "salt-b"}}}
    rows = evaluation_rows(test, other)
    both = set(ids[test_mask & holdout_mask(ids, 20, "salt-b")])
    assert set(rows[schema.ID]) == both
    assert 0 < len(rows) < len(test)
    assert len(evaluation_rows(test, None)) == len(test)


def test_same_predictor_compares_the_compiled_files_only() -> None:
    files = {"predictor.json": {"sha256": "a"}, "predictor.npz": {"sha256": "b"}}
    a = {"version": "1.0.0", "created": "x", "files": files}
    b = {"version": "2.0.0", "created": "y", "files": dict(files)}
    assert same_predictor(a, b)
    c = {"files": {**files, "predictor.npz": {"sha256": "c"}}}
    assert not same_predictor(a, c)
    assert not same_predictor({}, {})


PARAMS_TEXT = """\
seed: 42
data:
  version: 7          # not the package version
package:
  name: tree-survival
  version: 1.0.0      # semver
retrain:
  stage: prod
"""


def test_set_package_version_keeps_comments_and_other_keys() -> None:
    text = set_package_version(PARAMS_TEXT, "1.3.0")
    assert "  version: 1.3.0      # semver\n" in text
    assert "  version: 7          # not the package version" in text
    parsed = yaml.safe_load(text)
    assert parsed["package"]["version"] == "1.3.0" and parsed["data"]["version"] == 7
    with pytest.raises(RetrainError, match=r"package\.version"):
        set_package_version("package:\n  name: x\nother:\n  version: 1\n", "1.0.0")


def _report(decision: str, **extra: object) -> dict[str, object]:
    metrics = {"roc_auc": 0.93, "brier": 0.10, "log_loss": 0.32, "accuracy": 0.86, "ece": 0.04}
    base: dict[str, object] = {
        "decision": decision,
        "model": "tree-survival",
        "gate": {"roc_auc_tolerance": 0.005, "brier_tolerance": 0.002},
        "evaluation": {"rows": 480},
        "challenger": {"metrics": {**metrics, "roc_auc": 0.94}, "model": "forest"},
        "champion": {"version": "1.0.0", "metrics": metrics, "model": "hgb"},
        "data": {"path": "data/raw/Tree_Data.csv", "md5": "0123456789abcdef", "rows": 2365},
        "plots": ["retrain/roc.png"],
    }
    base.update(extra)
    return base


def test_markdown_report_has_the_decision_and_the_change_table() -> None:
    md = render_markdown(_report("promoted", version="1.1.0", reasons=["ROC AUC up"]))
    assert md.startswith("# Retrain: promoted tree-survival 1.1.0")
    assert "| metric | production 1.0.0 | challenger | change |" in md
    assert "| ROC AUC ↑ | 0.9300 | 0.9400 | +0.0100 ✓ |" in md
    assert "![roc](retrain/roc.png)" in md
    assert "- ROC AUC up" in md
    assert "Models: production 1.0.0 hgb, challenger forest." in md
    kept = render_markdown(_report("kept"))
    assert "kept tree-survival 1.0.0 in production" in kept


def test_markdown_report_of_a_failure_says_production_is_unchanged() -> None:
    md = render_markdown(
        _report("failed", failed_step="push", error="remote unreachable", challenger={})
    )
    assert "failed at step `push`" in md
    assert "remote unreachable" in md and "were not changed" in md
    assert "| metric |" not in md


def test_markdown_report_of_a_first_model_shows_only_the_challenger() -> None:
    md = render_markdown(_report("promoted", version="1.0.0", champion=None))
    assert "| metric | challenger |" in md
    assert "| metric | production" not in md
