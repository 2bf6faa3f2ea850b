"""Distributed batch scoring on a Dask cluster (`treesurv predict --engine dask`).

The input (CSV or Parquet files, a glob or a directory of them) is cut into
partitions on the client without reading the data: byte ranges of CSV files
aligned to line ends, groups of Parquet row groups. Each worker reads its
partitions, validates and scores them with exactly the code of the
single-process path (`batch.score_chunk`) and writes one Parquet part per
partition; the client only gathers counts, problems and rejected rows, in
partition order, so memory stays bounded on both sides.

Workers load the model once each from the bundle path, verified like
everywhere else, and check that its manifest digest is the one the client
verified: no model object is ever pickled across the cluster. Inputs, the
bundle and the output must be on storage the workers share with the client.

Output: a directory of `part-NNNNNN.parquet` files (input order), written to a
staging directory and renamed into place; with `--on-error skip` the rejected
rows go to `<output>.rejects.csv` with their line numbers and reasons, as in the
single-process path; with `fail` nothing is written if any row is bad.

Limitation (as with any byte-range CSV reader): a quoted CSV field that
contains a line break can be cut between two partitions; use Parquet, or the
single-process path, for such files.
"""

from __future__ import annotations

import glob
import io
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from treesurv.core.files import (
    PARQUET_SUFFIXES,
    DataFileError,
    first_line,
    is_parquet,
    is_xlsx,
    sniff_text,
)
from treesurv.core.validation import RowIssue
from treesurv.inference.batch import (
    BatchError,
    BatchResult,
    OnError,
    _shift,
    _Writer,
    rejects_path,
    score_chunk,
)
from treesurv.inference.bundle import Bundle, BundleError, load_verified, swap_into_place
from treesurv.inference.predictor import CompiledModel

log = logging.getLogger(__name__)

DEFAULT_PARTITION_BYTES = 16 * 1024 * 1024
DEFAULT_PARTITION_ROWS = 500_000
PART = "part-{:06d}.parquet"
GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Partition:
    """A slice of one input file: a CSV byte range or a run of Parquet row groups."""

    index: int
    path: str
    start: int = 0  # CSV: byte offset of the first row (after the header)
    end: int = 0  # CSV: byte offset past the last row
    header: bytes = b""
    row_groups: tuple[int, ...] = ()


@dataclass
class PartResult:
    index: int
    path: str
    rows: int
    scored: int
    issues: list[RowIssue] = field(default_factory=list)  # lines relative to the part
    rejects: pd.DataFrame | None = None


# ------------------------------------------------------------------ inputs


def expand_inputs(spec: str | Path) -> list[Path]:
    """Files named by a path, a glob or a directory (its CSV/Parquet files), sorted."""
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", *PARQUET_SUFFIXES))
    elif GLOB_CHARS & set(text):
        files = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
    else:
        if not path.exists():
            raise DataFileError(f"{path}: no such file")
        files = [path]
    if not files:
        raise DataFileError(f"{text}: no CSV or Parquet input files found")
    workbooks = [p for p in files if is_xlsx(p)]
    if workbooks:
        # A workbook cannot be cut into byte ranges: it is read whole, in one process.
        raise DataFileError(f"{workbooks[0]}: XLSX files are scored without --engine dask")
    kinds = {is_parquet(p) for p in files}
    if len(kinds) > 1:
        raise DataFileError(f"{text}: mixes CSV and Parquet files; score them separately")
    return files


def plan(
    files: list[Path],
    partition_bytes: int = DEFAULT_PARTITION_BYTES,
    partition_rows: int = DEFAULT_PARTITION_ROWS,
) -> list[Partition]:
    """Partitions of every file, in input order; reads headers and metadata only."""
    out: list[Partition] = []
    columns: list[str] | None = None
    for path in files:
        if is_parquet(path):
            parts, names = _parquet_parts(path, partition_rows, len(out))
        else:
            parts, names = _csv_parts(path, partition_bytes, len(out))
        if columns is None:
            columns = names
        elif names != columns:
            raise DataFileError(
                f"{path}: its columns differ from those of {files[0]}; "
                "every input file needs the same columns in the same order"
            )
        out += parts
    return out


def _parquet_parts(path: Path, rows: int, first: int) -> tuple[list[Partition], list[str]]:
    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DataFileError(f"{path}: not a readable Parquet file ({exc})") from None
    parts: list[Partition] = []
    group: list[int] = []
    count = 0
    for i in range(meta.num_row_groups):
        group.append(i)
        count += meta.row_group(i).num_rows
        if count >= rows:
            parts.append(Partition(first + len(parts), str(path), row_groups=tuple(group)))
            group, count = [], 0
    if group or not parts:
        parts.append(Partition(first + len(parts), str(path), row_groups=tuple(group)))
    return parts, list(meta.schema.to_arrow_schema().names)


def _csv_parts(path: Path, size: int, first: int) -> tuple[list[Partition], list[str]]:
    sniff_text(path)
    total = path.stat().st_size
    with path.open("rb") as fh:
        header = fh.readline()
        try:
            names = list(pd.read_csv(io.BytesIO(header), nrows=0, dtype=str).columns)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataFileError(f"{path}: not a valid CSV header ({exc})") from None
        parts: list[Partition] = []
        start = len(header)
        while start < total:
            fh.seek(min(start + size, total))
            fh.readline()  # move to the end of the line the boundary fell in
            end = min(fh.tell(), total)
            parts.append(Partition(first + len(parts), str(path), start, end, header))
            start = end
    if not parts:  # a header-only file still gives one (empty) partition
        parts.append(Partition(first, str(path), len(header), len(header), header))
    return parts, names


