"""The pipeline's stages as commands: what dvc.yaml runs (`treesurv prepare`, ...)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

import typer

from treesurv.cli.console import PARAMS_FILE, ParamsOpt, load

log = logging.getLogger(__name__)


class Variant(StrEnum):
    full = "full"
    planning = "planning"


def prepare(params_path: ParamsOpt = PARAMS_FILE) -> None:
    """Feature table, train/test split and the reference profile."""
    from treesurv.training.stages import stage_prepare

    rows = stage_prepare(load(params_path))
    log.info("prepared %d training and %d test rows", rows["train"], rows["test"])


def train(
    params_path: ParamsOpt = PARAMS_FILE,
    variant: Annotated[
        Variant, typer.Option(help="full: every feature; planning: the design variables only.")
    ] = Variant.full,
) -> None:
    """Search the candidates, cross-validate, calibrate, fit."""
    from treesurv.training.stages import stage_train

    stage_train(load(params_path), log.info, variant.value)


def train_survival(params_path: ParamsOpt = PARAMS_FILE) -> None:
    """The survival models (full and planning), chosen by CV."""
    from treesurv.training.stages import stage_train_survival

    stage_train_survival(load(params_path), log.info)


def evaluate(params_path: ParamsOpt = PARAMS_FILE) -> None:
    """metrics.json, plots and the model card."""
    from treesurv.training.stages import stage_evaluate

    metrics = stage_evaluate(load(params_path))
    for name, block in (("full", metrics), ("planning", metrics["planning"])):
        for split in ("cv", "cv_group", "test"):
            m = block[split]
            log.info(
                "%-8s %-8s ROC AUC %.4f  Brier %.4f  accuracy %.4f  ECE %.4f",
                name,
                split,
                m["roc_auc"],
                m["brier"],
                m["accuracy"],
                m["ece"],
            )
    for name in ("full", "planning"):
        for split in ("cv", "test"):
            m = metrics["survival"][name][split]
            log.info(
                "survival %-8s %-4s concordance %.4f  integrated Brier %.4f",
                name,
                split,
                m["concordance"],
                m["integrated_brier"],
            )


def explore(params_path: ParamsOpt = PARAMS_FILE) -> None:
    """The study report: counts, traits, light, survival curves, what the model uses."""
    from treesurv.inference.bundle import EXPLORE_HTML
    from treesurv.training.exploration import stage_explore

    params = load(params_path)
    report = stage_explore(params)
    log.info(
        "study report (%d sections) written to %s",
        len(report["sections"]),
        params.paths.explore / EXPLORE_HTML,
    )


def package(
    params_path: ParamsOpt = PARAMS_FILE,
    version: Annotated[str | None, typer.Option(help="Model version (semver).")] = None,
) -> None:
    """Compile the model and write the verified bundle."""
    from treesurv.training.packaging import stage_package

    params = load(params_path)
    manifest = stage_package(params, version)
    log.info(
        "bundle %s %s written to %s", manifest["name"], manifest["version"], params.paths.bundle
    )


COMMANDS: list[tuple[str, Callable[..., Any]]] = [
    ("prepare", prepare),
    ("train", train),
    ("train-survival", train_survival),
    ("evaluate", evaluate),
    ("explore", explore),
    ("package", package),
]
