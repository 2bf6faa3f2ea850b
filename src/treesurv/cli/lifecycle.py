"""`treesurv registry ...` and `treesurv retrain`: the model lifecycle.

Thin layers over `treesurv.lifecycle`; GTO, DVC and pandas are imported inside the
commands, so `treesurv --help` stays light. Commands that change the registry or
the data run under `guard`: the lifecycle lock, after finishing or undoing an
operation that a crash interrupted.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer

from treesurv.cli.console import PARAMS_FILE, ParamsOpt, err, fail, load, out
from treesurv.core.errors import TreesurvError

if TYPE_CHECKING:
    from treesurv.lifecycle.registry import Registry

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

registry_app = typer.Typer(
    help="Model versions and the production stage (GTO tags; bundles from DVC).",
    no_args_is_help=True,
)


def _context(params_path: Path) -> tuple[Registry, Path, Path]:
    """The registry of the current repository, the production directory and the
    pipeline's bundle, from params.yaml."""
    from treesurv.lifecycle.registry import Registry

    params = load(params_path)
    config, name = params.retrain, params.package.name
    reg = Registry(Path.cwd(), name, config.store / name, config.stage, params.paths.metrics)
    return reg, config.production_dir, params.paths.bundle


def guard(command: F) -> F:
    """Run `command` holding the lifecycle lock, after recovering from a crash."""

    @functools.wraps(command)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        from treesurv.core.journal import locked
        from treesurv.lifecycle.retrain import recover

        with ExitStack() as stack:
            try:
                stack.enter_context(locked(Path.cwd()))
                recover(Path.cwd(), log=lambda m: err.print(m, highlight=False))
            except (OSError, TreesurvError) as exc:
                raise fail(f"cannot recover from an interrupted operation: {exc}") from None
            return command(*args, **kwargs)

    return cast(F, guarded)


@registry_app.command("list")
@guard
def registry_list(
    params_path: ParamsOpt = PARAMS_FILE,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Registered versions: stage, test-split metrics, date and commit."""
    from rich.table import Table

    reg, _, _ = _context(params_path)
    production = reg.production()
    rows: list[dict[str, Any]] = []
    for v in reg.versions():
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
@guard
def registry_history(params_path: ParamsOpt = PARAMS_FILE) -> None:
    """Every promotion and rollback of the production stage, newest first."""
    from rich.table import Table

    reg, _, _ = _context(params_path)
    events = reg.events()
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
@guard
def registry_promote(
    version: Annotated[str, typer.Argument(help="A registered version, e.g. 1.2.0.")],
    params_path: ParamsOpt = PARAMS_FILE,
) -> None:
    """Put a registered version in production (its bundle restored from DVC)."""
    from treesurv.lifecycle import registry

    reg, dest, _ = _context(params_path)
    target = registry.promote(reg, version, dest)
    err.print(f"{reg.name} {target.version} is in {reg.stage}; its bundle is at {dest}")


@registry_app.command("rollback")
@guard
def registry_rollback(params_path: ParamsOpt = PARAMS_FILE) -> None:
    """Put the previous production version back in production."""
    from treesurv.lifecycle import registry

    reg, dest, _ = _context(params_path)
    was, now = registry.rollback(reg, dest)
    err.print(f"rolled {reg.name} back from {was} to {now.version}; its bundle is at {dest}")


@registry_app.command("checkout")
@guard
def registry_checkout(
    params_path: ParamsOpt = PARAMS_FILE,
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
    from treesurv.lifecycle import registry

    reg, dest, pipeline_bundle = _context(params_path)
    dest = out_dir or dest
    if tag is not None:
        version = registry.resolve_tag(reg, tag)
    done = registry.checkout(reg, dest, fallback=pipeline_bundle, version=version)
    state = "updated" if done.changed else "already in place"
    err.print(f"{dest}: {done.source} ({state})", highlight=False)
    out.print(done.version, highlight=False)


def retrain(
    data_path: Annotated[
        Path | None,
        typer.Option("--data", help="New census rows to add first (as `treesurv data add`)."),
    ] = None,
    params_path: ParamsOpt = PARAMS_FILE,
) -> None:
    """Continuous training: pull, validate, repro, compare with production on the same
    rows, promote only a model at least as good; reports/retrain.{json,md}."""
    from treesurv.lifecycle.retrain import retrain as run_retrain

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
