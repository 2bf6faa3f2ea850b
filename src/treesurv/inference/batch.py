"""Batch scoring of CSV, Parquet or XLSX files, streamed in chunks with bounded memory.

The output keeps every input column, in order, and adds `death_probability`,
`predicted_event` and `model_version`. With `on_error="fail"` nothing is written
unless every row is valid; with `"skip"` the valid rows are scored and the
rejected ones go to `<output>.rejects.csv` with their line numbers and reasons.
Everything is written to a temporary file first and renamed into place.

A file without any of the five trait columns is scored by the bundle's planning
model (the design fields only: what is known before planting); any other file by
the full model, which needs all ten features. `score_upload` scores a file held
in memory (the web page's upload) with the same code and returns its report.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from treesurv.core import schema
from treesurv.core.errors import InputError
from treesurv.core.files import (
    NA_VALUES,
    XLSX_MEDIA_TYPE,
    DataFileError,
    first_line,
    is_parquet,
    is_xlsx,
    sniff_text,
)
from treesurv.core.validation import (
    PLANNING_SCORING,
    SCORING,
    RowIssue,
    ValidationReport,
    all_valid,
    cell_text,
    validate,
)
from treesurv.inference.bundle import Bundle
from treesurv.inference.predictor import CompiledModel

OnError = Literal["fail", "skip"]
OUTPUT_COLUMNS = ("death_probability", "predicted_event", "model_version")
MAX_REPORTED = 1000
DEFAULT_CHUNK_ROWS = 50_000
FULL, PLANNING = "full", "planning"
# An XLSX file is a ZIP archive of XML: one that would unpack to more than this is
# refused before it is parsed (a "ZIP bomb" fills memory from a small upload).
MAX_XLSX_UNPACKED = 256 * 1024 * 1024
ZIP_MAGIC = b"PK\x03\x04"
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the old binary Excel format (.xls)


class BatchError(InputError):
    """Scoring stopped; nothing was written (the message says why)."""

    def __init__(self, message: str, result: BatchResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class BatchResult:
    rows: int = 0
    scored: int = 0
    rejected: int = 0
    issues: list[RowIssue] = field(default_factory=list)
    issue_count: int = 0
    output: Path | None = None
    rejects: Path | None = None
    model: str = FULL  # which classifier scored the file: full or planning

    def note(
        self,
        issues: list[RowIssue],
        rejects: _Writer | None = None,
        bad: pd.DataFrame | None = None,
    ) -> None:
        """Count a part's bad rows, and keep them in the rejects file (with `--on-error skip`)."""
        self.issue_count += len(issues)
        room = MAX_REPORTED - len(self.issues)
        if room > 0:
            self.issues.extend(issues[:room])
        if rejects is not None and bad is not None:
            rejects.write(bad)
            self.rejected += len(bad)

    def refuse(self, source: str | Path, on_error: OnError) -> None:
        """With `--on-error fail`, any bad row stops the run before a byte is written."""
        if self.issue_count and on_error == "fail":
            self.scored = 0
            raise BatchError(f"{source}: {self.issue_count} problem(s); nothing was written", self)

    def settle(self, rejects: _Writer | None) -> None:
        """Keep the rejects file if a row went into it, else leave none behind."""
        if rejects is None:
            return
        if self.rejected:
            rejects.commit()
            self.rejects = rejects.path
        else:
            rejects.abort()


def rejects_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.rejects.csv")


