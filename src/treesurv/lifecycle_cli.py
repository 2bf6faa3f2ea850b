"""The lifecycle commands of `treesurv`: `registry ...`, `data add` and `retrain`.

Thin layers over `treesurv.registry`, `treesurv.ingest` and `treesurv.lifecycle`;
`treesurv.cli` mounts them. Heavy imports (GTO, DVC, pandas) happen inside the
commands, so `treesurv --help` and the service stay light.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer

if TYPE_CHECKING:
    from treesurv.registry import Registry

log = logging.getLogger("treesurv")
F = TypeVar("F", bound=Callable[..., Any])

registry_app = typer.Typer(
    help="Model versions and the production stage (GTO tags; bundles from DVC).",
    no_args_is_help=True,
)

ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameters file (params.yaml).")]
PARAMS = Path("params.yaml")


def _context(params_path: Path) -> tuple[Registry, Path, Path]:
    """The registry of the current repository, the production directory and the
    pipeline's bundle, from params.yaml."""
    from treesurv.cli import _params, fail
    from treesurv.config import LifecycleConfig, ParamsError
    from treesurv.registry import Registry

    params, paths = _params(params_path)
    try:
        config = LifecycleConfig.from_params(params)
    except ParamsError as exc:
        raise fail(str(exc)) from None
    name = str(params.get("package", {}).get("name", "tree-survival"))
    reg = Registry(Path.cwd(), name, config.store / name, config.stage, paths.metrics)
    return reg, config.production_dir, paths.bundle


@contextmanager
def _guarded() -> Iterator[None]:
    """Hold the lifecycle lock; first finish or undo an operation a crash interrupted."""
    from treesurv.cli import err, fail
    from treesurv.ingest import IngestError
    from treesurv.journal import locked
    from treesurv.lifecycle import recover
    from treesurv.registry import RegistryError
    from treesurv.vcs import CommandError

    with ExitStack() as stack:
        try:
            stack.enter_context(locked(Path.cwd()))
            recover(Path.cwd(), log=lambda m: err.print(m, highlight=False))
        except (OSError, IngestError, RegistryError, CommandError) as exc:
            raise fail(f"cannot recover from an interrupted operation: {exc}") from None
        yield


def _guard(command: F) -> F:
    """A command that runs under `_guarded`."""

    @functools.wraps(command)
    def guarded_command(*args: Any, **kwargs: Any) -> Any:
        with _guarded():
            return command(*args, **kwargs)

    return cast(F, guarded_command)


def _registry_errors() -> tuple[type[Exception], ...]:
    from treesurv.registry import RegistryError
    from treesurv.vcs import CommandError

    return (RegistryError, CommandError)


# ----------------------------------------------------------------- registry


