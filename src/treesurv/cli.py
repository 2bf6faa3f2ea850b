"""The `treesurv` command: a thin layer over the package (Typer + Rich)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from treesurv import __version__
from treesurv import data as data_mod
from treesurv.config import DEFAULT_PATHS, PARAMS_FILE, ParamsError, Paths, load_params
from treesurv.lifecycle_cli import data_add, registry_app, retrain

app = typer.Typer(
    help="treesurv: the tree-seedling mortality model, from data to service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Validate and manage the study data.", no_args_is_help=True)
model_app = typer.Typer(help="Inspect and verify model bundles.", no_args_is_help=True)
monitor_app = typer.Typer(help="Watch the served model: drift checks.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")
# The model lifecycle (issue 4): registry, data add, retrain.
app.add_typer(registry_app, name="registry")
data_app.command("add")(data_add)
app.command()(retrain)
app.add_typer(monitor_app, name="monitor")

# Wide output when piped (CI logs, files), so report rows are never cut.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
log = logging.getLogger("treesurv")

ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameters file (params.yaml).")]
ModelOpt = Annotated[Path, typer.Option("--model", help="Model bundle directory.")]


def _setup_logging(verbose: bool = False) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(message)s",
            handlers=[RichHandler(console=err, show_path=False)],
        )


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _params(path: Path) -> tuple[dict[str, Any], Paths]:
    try:
        params = load_params(path)
    except ParamsError as exc:
        raise fail(str(exc)) from None
    return params, Paths.from_params(params)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More logging.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    _setup_logging(verbose)
    if version:
        out.print(__version__)
        raise typer.Exit()


# ----------------------------------------------------------------------- data


def print_report(report: data_mod.ValidationReport, limit: int = 50) -> None:
    if report.issues:
        table = Table(title=f"{report.source}: problems", show_lines=False)
        for col in ("line", "column", "value", "rule"):
            table.add_column(col, overflow="fold")
        for issue in report.issues[:limit]:
            table.add_row(
                "-" if issue.line is None else str(issue.line),
                issue.column,
                issue.value,
                issue.rule,
            )
        err.print(table)
        if len(report.issues) > limit:
            err.print(f"… and {len(report.issues) - limit} more (see the JSON report)")
    for note in report.notes:
        err.print(f"note: {note}")
    style = "green" if report.ok else "red"
    err.print(f"[{style}]{report.summary()}[/]", highlight=False)


@data_app.command("validate")
def data_validate(
    path: Annotated[Path, typer.Argument(help="CSV or Parquet file in the study's format.")],
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Write the valid rows here.")
    ] = None,
    report_path: Annotated[
        Path | None, typer.Option("--report", help="Write the JSON report here.")
    ] = None,
    scoring: Annotated[bool, typer.Option(help="Scoring input: no id or target required.")] = False,
) -> None:
    """Check a data file against the schema; exit 1 when it is unusable."""
    options = data_mod.SCORING if scoring else data_mod.TRAINING
    clean, report = data_mod.validate_file(path, options)
    if report_path:
        data_mod.write_json(report.to_dict(), report_path)
    print_report(report)
    if not report.ok:
        raise typer.Exit(1)
    if out_path:
        data_mod.write_table(clean, out_path)


# ------------------------------------------------------------------ pipeline


@app.command()
def prepare(params_path: ParamsOpt = PARAMS_FILE) -> None:
    """Pipeline stage: feature table, train/test split and the reference profile."""
    from treesurv.pipeline import StageError, stage_prepare

    params, paths = _params(params_path)
    try:
        rows = stage_prepare(paths.validated, paths, params)
    except (StageError, OSError) as exc:
        raise fail(str(exc)) from None
    log.info("prepared %d training and %d test rows", rows["train"], rows["test"])


@app.command()
def train(
    params_path: ParamsOpt = PARAMS_FILE,
    variant: Annotated[
        str, typer.Option(help="full: every feature; planning: the design variables only.")
    ] = "full",
) -> None:
    """Pipeline stage: search the candidates, cross-validate, calibrate, fit."""
    from treesurv.pipeline import stage_train

    params, paths = _params(params_path)
    try:
        stage_train(paths, params, log.info, variant)
    except (ValueError, OSError, KeyError) as exc:
        raise fail(f"training failed: {exc}") from None


@app.command("train-survival")
def train_survival(params_path: ParamsOpt = PARAMS_FILE) -> None:
    """Pipeline stage: the survival models (full and planning), chosen by CV."""
    from treesurv.pipeline import stage_train_survival

    params, paths = _params(params_path)
    try:
        stage_train_survival(paths, params, log.info)
    except (ValueError, OSError, KeyError) as exc:
        raise fail(f"survival training failed: {exc}") from None


@app.command()
def evaluate(params_path: ParamsOpt = PARAMS_FILE) -> None:
    """Pipeline stage: metrics.json, plots and the model card."""
    from treesurv.pipeline import StageError, stage_evaluate

    params, paths = _params(params_path)
    try:
        metrics = stage_evaluate(paths, params)
    except (StageError, OSError) as exc:
        raise fail(str(exc)) from None
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


@app.command()
def package(
    params_path: ParamsOpt = PARAMS_FILE,
    version: Annotated[str | None, typer.Option(help="Model version (semver).")] = None,
) -> None:
    """Pipeline stage: compile the model and write the verified bundle."""
    from treesurv.bundle import BundleError
    from treesurv.pipeline import StageError, stage_package

    params, paths = _params(params_path)
    try:
        manifest = stage_package(paths, params, version)
    except (StageError, BundleError, OSError) as exc:
        raise fail(str(exc)) from None
    log.info("bundle %s %s written to %s", manifest["name"], manifest["version"], paths.bundle)


# ------------------------------------------------------------------- scoring


@app.command()
def predict(
    source: Annotated[
        Path,
        typer.Argument(
            help="CSV or Parquet input (by extension); with --engine dask also a glob or a "
            "directory of files."
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="CSV or Parquet output; with --engine dask a directory."
        ),
    ],
    model: ModelOpt = DEFAULT_PATHS.bundle,
    on_error: Annotated[
        str,
        typer.Option(
            help="fail: write nothing if any row is bad; skip: score the good rows, list the rest."
        ),
    ] = "fail",
    chunk_rows: Annotated[
        int, typer.Option(min=1, help="Rows per chunk (Dask: most rows per Parquet partition).")
    ] = 50_000,
    engine: Annotated[
        str, typer.Option(help="local: stream in this process; dask: on a Dask cluster.")
    ] = "local",
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address (tcp://host:8786); none: a local cluster."),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes of the local Dask cluster.")
    ] = 2,
    worker_memory: Annotated[
        str, typer.Option(help="Memory limit per local Dask worker.")
    ] = "2GiB",
    partition_mb: Annotated[
        float, typer.Option(min=0.001, help="Dask: megabytes of CSV per partition.")
    ] = 16.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Score a file: every input column kept, death_probability, predicted_event and
    model_version added."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from treesurv import batch
    from treesurv.bundle import BundleError, load_verified

    if on_error not in ("fail", "skip"):
        raise fail("--on-error must be fail or skip", 2)
    if engine not in ("local", "dask"):
        raise fail("--engine must be local or dask", 2)
    try:
        bundle, compiled = load_verified(model)
    except BundleError as exc:
        raise fail(str(exc)) from None
    with Progress(
        TextColumn("scoring"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=True,
    ) as bar:
        task = bar.add_task("score", total=None)
        try:
            if engine == "dask":
                from treesurv import dask_batch

                with dask_batch.dask_client(scheduler, workers, worker_memory) as client:
                    result = dask_batch.score_distributed(
                        source,
                        output,
                        bundle,
                        client,
                        on_error=on_error,  # type: ignore[arg-type]
                        partition_bytes=int(partition_mb * 1024 * 1024),
                        partition_rows=chunk_rows,
                        progress=lambda n: bar.advance(task, n),
                        on_plan=lambda n: bar.update(task, total=n),
                    )
            else:
                bar.update(task, total=batch.input_size(source) if source.exists() else None)
                result = batch.score_file(
                    source,
                    output,
                    bundle,
                    compiled,
                    on_error=on_error,  # type: ignore[arg-type]
                    chunk_rows=chunk_rows,
                    progress=lambda n: bar.advance(task, n),
                )
        except batch.BatchError as exc:
            bar.stop()
            if exc.result is not None:
                _print_issues(exc.result)
            raise fail(str(exc)) from None
        except (data_mod.DataFileError, BundleError) as exc:
            raise fail(str(exc)) from None
        except OSError as exc:
            raise fail(f"cannot write {output}: {exc.strerror or exc}") from None
    if result.issues:
        _print_issues(result)
    summary = batch.describe(result)
    err.print(
        f"scored {result.scored} of {result.rows} rows with model {bundle.version} "
        f"-> {output}"
        + (f"; {result.rejected} rejected -> {result.rejects}" if result.rejected else ""),
        highlight=False,
    )
    log.debug(json.dumps(summary))


def _print_issues(result: Any) -> None:
    report = data_mod.ValidationReport(source="input", rows=result.rows, issues=list(result.issues))
    print_report(report)
    if result.issue_count > len(result.issues):
        err.print(f"({result.issue_count} problems in all; the first {len(result.issues)} shown)")


# -------------------------------------------------------------------- serve


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(envvar="TREESURV_HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=1, max=65535, envvar="TREESURV_PORT", help="Port.")
    ] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, envvar="WEB_CONCURRENCY", help="Worker processes.")
    ] = 1,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Model bundle directory (default: $TREESURV_MODEL_DIR, else "
            "models/tree-survival).",
        ),
    ] = None,
    server: Annotated[
        str, typer.Option(help="auto: uvicorn for 1 worker, gunicorn for more; or force one.")
    ] = "auto",
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve the prediction API (see /docs once it runs)."""
    from treesurv.serving.server import run as run_server

    if server not in ("auto", "uvicorn", "gunicorn"):
        raise fail("--server must be auto, uvicorn or gunicorn", 2)
    try:
        run_server(host, port, workers, model, server, access_log)  # type: ignore[arg-type]
    except ValueError as exc:
        raise fail(str(exc), 2) from None