def _chunks(path: Path, chunk_rows: int, on_bytes: Callable[[int], None]) -> Iterator[pd.DataFrame]:
    """Chunks of the raw input; CSV and XLSX cells stay text so bad values can be reported."""
    if is_xlsx(path):
        frame = read_xlsx_text(path)
        size = path.stat().st_size
        for start in range(0, max(len(frame), 1), chunk_rows):
            chunk = frame.iloc[start : start + chunk_rows]
            on_bytes(size * len(chunk) // max(len(frame), 1))
            yield chunk
        return
    if is_parquet(path):
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise DataFileError(f"{path}: not a readable Parquet file ({exc})") from None
        for batch in pf.iter_batches(batch_size=chunk_rows):
            on_bytes(batch.num_rows)
            yield batch.to_pandas()
        return
    sniff_text(path)
    with path.open("rb") as fh:
        try:
            # Cells are kept exactly as written ("NA" stays "NA" in a CSV output);
            # missing-value tokens are recognised only for validation and scoring.
            reader = pd.read_csv(fh, dtype=str, na_filter=False, chunksize=chunk_rows)
            last = 0
            for chunk in reader:
                pos = fh.tell()
                on_bytes(pos - last)
                last = pos
                yield chunk
        except pd.errors.EmptyDataError:
            raise DataFileError(f"{path}: the file is empty") from None
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise DataFileError(f"{path}: not a valid CSV file ({first_line(exc)})") from None


def read_xlsx_text(path: Path) -> pd.DataFrame:
    """The first sheet of an XLSX workbook, every cell as text (as a CSV's cells are:
    a number as Python writes it, an empty cell as "").

    Row numbers match the spreadsheet's: the header is row 1, as a CSV's line 1.
    """
    with path.open("rb") as fh:
        head = fh.read(8)
    if not head.strip(b"\x00 \t\r\n"):
        raise DataFileError(f"{path}: the file is empty")
    if head.startswith(OLE_MAGIC):
        raise DataFileError(
            f"{path}: an old binary Excel file (.xls); save it as .xlsx or CSV and try again"
        )
    if not head.startswith(ZIP_MAGIC):
        raise DataFileError(f"{path}: not an XLSX file (an XLSX file is a ZIP archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(i.file_size for i in archive.infolist())
            if "xl/workbook.xml" not in archive.namelist():
                raise DataFileError(f"{path}: not an XLSX file (a ZIP archive without a workbook)")
    except zipfile.BadZipFile as exc:
        raise DataFileError(f"{path}: not an XLSX file ({exc})") from None
    if unpacked > MAX_XLSX_UNPACKED:
        raise DataFileError(
            f"{path}: the workbook would unpack to {unpacked} bytes; at most "
            f"{MAX_XLSX_UNPACKED} are read"
        )
    # openpyxl's streaming reader, values only: several times faster than
    # pandas.read_excel, which builds a cell object for every value first.
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True, keep_links=False)
        try:
            rows = [[cell_text(v) for v in row] for row in book.worksheets[0].values]
        finally:
            book.close()
    except Exception as exc:  # openpyxl raises many types for a damaged workbook
        raise DataFileError(f"{path}: not a readable XLSX file ({first_line(exc)})") from None
    while rows and not any(rows[-1]):  # formatted but empty rows at the end hold no data
        rows.pop()
    if not rows:
        raise DataFileError(f"{path}: the first sheet is empty")
    width = max(len(r) for r in rows)
    for row in rows:
        row.extend([""] * (width - len(row)))
    # Empty rows inside the data stay: their row numbers are the sheet's.
    return pd.DataFrame(rows[1:], columns=_header(rows[0]), dtype=object)


def _header(cells: list[str]) -> list[str]:
    """Column names as pandas gives a CSV's: `Unnamed: i` for an empty one, `name.1`
    for the second of a name."""
    seen: dict[str, int] = {}
    names = []
    for i, cell in enumerate(cells):
        name = cell or f"Unnamed: {i}"
        if name in seen:
            seen[name] += 1
            name = f"{name}.{seen[name]}"
        else:
            seen[name] = 0
        names.append(name)
    return names


def _write_xlsx(frames: list[pd.DataFrame], path: Path) -> None:
    """One sheet, header first, by openpyxl's streaming writer (several times faster
    than DataFrame.to_excel, which styles every cell)."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("scored")
    columns = list(frames[0].columns) if frames else list(OUTPUT_COLUMNS)
    sheet.append(columns)
    for frame in frames:
        for row in frame.itertuples(index=False, name=None):
            sheet.append([_excel_value(v) for v in row])
    book.save(path)


def _excel_value(value: Any) -> Any:
    """A text cell that is exactly how a number reads in the input (`cell_text`) goes
    back into a workbook as that number; any other text ("007", "1e3") stays text; a
    missing value is an empty cell."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float | np.floating):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if not isinstance(value, str):
        return value
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    if not np.isfinite(number) or cell_text(number) != value:
        return value
    return int(number) if number.is_integer() else number


def input_size(path: Path) -> int:
    """Progress total: rows for Parquet (known from metadata), bytes for CSV."""
    if is_parquet(path):
        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except Exception:
            return 0
    return path.stat().st_size


def _scored(chunk: pd.DataFrame, proba: np.ndarray, threshold: float, version: str) -> pd.DataFrame:
    # A shallow copy: the input columns are shared, not duplicated, in memory.
    out = chunk.copy(deep=False)
    stale = [c for c in OUTPUT_COLUMNS if c in out.columns]
    if stale:
        out = out.drop(columns=stale)
    out["death_probability"] = proba
    out["predicted_event"] = (proba >= threshold).astype(np.int8)
    out["model_version"] = version
    return out


class _Writer:
    """Appends scored chunks to a temporary file in the output's format."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._parquet: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._header = True
        self._frames: list[pd.DataFrame] = []

    def write(self, frame: pd.DataFrame) -> None:
        if is_xlsx(self.path):
            # A workbook is written whole at the end (a file of the upload limit's size).
            self._frames.append(frame)
            return
        if is_parquet(self.path):
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                # A column empty in the first chunk must still take text later.
                self._schema = pa.schema(
                    [
                        f.with_type(pa.string()) if pa.types.is_null(f.type) else f
                        for f in table.schema
                    ]
                ).remove_metadata()
                table = table.cast(self._schema)
                self._parquet = pq.ParquetWriter(self.tmp, self._schema)
            else:
                assert self._schema is not None
                table = table.cast(self._schema)
            self._parquet.write_table(table)
        else:
            with self.tmp.open("wb" if self._header else "ab") as fh:
                fh.write(_csv_bytes(frame, self._header))
            self._header = False

    def commit(self) -> None:
        if is_xlsx(self.path):
            _write_xlsx(self._frames, self.tmp)
        elif self._parquet is not None:
            self._parquet.close()
        elif self._header:  # no rows at all: still write the header-only file
            pd.DataFrame(columns=list(OUTPUT_COLUMNS)).to_csv(self.tmp, index=False)
        self.tmp.replace(self.path)

    def abort(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        self.tmp.unlink(missing_ok=True)


_NEEDS_QUOTES = r'[",\r\n]'


def _csv_bytes(frame: pd.DataFrame, header: bool) -> bytes:
    """One chunk as CSV, exactly as pandas would quote it.

    Arrow writes CSV several times faster than pandas but quotes every string
    unless told to quote none; so when no text cell needs quotes (the usual
    case) the body goes through Arrow unquoted, and otherwise through pandas.
    """
    head = frame.iloc[0:0].to_csv(index=False).encode() if header else b""
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, ValueError, TypeError):
        table = None  # mixed-type object columns: let pandas render them
    if table is not None and not any(
        pc.any(pc.match_substring_regex(table[c], _NEEDS_QUOTES)).as_py()
        for c in table.column_names
        if pa.types.is_string(table[c].type) or pa.types.is_large_string(table[c].type)
    ):
        sink = pa.BufferOutputStream()
        options = pacsv.WriteOptions(include_header=False, quoting_style="none")
        pacsv.write_csv(table, sink, write_options=options)
        return head + sink.getvalue().to_pybytes()
    return head + frame.to_csv(index=False, header=False).encode()


@dataclass
class CheckedChunk:
    """One chunk, validated: the rows to write and the model's inputs for them."""

    rows: int
    issues: list[RowIssue]  # line numbers in the file
    rejects: pd.DataFrame | None  # the bad rows with `line` and `reasons`, if any
    keep: pd.DataFrame  # the valid rows as they will be written (before scoring)
    inputs: pd.DataFrame  # the valid rows' typed model inputs


@dataclass
class ScoredChunk:
    """One chunk, validated and scored: what both the streamed and the Dask path write."""

    rows: int
    issues: list[RowIssue]
    rejects: pd.DataFrame | None
    scored: pd.DataFrame  # the valid rows with the three output columns


def check_chunk(
    chunk: pd.DataFrame, features: list[str], *, first_line: int, source: Path, output: Path
) -> CheckedChunk:
    """Validate a raw chunk (CSV cells as text, or Parquet values).

    `first_line` is the file line of the chunk's first row (2 for the first chunk
    of a CSV: the header is line 1). Clean chunks (the usual case) take the
    vectorised check; a chunk with any problem goes through `validate` for its
    row-level report.
    """
    required = [c for c in schema.FEATURE_NAMES if c in features]
    missing = [c for c in required if c not in chunk.columns]
    if missing:
        raise BatchError(f"{source}: missing required column(s): {', '.join(missing)}")
    options = SCORING if set(schema.FEATURE_NAMES) <= set(features) else PLANNING_SCORING
    chunk.index = pd.RangeIndex(len(chunk))  # row positions; no copy
    text_to_typed = _typed(output) and not is_parquet(source)
    parsed = chunk if is_parquet(source) else _na_masked(chunk, text_to_typed)
    fast = all_valid(parsed, options)
    issues: list[RowIssue] = []
    rejects = None
    if fast is not None:
        clean = fast
    else:
        clean, report = validate(parsed, str(source), options)
        issues = [_shift(i, first_line - 2) for i in report.issues]
    if issues:
        bad = sorted({i.line - first_line for i in issues if i.line is not None})
        reasons = _reasons(issues)
        rejects = chunk.iloc[bad].copy()
        rejects.insert(0, "line", [first_line + b for b in bad])
        rejects["reasons"] = [reasons[first_line + b] for b in bad]
    base = parsed if text_to_typed else chunk
    keep = base.iloc[clean.index.to_numpy()] if issues else base
    if text_to_typed:
        # Parquet and XLSX have types: the model's numeric inputs go out as numbers.
        keep = keep.assign(**{c: clean[c].to_numpy() for c in schema.NUMERIC if c in required})
    return CheckedChunk(len(chunk), issues, rejects, keep, clean[features])


def _typed(output: Path) -> bool:
    """Outputs whose cells have types (numbers stay numbers), unlike CSV's text."""
    return is_parquet(output) or is_xlsx(output)


def choose_model(columns: list[str] | pd.Index, bundle: Bundle) -> str:
    """`planning` for a file without any trait column (a planner's file: nothing is
    measured before planting) when the bundle has a planning classifier; else `full`."""
    if any(t in columns for t in schema.TRAITS) or not bundle.has(PLANNING, "classifier"):
        return FULL
    return PLANNING


def score_chunk(
    chunk: pd.DataFrame,
    compiled: CompiledModel,
    *,
    threshold: float,
    version: str,
    first_line: int,
    source: Path,
    output: Path,
) -> ScoredChunk:
    """Validate and score one chunk in this thread (the Dask path's unit of work)."""
    part = check_chunk(
        chunk, list(compiled.features), first_line=first_line, source=source, output=output
    )
    proba = compiled.proba_columns(part.inputs) if len(part.keep) else np.empty(0)
    return ScoredChunk(
        part.rows, part.issues, part.rejects, _scored(part.keep, proba, threshold, version)
    )


def score_file(
    source: Path,
    output: Path,
    bundle: Bundle,
    compiled: CompiledModel,
    *,
    on_error: OnError = "fail",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Callable[[int], None] = lambda n: None,
    planning: CompiledModel | None = None,
) -> BatchResult:
    """Score `source` into `output` with the full classifier `compiled`, or, for a
    file without trait columns, the bundle's planning classifier (`planning` when
    the caller has it parsed already)."""
    if source.resolve() == output.resolve():
        raise BatchError("the output would overwrite the input; choose another path")
    result = BatchResult(output=output)
    writer = _Writer(output)
    rejects = _Writer(rejects_path(output)) if on_error == "skip" else None
    features: list[str] = []
    line = 2  # first data line of a CSV (the header is line 1)
    # One chunk is scored in a worker thread (the kernels release the GIL) while
    # this thread writes the previous one and reads and validates the next.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="treesurv-score")
    pending: tuple[Future[np.ndarray], pd.DataFrame] | None = None

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            future, keep = pending
            pending = None
            writer.write(_scored(keep, future.result(), bundle.threshold, bundle.version))

    try:
        for chunk in _chunks(source, chunk_rows, progress):
            if not features:  # the first chunk: its columns choose the model
                result.model = choose_model(chunk.columns, bundle)
                if result.model == PLANNING:
                    compiled = planning or bundle.classifier(PLANNING)
                features = list(compiled.features)
            part = check_chunk(chunk, features, first_line=line, source=source, output=output)
            line += part.rows
            result.rows += part.rows
            if part.issues:
                result.note(part.issues, rejects, part.rejects)
            if result.issue_count and on_error == "fail":
                continue  # keep validating to report every bad row, write nothing
            if len(part.keep):
                future = pool.submit(compiled.proba_columns, part.inputs)
                flush()
                pending = (future, part.keep)
                result.scored += len(part.keep)
        flush()
        result.refuse(source, on_error)
        writer.commit()
        result.settle(rejects)
    except BaseException:
        writer.abort()
        if rejects is not None:
            rejects.abort()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return result


def _na_masked(chunk: pd.DataFrame, every_column: bool) -> pd.DataFrame:
    """Missing-value tokens ("NA", "") as missing: in the model's columns for
    validation, in every column when the output is typed (Parquet)."""
    columns = (
        list(chunk.columns)
        if every_column
        else [c for c in schema.FEATURE_NAMES if c in chunk.columns]
    )
    out = chunk.copy(deep=False)
    for c in columns:
        col = chunk[c]
        out[c] = col.mask(col.isin(NA_VALUES))
    return out


def _shift(issue: RowIssue, offset: int) -> RowIssue:
    if issue.line is None:
        return issue
    return RowIssue(issue.line + offset, issue.column, issue.value, issue.rule)


def _reasons(issues: list[RowIssue]) -> dict[int, str]:
    out: dict[int, list[str]] = {}
    for i in issues:
        if i.line is not None:
            out.setdefault(i.line, []).append(f"{i.column}={i.value}: {i.rule}")
    return {k: "; ".join(v) for k, v in out.items()}


def describe(result: BatchResult) -> dict[str, Any]:
    return {
        "rows": result.rows,
        "scored": result.scored,
        "rejected": result.rejected,
        "problems": result.issue_count,
        "output": str(result.output) if result.output else None,
        "rejects": str(result.rejects) if result.rejects else None,
        "model": result.model,
    }


def issue_report(result: BatchResult, source: str) -> ValidationReport:
    """The rows a batch could not score, as the validation report both the command
    line and the web page show (the first `MAX_REPORTED` problems)."""
    return ValidationReport(
        source=source, rows=result.rows, valid_rows=result.scored, issues=list(result.issues)
    )


UPLOAD_SUFFIXES = {"csv": ".csv", "xlsx": ".xlsx"}
UPLOAD_MEDIA_TYPES = {"csv": "text/csv", "xlsx": XLSX_MEDIA_TYPE}


@dataclass
class ScoredUpload:
    """A file scored from memory: the scored file's bytes and the report."""

    result: BatchResult
    report: ValidationReport
    content: bytes
    filename: str  # of the scored file: `<name>.scored.csv` or `.xlsx`
    media_type: str


def scored_name(filename: str, kind: str) -> str:
    """`trees.csv` -> `trees.scored.csv`: a plain name, whatever the client sent."""
    stem = Path(filename.replace("\\", "/")).stem
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip("._")
    return f"{safe[:100] or 'seedlings'}.scored{UPLOAD_SUFFIXES[kind]}"


def score_upload(
    data: bytes,
    filename: str,
    kind: Literal["csv", "xlsx"],
    bundle: Bundle,
    compiled: CompiledModel,
    *,
    planning: CompiledModel | None = None,
) -> ScoredUpload:
    """Score a file held in memory (the web page's upload) exactly as `treesurv
    predict --on-error skip` does: the bytes go to a private temporary directory,
    `score_file` scores them there, and the output is read back. Good rows are
    scored, bad ones reported; messages name `filename`, not the temporary path.

    Raises `DataFileError` for a file that cannot be read at all (not a CSV or XLSX
    file, empty, binary junk) and `BatchError` for one without the model's columns
    or without any row.
    """
    suffix = UPLOAD_SUFFIXES[kind]
    if kind == "csv" and data.startswith(ZIP_MAGIC):
        raise DataFileError(f"{filename}: an XLSX workbook (a ZIP archive), not a CSV file")
    with tempfile.TemporaryDirectory(prefix="treesurv-upload-") as tmp:
        source, output = Path(tmp) / f"input{suffix}", Path(tmp) / f"scored{suffix}"
        source.write_bytes(data)
        try:
            result = score_file(
                source, output, bundle, compiled, on_error="skip", planning=planning
            )
        except DataFileError as exc:
            raise DataFileError(str(exc).replace(str(source), filename)) from None
        except BatchError as exc:
            raise BatchError(str(exc).replace(str(source), filename), exc.result) from None
        if result.rows == 0:
            raise BatchError(f"{filename}: the file has no data rows", result)
        content = output.read_bytes()
    result.output = result.rejects = None  # gone with the temporary directory
    return ScoredUpload(
        result,
        issue_report(result, filename),
        content,
        scored_name(filename, kind),
        UPLOAD_MEDIA_TYPES[kind],
    )
