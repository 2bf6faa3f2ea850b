"""`treesurv monitor drift`: the logged predictions against the training reference."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from treesurv.cli.console import PARAMS_FILE, ParamsOpt, err, fail, out
from treesurv.core.config import DEFAULT_PATHS, Params

app = typer.Typer(help="Watch the served model: drift checks.", no_args_is_help=True)


@app.command("drift")
def drift(
    log_dir: Annotated[
        Path,
        typer.Option(
            "--log",
            envvar="TREESURV_PREDICTION_LOG_DIR",
            help="Prediction log directory (the service's TREESURV_PREDICTION_LOG_DIR).",
        ),
    ] = Path("logs/predictions"),
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
    """Compare logged inputs and predictions with the training reference.

    Exit 0: no drift (or too few predictions for a verdict); 3: drift passed the
    thresholds in params.yaml (`monitor`); 1: an error.
    """
    from treesurv.monitoring.drift import Thresholds
    from treesurv.monitoring.drift_check import EXIT_DRIFT, parse_when, run_drift

    params = Params.load(params_path) if params_path.exists() else Params()
    try:
        report, _ = run_drift(
            log_dir,
            reference,
            Thresholds.from_params(params.monitor),
            since=parse_when(since) if since else None,
            until=parse_when(until) if until else None,
            json_out=json_out,
            html_out=html_out,
        )
    except OSError as exc:
        raise fail(f"cannot write the report: {exc.strerror or exc}") from None
    rows = [("prediction", report.prediction)] if report.prediction else []
    rows += [(name, f) for name, f in report.features.items()]
    if rows:
        table = Table(title=f"drift: {report.rows} logged predictions")
        for col in ("feature", "PSI", "test", "p-value", "drift"):
            table.add_column(col)
        for name, f in rows:
            assert f is not None
            flag = "[bold red]yes[/]" if f.drifted else "no"
            table.add_row(name, f"{f.psi:.3f}", f.test, f"{f.p_value:.3g}", flag)
        out.print(table)
    for note in report.notes:
        err.print(f"note: {note}", highlight=False)
    err.print(f"{report.status}: wrote {json_out} and {html_out}", highlight=False)
    if report.drift_detected:
        raise typer.Exit(EXIT_DRIFT)