# -------------------------------------------------------------------- model


@model_app.command("verify")
def model_verify(model: Annotated[Path, typer.Argument()] = DEFAULT_PATHS.bundle) -> None:
    """Check every file of a bundle against its manifest."""
    from treesurv.bundle import BundleError, load_verified

    try:
        bundle, _ = load_verified(model)
    except BundleError as exc:
        raise fail(str(exc)) from None
    out.print(f"{bundle.name} {bundle.version}: {len(bundle.files)} files verified")


@model_app.command("info")
def model_info(model: Annotated[Path, typer.Argument()] = DEFAULT_PATHS.bundle) -> None:
    """Print a bundle's manifest (after verifying it)."""
    from treesurv.bundle import BundleError, read_bundle

    try:
        bundle = read_bundle(model)
    except BundleError as exc:
        raise fail(str(exc)) from None
    out.print_json(json.dumps({k: v for k, v in bundle.manifest.items() if k != "params"}))


# ------------------------------------------------------------------ monitor


@monitor_app.command("drift")
def monitor_drift(
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
    from treesurv.monitoring.drift import DriftError, Thresholds
    from treesurv.monitoring.drift_job import EXIT_DRIFT, parse_when, run_drift
    from treesurv.monitoring.logfile import LogError

    try:
        params = load_params(params_path) if params_path.exists() else {}
        thresholds = Thresholds.from_params(params)
        report, _ = run_drift(
            log_dir,
            reference,
            thresholds,
            since=parse_when(since) if since else None,
            until=parse_when(until) if until else None,
            json_out=json_out,
            html_out=html_out,
        )
    except (DriftError, LogError, ParamsError) as exc:
        raise fail(str(exc)) from None
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
