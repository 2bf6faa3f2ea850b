"""Paths and parameters: one place for both.

The pipeline's paths live in the `paths` section of params.yaml, which dvc.yaml
templates into its stages; `DEFAULT_PATHS` mirrors them for commands run by hand
(a test keeps the two equal). Reading params.yaml happens only when asked.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from treesurv.core.errors import InputError
from treesurv.core.schema import DESIGN

PARAMS_FILE = Path("params.yaml")
MODEL_NAME = "tree-survival"
# The model variants: `full` sees every feature, `planning` the design known before
# planting; each has a classifier and a survival model.
VARIANTS = ("full", "planning")


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
    explore: Path = Path("reports/explore")
    explore_plots: Path = Path("plots/explore")

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


class ParamsError(InputError):
    """params.yaml is missing, not YAML, or has a key or value the pipeline cannot use."""


def load_params(path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as a mapping (the typed view is `Params.parse`)."""
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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Grids = dict[str, dict[str, list[Any]]]


class DataParams(_Section):
    test_percent: float = 20.0  # held-out share, assigned by a hash of the seedling id
    split_salt: str = "treesurv-1"
    profile_bins: int = Field(10, ge=2)


class FeatureParams(_Section):
    cell_z: bool = True  # each trait's z-score within its Species x Soil cell
    columns: tuple[str, ...] | None = None  # None: every feature of the schema


class TrainParams(_Section):
    candidates: tuple[str, ...] = ("logreg", "gboost", "hgb", "forest", "forest_hgb")
    select_by: Literal["roc_auc", "brier", "log_loss"] = "roc_auc"
    cv_folds: int = Field(5, ge=2)
    group_folds: int = Field(6, ge=2)
    search_iterations: int = Field(6, ge=1)
    vote_top: int = Field(2, ge=1)
    calibration: Literal["auto", "sigmoid", "isotonic", "none"] = "auto"
    calibration_min_gain: float = 0.001
    calibration_folds: int = Field(5, ge=2)
    grids: Grids = Field(default_factory=dict)


class PlanningParams(_Section):
    """Keys of `train` that the planning classifier overrides (unset: as in `train`)."""

    candidates: tuple[str, ...] | None = None
    select_by: Literal["roc_auc", "brier", "log_loss"] | None = None
    cv_folds: int | None = Field(None, ge=2)
    group_folds: int | None = Field(None, ge=2)
    search_iterations: int | None = Field(None, ge=1)
    vote_top: int | None = Field(None, ge=1)
    calibration: Literal["auto", "sigmoid", "isotonic", "none"] | None = None
    calibration_min_gain: float | None = None
    calibration_folds: int | None = Field(None, ge=2)
    grids: Grids | None = None


class SurvivalParams(_Section):
    candidates: tuple[str, ...] = ("cox", "gbsa")
    site: bool = False  # the field plot as an optional input
    select_by: Literal["concordance", "integrated_brier"] = "concordance"
    concordance_tolerance: float = Field(0.0, ge=0)
    cv_folds: int = Field(5, ge=2)
    search_iterations: int = Field(2, ge=1)
    horizons: tuple[float, ...] = ()
    risk_groups: int = Field(4, ge=1)
    default_days: tuple[float, ...] = (14, 28, 42, 56, 70, 84, 98, 112, 115.5)
    grids: Grids = Field(default_factory=dict)


class EvaluateParams(_Section):
    threshold: float = Field(0.5, gt=0, lt=1)  # predicted_event = 1 when P(death) >= it
    calibration_bins: int = Field(10, ge=2)


class ExploreParams(_Section):
    """The study report (`treesurv explore`); its random steps use the top-level seed."""

    light_bins: int = Field(5, ge=2)  # equal-sized light groups of the death-rate plot
    importance_repeats: int = Field(10, ge=1)  # shuffles per input (permutation importance)


class PackageParams(_Section):
    name: str = MODEL_NAME
    version: str = "1.0.0"


class RetrainParams(_Section):
    """The registry stage, where the production bundle lives and the champion/challenger
    gate. No pipeline stage depends on it, so changing it never re-runs training."""

    stage: str = "prod"
    production_dir: Path = Path("models/production")
    store: Path = Path("models/registry")
    roc_auc_tolerance: float = Field(0.005, ge=0)
    brier_tolerance: float = Field(0.002, ge=0)
    min_eval_rows: int = Field(50, ge=1)
    report: Path = Path("reports/retrain.json")


class MonitorParams(_Section):
    """The drift check's graded verdict per column: `drift` when PSI >= psi_threshold
    and p < p_value (exit 3); else `warn` when PSI >= warn_psi_threshold and
    p < warn_p_value (exit 0, reported); else `ok`."""

    psi_threshold: float = Field(0.2, gt=0)
    p_value: float = Field(0.01, gt=0, lt=1)
    prediction_psi_threshold: float = Field(0.2, gt=0)
    min_rows: int = Field(200, ge=1)
    # Calibrated on resamples of the study (tests/monitoring/test_drift_calibration.py).
    warn_psi_threshold: float = Field(0.1, gt=0)
    warn_p_value: float = Field(0.001, gt=0, lt=1)


class Params(_Section):
    """The typed view of params.yaml: every stage and command reads it through this,
    and each default is written here once."""

    seed: int = 42
    paths: Paths = Field(default_factory=Paths)
    data: DataParams = Field(default_factory=DataParams)
    features: FeatureParams = Field(default_factory=FeatureParams)
    train: TrainParams = Field(default_factory=TrainParams)
    planning: PlanningParams = Field(default_factory=PlanningParams)
    survival: SurvivalParams = Field(default_factory=SurvivalParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    explore: ExploreParams = Field(default_factory=ExploreParams)
    package: PackageParams = Field(default_factory=PackageParams)
    retrain: RetrainParams = Field(default_factory=RetrainParams)
    monitor: MonitorParams = Field(default_factory=MonitorParams)
    # The mapping as written, kept in the bundle's manifest for the record.
    raw: dict[str, Any] = Field(default_factory=dict, exclude=True, repr=False)

    @classmethod
    def parse(cls, raw: dict[str, Any], source: Path | str = PARAMS_FILE) -> Params:
        try:
            return cls.model_validate({**raw, "raw": raw})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            given = "" if first["type"] == "missing" else f" (got {first.get('input')!r})"
            raise ParamsError(f"{source}: {where}: {first['msg']}{given}") from None

    @classmethod
    def load(cls, path: Path | str = PARAMS_FILE) -> Params:
        return cls.parse(load_params(path), path)

    def variant(self, variant: str) -> Params:
        """The parameters of a classifier variant: `planning` sees only the design
        columns, with `planning` overriding `train`."""
        if variant == "full":
            return self
        if variant != "planning":
            raise ParamsError(f"unknown model variant {variant!r}; known: {', '.join(VARIANTS)}")
        overrides = self.planning.model_dump(exclude_none=True)
        return self.model_copy(
            update={
                "features": self.features.model_copy(update={"columns": tuple(DESIGN)}),
                "train": self.train.model_copy(update=overrides),
            }
        )
