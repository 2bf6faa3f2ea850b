"""Reading and writing the project's files: tables (CSV or Parquet, by extension),
JSON written atomically, and checksums. A file that cannot be read at all raises
`DataFileError` with a one-line reason."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from treesurv.core import schema
from treesurv.core.errors import InputError

NA_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]


PARQUET_SUFFIXES = (".parquet", ".pq")
XLSX_SUFFIXES = (".xlsx",)
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class DataFileError(InputError):
    """A data file that cannot be read at all; the message is one line."""


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def is_xlsx(path: Path) -> bool:
    return path.suffix.lower() in XLSX_SUFFIXES


def sniff_text(path: Path) -> None:
    """Refuse binary files early with a reason, instead of a parser traceback."""
    with path.open("rb") as fh:
        head = fh.read(64 * 1024)
    if not head.strip():
        raise DataFileError(f"{path}: the file is empty")
    if b"\x00" in head:
        raise DataFileError(f"{path}: not a CSV file (it contains binary data)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the 64 KiB boundary is not an error.
        if exc.start < len(head) - 4:
            raise DataFileError(
                f"{path}: not a CSV file (not UTF-8 text at byte {exc.start})"
            ) from None


def read_table(path: Path | str, *, as_text: bool = True) -> pd.DataFrame:
    """Read a CSV or Parquet file; CSV cells stay text so validation can report them.

    Raises DataFileError with a one-line reason when the file cannot be parsed.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: no such file")
    if path.is_dir():
        raise DataFileError(f"{path}: is a directory, not a data file")
    if is_parquet(path):
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types; the reason is what matters
            raise DataFileError(
                f"{path}: not a readable Parquet file ({first_line(exc)})"
            ) from None
    sniff_text(path)
    try:
        frame = pd.read_csv(
            path,
            dtype=str if as_text else None,
            keep_default_na=False,
            na_values=NA_VALUES,
            skipinitialspace=False,
        )
    except pd.errors.EmptyDataError:
        raise DataFileError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataFileError(f"{path}: not a valid CSV file ({first_line(exc)})") from None
    if len(frame.columns) == 1 and len(frame) and not _looks_like_header(frame.columns[0]):
        raise DataFileError(f"{path}: not a CSV file (found a single column, no commas)")
    return frame


def _looks_like_header(name: str) -> bool:
    return name in schema.FEATURE_NAMES or name in (schema.ID, schema.TARGET)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def write_table(frame: pd.DataFrame, path: Path | str) -> None:
    """Write CSV or Parquet (by extension) atomically: a crash leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if is_parquet(path):
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_csv(tmp, index=False)
    tmp.replace(path)


def file_md5(path: Path | str) -> str:
    # DVC identifies data by md5; not for security.
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(obj: Any, path: Path | str) -> None:
    """Write JSON atomically (write beside, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    tmp.replace(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
