"""`treesurv predict` (batch files, in process or on Dask) and `treesurv serve`."""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from treesurv.cli.console import ModelOpt, err, fail, print_issues
from treesurv.core.config import DEFAULT_PATHS

log = logging.getLogger(__name__)


class OnError(StrEnum):
    fail = "fail"
    skip = "skip"


class Engine(StrEnum):
    local = "local"
    dask = "dask"


class ServerKind(StrEnum):
    auto = "auto"
    uvicorn = "uvicorn"
    gunicorn = "gunicorn"


def predict(
    source: Annotated[
        Path,
        typer.Argument(
            help="CSV, Parquet or XLSX input (by extension); with --engine dask also a glob "
            "or a directory of CSV or Parquet files."
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="CSV, Parquet or XLSX output; with --engine dask a directory."
        ),
    ],
    model: ModelOpt = DEFAULT_PATHS.bundle,
    on_error: Annotated[
        OnError,
        typer.Option(
            help="fail: write nothing if any row is bad; skip: score the good rows, list the rest."
        ),
    ] = OnError.fail,
    chunk_rows: Annotated[
        int, typer.Option(min=1, help="Rows per chunk (Dask: most rows per Parquet partition).")
    ] = 50_000,
    engine: Annotated[
        Engine, typer.Option(help="local: stream in this process; dask: on a Dask cluster.")
    ] = Engine.local,
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

    from treesurv.inference import batch
    from treesurv.inference.bundle import load_verified

    bundle, compiled = load_verified(model)
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
            if engine is Engine.dask:
                from treesurv.inference import dask_batch

                with dask_batch.dask_client(scheduler, workers, worker_memory) as client:
                    result = dask_batch.score_distributed(
                        source,
                        output,
                        bundle,
                        client,
                        on_error=on_error.value,
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
                    on_error=on_error.value,
                    chunk_rows=chunk_rows,
                    progress=lambda n: bar.advance(task, n),
                )
        except batch.BatchError as exc:
            bar.stop()
            if exc.result is not None:
                print_issues(exc.result)
            raise
        except OSError as exc:
            raise fail(f"cannot write {output}: {exc.strerror or exc}") from None
    if result.issues:
        print_issues(result)
    planning = (
        " (planning model: the file has no trait columns)" if result.model == "planning" else ""
    )
    err.print(
        f"scored {result.scored} of {result.rows} rows with model {bundle.version}{planning} "
        f"-> {output}"
        + (f"; {result.rejected} rejected -> {result.rejects}" if result.rejected else ""),
        highlight=False,
    )
    log.debug(json.dumps(batch.describe(result)))


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
        ServerKind,
        typer.Option(help="auto: uvicorn for 1 worker, gunicorn for more; or force one."),
    ] = ServerKind.auto,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve the prediction API (see /docs once it runs)."""
    from treesurv.serving.server import run as run_server

    try:
        run_server(host, port, workers, model, server.value, access_log)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