@registry_app.command("list")
@_guard
def registry_list(
    params_path: ParamsOpt = PARAMS,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Registered versions: stage, test-split metrics, date and commit."""
    from rich.table import Table

    from treesurv.cli import fail, out

    reg, _, _ = _context(params_path)
    try:
        versions = reg.versions()
        production = reg.production()
        rows: list[dict[str, Any]] = []
        for v in versions:
            test = (reg.metrics_at(v.commit) or {}).get("test", {})
            rows.append(
                {
                    "version": v.version,
                    "stage": reg.stage if production and production.version == v.version else "",
                    "roc_auc": test.get("roc_auc"),
                    "brier": test.get("brier"),
                    "created": v.created.isoformat(timespec="seconds"),
                    "commit": v.commit,
                    "tag": v.tag,
                }
            )
    except _registry_errors() as exc:
        raise fail(str(exc)) from None
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print(f"no version of {reg.name} is registered yet (run `treesurv retrain`)")
        return
    table = Table(title=f"{reg.name} versions")
    for col in ("version", "stage", "ROC AUC", "Brier", "registered", "commit"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["version"],
            f"[bold green]{r['stage']}[/]" if r["stage"] else "",
            "-" if r["roc_auc"] is None else f"{r['roc_auc']:.4f}",
            "-" if r["brier"] is None else f"{r['brier']:.4f}",
            r["created"],
            r["commit"][:10],
        )
    out.print(table)


@registry_app.command("history")
@_guard
def registry_history(params_path: ParamsOpt = PARAMS) -> None:
    """Every promotion and rollback of the production stage, newest first."""
    from rich.table import Table

    from treesurv.cli import fail, out

    reg, _, _ = _context(params_path)
    try:
        events = reg.events()
    except _registry_errors() as exc:
        raise fail(str(exc)) from None
    table = Table(title=f"{reg.name}: stage {reg.stage}")
    for col in ("#", "version", "event", "date", "message"):
        table.add_column(col, overflow="fold")
    for e in reversed(events):
        kind = "rollback" if e.rollback else ("assigned" if e.assigned else "unassigned")
        table.add_row(
            str(e.number), e.version, kind, e.created.isoformat(timespec="seconds"), e.message
        )
    out.print(table)


@registry_app.command("promote")
@_guard
def registry_promote(
    version: Annotated[str, typer.Argument(help="A registered version, e.g. 1.2.0.")],
    params_path: ParamsOpt = PARAMS,
) -> None:
    """Put a registered version in production (its bundle restored from DVC)."""
    from treesurv import registry
    from treesurv.cli import err, fail

    reg, dest, _ = _context(params_path)
    try:
        target = registry.promote(reg, version, dest)
    except _registry_errors() as exc:
        raise fail(str(exc)) from None
    err.print(f"{reg.name} {target.version} is in {reg.stage}; its bundle is at {dest}")


@registry_app.command("rollback")
@_guard
def registry_rollback(params_path: ParamsOpt = PARAMS) -> None:
    """Put the previous production version back in production."""
    from treesurv import registry
    from treesurv.cli import err, fail

    reg, dest, _ = _context(params_path)
    try:
        was, now = registry.rollback(reg, dest)
    except _registry_errors() as exc:
        raise fail(str(exc)) from None
    err.print(f"rolled {reg.name} back from {was} to {now.version}; its bundle is at {dest}")


@registry_app.command("checkout")
@_guard
def registry_checkout(
    params_path: ParamsOpt = PARAMS,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Where to put the bundle (default: retrain.production_dir)."),
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="This version instead of the production one.")
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option(help="The version a registry tag names (e.g. tree-survival#prod#3)."),
    ] = None,
) -> None:
    """Materialise the production model (before any promotion: the pipeline's bundle)
    and print its version."""
    from treesurv import registry
    from treesurv.cli import err, fail, out

    reg, dest, pipeline_bundle = _context(params_path)
    dest = out_dir or dest
    try:
        if tag is not None:
            version = registry.resolve_tag(reg, tag)
        done = registry.checkout(reg, dest, fallback=pipeline_bundle, version=version)
    except _registry_errors() as exc:
        raise fail(str(exc)) from None
    state = "updated" if done.changed else "already in place"
    err.print(f"{dest}: {done.source} ({state})", highlight=False)
    out.print(done.version, highlight=False)


# --------------------------------------------------------------------- data


@_guard
def data_add(
    path: Annotated[Path, typer.Argument(help="CSV of new census rows in the study's format.")],
    params_path: ParamsOpt = PARAMS,
    push: Annotated[bool, typer.Option(help="Push the new data version to the remote.")] = True,
    commit: Annotated[bool, typer.Option(help="Commit the updated .dvc pointer.")] = True,
    report_path: Annotated[
        Path | None, typer.Option("--report", help="Write a JSON report here.")
    ] = None,
) -> None:
    """Append new census rows to the study data: validated, de-duplicated, versioned."""
    from treesurv import data as data_mod
    from treesurv import ingest
    from treesurv.cli import _params, err, fail, print_report

    _, paths = _params(params_path)
    try:
        result = ingest.add_rows(
            Path.cwd(), paths.raw, path, push=push, commit=commit, log=log.info
        )
    except ingest.IngestError as exc:
        if exc.report is not None:
            print_report(exc.report)
            if report_path:
                data_mod.write_json({"ok": False, "validation": exc.report.to_dict()}, report_path)
        raise fail(str(exc)) from None
    for line, rid in result.duplicates:
        err.print(f"line {line}: id {rid} is already in the data with the same content: skipped")
    for c in result.conflicts:
        err.print(
            f"[yellow]line {c.line}: id {c.id} is already in the data with different "
            f"{', '.join(c.columns)}: rejected[/]",
            highlight=False,
        )
    for note in result.notes:
        err.print(f"note: {note}")
    if report_path:
        data_mod.write_json({"ok": True, **result.to_dict()}, report_path)
    err.print(f"[green]{result.summary()}[/]", highlight=False)


# ------------------------------------------------------------------ retrain


def retrain(
    data_path: Annotated[
        Path | None,
        typer.Option("--data", help="New census rows to add first (as `treesurv data add`)."),
    ] = None,
    params_path: ParamsOpt = PARAMS,
) -> None:
    """Continuous training: pull, validate, repro, compare with production on the same
    rows, promote only a model at least as good; reports/retrain.{json,md}."""
    from treesurv.cli import err
    from treesurv.lifecycle import retrain as run_retrain

    result = run_retrain(Path.cwd(), params_path, data_path, log=log.info)
    report = result.report
    decision = report["decision"]
    if decision == "failed":
        err.print(
            f"[bold red]retrain failed at step {report.get('failed_step')}:[/] "
            f"{report.get('error')}\nthe production model and its tags are unchanged "
            f"(report: {result.markdown})",
            highlight=False,
        )
        raise typer.Exit(1)
    for reason in report.get("reasons", []):
        err.print(f"  {reason}", highlight=False)
    production = report.get("production") or {}
    err.print(
        f"[bold green]{decision}[/]: production is {production.get('after')} "
        f"(report: {result.markdown})",
        highlight=False,
    )
