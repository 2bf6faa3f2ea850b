"""`treesurv monitor drift`: the logged predictions, or any file of measurements,
against the training reference."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from treesurv.cli.console import PARAMS_FILE, ParamsOpt, err, fail, out, print_report
from treesurv.cli.scoring import OnError
from treesurv.core.config import DEFAULT_PATHS, Params

if TYPE_CHECKING:
    from treesurv.inference.batch import BatchResult
    from treesurv.monitoring.drift import DriftReport

app = typer.Typer(help="Watch the served model: drift checks.", no_args_is_help=True)
VERDICT_STYLE = {"drift": "[bold red]drift[/]", "warn": "[yellow]warn[/]", "ok": "ok"}


@app.command("drift")
def drift(
    ctx: typer.Context,
    log_dir: Annotated[
        Path,
        typer.Option(
            "--log",
            envvar="TREESURV_PREDICTION_LOG_DIR",
            help="Prediction log directory (the service's TREESURV_PREDICTION_LOG_DIR).",
        ),
    ] = Path("logs/predictions"),
    current: Annotated[
        Path | None,
        typer.Option(
            "--current",
            help="Instead of the log: a CSV, Parquet or JSON Lines file (by extension) with "
            "the ten features (other columns are ignored).",
        ),
    ] = None,
    on_error: Annotated[
        OnError,
        typer.Option(
            help="With --current: fail: any bad row stops the check (exit 1); skip: check "
            "the good rows, list the rest in the report."
        ),
    ] = OnError.fail,
    since: Annotated[
        str | None,
        typer.Option(help="Only predictions from then on: YYYY-MM-DD, ISO time, or 7d/12h/30m."),
    ] = None,
    until: Annotated[str | None, typer.Option(help="Only predictions before then.")] = None,
    reference: Annotated[
        Path,
        typer.Option(help="Model bundle directory (its reference profile) or a profile JSON."),
    ] = DEFAULT_PATHS.bundle,
    json_out: Annotated[Path, typer.Option("--out", help="JSON report.")] = Path(
        "reports/drift.json"
    ),
    html_out: Annotated[Path, typer.Option("--html", help="HTML report.")] = Path(
        "reports/drift.html"
    ),
    params_path: ParamsOpt = PARAMS_FILE,
) -> None:
    """Compare logged inputs and predictions (or a file's rows) with the training reference.

    Per column a verdict: ok, warn (a significant move below the drift thresholds)
    or drift. Exit 0: no drift (warnings included, or too few rows for a verdict);
    3: drift passed the thresholds in params.yaml (`monitor`); 1: an error.
    """
    from treesurv.inference.batch import BatchError
    from treesurv.monitoring.drift import Thresholds
    from treesurv.monitoring.drift_check import (
        EXIT_DRIFT,
        parse_when,
        run_drift,
        run_file_drift,
    )

    params = Params.load(params_path) if params_path.exists() else Params()
    thresholds = Thresholds.from_params(params.monitor)
    if current is not None:
        # (Typer vendors click: compare the source by name.)
        given = ctx.get_parameter_source("log_dir")
        if given is not None and given.name == "COMMANDLINE":
            raise fail("--log and --current are alternatives: give one", 2)
        if since or until:
            raise fail("--since and --until select logged predictions: not with --current", 2)
    try:
        if current is None:
            report, _ = run_drift(
                log_dir,
                reference,
                thresholds,
                since=parse_when(since) if since else None,
                until=parse_when(until) if until else None,
                json_out=json_out,
                html_out=html_out,
            )
        else:
            try:
                report, _, read = run_file_drift(
                    current,
                    reference,
                    thresholds,
                    on_error=on_error.value,
                    json_out=json_out,
                    html_out=html_out,
                )
            except BatchError as exc:
                if exc.result is not None:
                    _print_problems(current, exc.result)
                raise
            if read.result.issues:
                _print_problems(current, read.result)
    except OSError as exc:
        raise fail(f"cannot write the report: {exc.strerror or exc}") from None
    _print(report, json_out, html_out)
    if report.drift_detected:
        raise typer.Exit(EXIT_DRIFT)


def _print_problems(source: Path, result: BatchResult) -> None:
    """The rows left out, as `treesurv predict` prints them: line, column, value, rule."""
    from treesurv.core.validation import ValidationReport

    print_report(ValidationReport(source=str(source), rows=result.rows, issues=result.issues))
    if result.issue_count > len(result.issues):
        err.print(f"({result.issue_count} problems in all; the first {len(result.issues)} shown)")


def _print(report: DriftReport, json_out: Path, html_out: Path) -> None:
    rows = [("prediction", report.prediction)] if report.prediction else []
    rows += [(name, f) for name, f in report.features.items()]
    if rows:
        table = Table(title=f"drift: {report.rows} {report.unit}")
        for col in ("feature", "PSI", "test", "p-value", "verdict"):
            table.add_column(col)
        for name, f in rows:
            assert f is not None
            table.add_row(
                name, f"{f.psi:.3f}", f.test, f"{f.p_value:.3g}", VERDICT_STYLE[f.verdict]
            )
        out.print(table)
    for note in report.notes:
        err.print(f"note: {note}", highlight=False)
    warned = [name for name, f in rows if f is not None and f.verdict == "warn"]
    status = report.status + (f" (warn: {', '.join(warned)})" if warned else "")
    err.print(f"{status}: wrote {json_out} and {html_out}", highlight=False)
