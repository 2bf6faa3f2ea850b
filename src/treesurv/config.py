"""Paths and parameters: one place for both.

The pipeline's paths live in the `paths` section of params.yaml, which dvc.yaml
templates into its stages; `DEFAULT_PATHS` mirrors them for commands run by hand
(a test keeps the two equal). Reading params.yaml happens only when asked.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = Path("params.yaml")
MODEL_NAME = "tree-survival"


@dataclass(frozen=True)
class Paths:
    raw: Path = Path("data/raw/Tree_Data.csv")
    validated: Path = Path("data/interim/validated.parquet")
    validation_report: Path = Path("reports/validation.json")
    train: Path = Path("data/processed/train.parquet")
    test: Path = Path("data/processed/test.parquet")
    profile: Path = Path("data/processed/reference_profile.json")
    model: Path = Path("models/model.skops")
    train_report: Path = Path("models/train_report.json")
    oof: Path = Path("models/oof.parquet")
    metrics: Path = Path("metrics.json")
    plots: Path = Path("plots")
    card: Path = Path("reports/model_card.md")
    bundle: Path = Path(f"models/{MODEL_NAME}")
    planning_model: Path = Path("models/planning.skops")
    planning_train_report: Path = Path("models/planning_train_report.json")
    planning_oof: Path = Path("models/planning_oof.parquet")
    survival_model: Path = Path("models/survival.skops")
    planning_survival_model: Path = Path("models/planning_survival.skops")
    survival_report: Path = Path("models/survival_report.json")
    survival_oof: Path = Path("models/survival_oof.parquet")

    def classifier_outputs(self, variant: str) -> tuple[Path, Path, Path]:
        """Fitted pipeline, training report and out-of-fold predictions of a variant."""
        if variant == "planning":
            return self.planning_model, self.planning_train_report, self.planning_oof
        return self.model, self.train_report, self.oof

    def survival_pipeline(self, variant: str) -> Path:
        return self.planning_survival_model if variant == "planning" else self.survival_model

    def fitted(self, variant: str, kind: str) -> Path:
        """The fitted pipeline (skops) of a sub-model: classifier or survival."""
        if kind == "classifier":
            return self.classifier_outputs(variant)[0]
        return self.survival_pipeline(variant)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Paths:
        given = params.get("paths", {})
        return cls(**{f.name: Path(given[f.name]) for f in fields(cls) if f.name in given})


DEFAULT_PATHS = Paths()


class ParamsError(Exception):
    pass


def load_params(path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such parameters file") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of parameters")
    return params


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    value = params.get(name)
    if not isinstance(value, dict):
        raise ParamsError(f"params: missing section {name!r}")
    return value


@dataclass(frozen=True)
class LifecycleConfig:
    """The `retrain` section of params.yaml: the registry stage, where the production
    bundle lives and the champion/challenger gate. No pipeline stage depends on it,
    so changing it never re-runs training."""

    stage: str = "prod"
    production_dir: Path = Path("models/production")
    store: Path = Path("models/registry")
    roc_auc_tolerance: float = 0.005
    brier_tolerance: float = 0.002
    min_eval_rows: int = 50
    report: Path = Path("reports/retrain.json")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> LifecycleConfig:
        given = params.get("retrain") or {}
        if not isinstance(given, dict):
            raise ParamsError("params: section 'retrain' must be a mapping")
        unknown = sorted(set(given) - {f.name for f in fields(cls)})
        if unknown:
            raise ParamsError(f"params: unknown key(s) in 'retrain': {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in given:
                continue
            default = getattr(cls, f.name)
            try:
                values[f.name] = type(default)(given[f.name])
            except (TypeError, ValueError):
                raise ParamsError(
                    f"params: retrain.{f.name} must be a {type(default).__name__}, "
                    f"not {given[f.name]!r}"
                ) from None
        config = cls(**values)
        if config.roc_auc_tolerance < 0 or config.brier_tolerance < 0:
            raise ParamsError("params: retrain tolerances cannot be negative")
        return config