def _read(part: Partition) -> pd.DataFrame:
    path = Path(part.path)
    if is_parquet(path):
        pf = pq.ParquetFile(path)
        if not part.row_groups:
            return pf.schema_arrow.empty_table().to_pandas()
        return pf.read_row_groups(list(part.row_groups)).to_pandas()
    with path.open("rb") as fh:
        fh.seek(part.start)
        body = fh.read(part.end - part.start)
    try:
        # Exactly how the single-process path reads CSV: every cell as written.
        return pd.read_csv(io.BytesIO(part.header + body), dtype=str, na_filter=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataFileError(f"{path}: not a valid CSV file ({first_line(exc)})") from None


# ----------------------------------------------------------- on the workers


@lru_cache(maxsize=4)
def _model(bundle_path: str, digest: str) -> tuple[str, float, CompiledModel]:
    """Load and verify the bundle once per worker process."""
    bundle, compiled = load_verified(bundle_path)
    if bundle.manifest.get("digest") != digest:
        raise BundleError(f"{bundle_path}: the bundle changed after scoring started")
    return bundle.version, bundle.threshold, compiled


def score_partition(
    part: Partition, bundle_path: str, digest: str, staging: str, output_name: str
) -> PartResult:
    """Read, validate, score and write one partition (runs on a worker)."""
    version, threshold, compiled = _model(bundle_path, digest)
    chunk = _read(part)
    scored = score_chunk(
        chunk,
        compiled,
        threshold=threshold,
        version=version,
        first_line=2,
        source=Path(part.path),
        output=Path(output_name),
    )
    if len(scored.scored):
        table = pa.Table.from_pandas(scored.scored, preserve_index=False)
        # A column empty in this partition is still text in the others.
        schema = pa.schema(
            [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]
        ).remove_metadata()
        target = Path(staging) / PART.format(part.index)
        tmp = target.with_name(f".{target.name}.tmp")
        pq.write_table(table.cast(schema), tmp)
        tmp.replace(target)
    return PartResult(
        part.index, part.path, scored.rows, len(scored.scored), scored.issues, scored.rejects
    )


# --------------------------------------------------------------- the client


@contextmanager
def dask_client(
    scheduler: str | None, workers: int = 2, memory_limit: str = "2GiB"
) -> Iterator[Any]:
    """A client of the cluster at `scheduler`, or of a small local cluster of processes."""
    from distributed import Client, LocalCluster

    # The cluster's own chatter (workers starting, connections) is not the user's concern.
    logging.getLogger("distributed").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise BatchError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        with client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit,
            host="127.0.0.1",
            # No dashboard; the scheduler's small HTTP server on a free loopback port.
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.WARNING,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def prepare_output(output: Path) -> Path:
    """Refuse to replace anything but a previous partitioned output; return the staging dir."""
    if output.exists():
        if not output.is_dir():
            raise BatchError(f"{output}: exists and is a file; the Dask engine writes a directory")
        foreign = [p.name for p in output.iterdir() if not p.name.startswith("part-")]
        if foreign:
            raise BatchError(
                f"{output}: not a previous treesurv output (it holds {foreign[0]}); "
                "choose another directory"
            )
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def score_distributed(
    source: str | Path,
    output: Path,
    bundle: Bundle,
    client: Any,
    *,
    on_error: OnError = "fail",
    partition_bytes: int = DEFAULT_PARTITION_BYTES,
    partition_rows: int = DEFAULT_PARTITION_ROWS,
    progress: Callable[[int], None] = lambda n: None,
    on_plan: Callable[[int], None] = lambda n: None,
) -> BatchResult:
    """Score `source` into the directory `output` on the cluster behind `client`, with
    the model of `bundle` (verified by the caller; each worker verifies it again)."""
    files = expand_inputs(source)
    if any(f.resolve() == output.resolve() for f in files):
        raise BatchError("the output would overwrite the input; choose another path")
    digest = str(bundle.manifest["digest"])
    parts = plan(files, partition_bytes, partition_rows)
    on_plan(len(parts))
    staging = prepare_output(output)
    result = BatchResult(output=output)
    rejects = _Writer(rejects_path(output)) if on_error == "skip" else None
    try:
        futures = client.map(
            score_partition,
            parts,
            bundle_path=str(bundle.path.resolve()),
            digest=digest,
            staging=str(staging.resolve()),
            # Only its suffix matters to score_chunk: the output is Parquet.
            output_name=str(output.with_suffix(".parquet")),
            pure=False,
        )
        rows_before: dict[str, int] = {}
        for i, future in enumerate(futures):
            part: PartResult = future.result()
            futures[i] = None  # release the partition's result on the worker
            offset = rows_before.get(part.path, 0)
            rows_before[part.path] = offset + part.rows
            result.rows += part.rows
            result.scored += part.scored
            if part.issues:
                if part.rejects is not None:
                    part.rejects["line"] += offset
                result.note([_shift(issue, offset) for issue in part.issues], rejects, part.rejects)
            progress(1)
        result.refuse(source, on_error)
        swap_into_place(staging, output)
        result.settle(rejects)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if rejects is not None:
            rejects.abort()
        raise
    return result
