"""`treesurv data`: validate a file against the schema; add new census rows."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from treesurv.cli.console import PARAMS_FILE, ParamsOpt, err, fail, load, print_report
from treesurv.cli.lifecycle import guard

log = logging.getLogger(__name__)

app = typer.Typer(help="Validate and manage the study data.", no_args_is_help=True)


@app.command("validate")
def validate(
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
    # pandas and pandera load with the command that needs them, not with `treesurv --help`.
    from treesurv.core.files import write_json, write_table
    from treesurv.core.validation import SCORING, TRAINING, validate_file

    options = SCORING if scoring else TRAINING
    clean, report = validate_file(path, options)
    if report_path:
        write_json(report.to_dict(), report_path)
    print_report(report)
    if not report.ok:
        raise typer.Exit(1)
    if out_path:
        write_table(clean, out_path)


@app.command("add")
@guard
def add(
    path: Annotated[Path, typer.Argument(help="CSV of new census rows in the study's format.")],
    params_path: ParamsOpt = PARAMS_FILE,
    push: Annotated[bool, typer.Option(help="Push the new data version to the remote.")] = True,
    commit: Annotated[bool, typer.Option(help="Commit the updated .dvc pointer.")] = True,
    report_path: Annotated[
        Path | None, typer.Option("--report", help="Write a JSON report here.")
    ] = None,
) -> None:
    """Append new census rows to the study data: validated, de-duplicated, versioned."""
    from treesurv.core.files import write_json
    from treesurv.lifecycle import ingest

    paths = load(params_path).paths
    try:
        result = ingest.add_rows(
            Path.cwd(), paths.raw, path, push=push, commit=commit, log=log.info
        )
    except ingest.IngestError as exc:
        if exc.report is not None:
            print_report(exc.report)
            if report_path:
                write_json({"ok": False, "validation": exc.report.to_dict()}, report_path)
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
        write_json({"ok": True, **result.to_dict()}, report_path)
    err.print(f"[green]{result.summary()}[/]", highlight=False)
