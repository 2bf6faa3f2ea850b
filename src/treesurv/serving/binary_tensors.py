"""Triton's binary tensor data extension of the Open Inference Protocol: the codec.

A request or answer whose tensors travel as binary is one JSON object followed by the
raw tensor data; the `Inference-Header-Content-Length` header gives the JSON's length,
and each binary tensor's `binary_data_size` parameter its share of the rest, in the
order the tensors are listed. Fixed-size types are little-endian, row major, without
padding; a BYTES element is a 4-byte little-endian unsigned length and its bytes.

Pure functions over bytes and arrays: no HTTP here. A `BinaryDataError` says what is
wrong without naming the tensor; the caller adds that.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

HEADER = "Inference-Header-Content-Length"
SIZE = "binary_data_size"  # parameter of an input or output sent as binary
OUTPUT = "binary_data"  # parameter of a requested output: answer it as binary
ALL_OUTPUTS = "binary_data_output"  # request parameter: every output as binary by default
EXTENSION = "binary_tensor_data"  # as listed in the server metadata
MEDIA_TYPE = "application/octet-stream"

# The fixed-size datatypes and their little-endian NumPy types (BF16 has none).
FIXED: dict[str, np.dtype[np.generic]] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "?",
        "UINT8": "u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "INT8": "i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}
_LENGTH = struct.Struct("<I")  # a BYTES element's length prefix


class BinaryDataError(ValueError):
    """Binary tensor data that cannot be read as declared."""


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON part and the binary part of a body, from the header's value (None:
    no header, the whole body is JSON)."""
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not text.isascii() or not text.isdigit():
        raise BinaryDataError(
            f"{HEADER} must be the JSON part's length in bytes, got {header_length!r}"
        )
    length = int(text)
    if not 0 < length <= len(body):
        raise BinaryDataError(
            f"{HEADER} is {length} but the body holds {len(body)} bytes; "
            "it must be the length of the JSON object at the start of the body"
        )
    return body[:length], body[length:]


def data_size(value: object) -> int:
    """A `binary_data_size` parameter's value, checked."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BinaryDataError(f"{SIZE} must be a whole number of bytes >= 0, got {value!r}")
    return value


def split_data(binary: bytes, sizes: Sequence[int]) -> list[bytes]:
    """The binary part cut into the tensors' shares, in order; every byte accounted for."""
    if sum(sizes) != len(binary):
        raise BinaryDataError(
            f"the binary tensors declare {sum(sizes)} bytes ({SIZE} of each) "
            f"but {len(binary)} follow the JSON object"
        )
    out: list[bytes] = []
    start = 0
    for size in sizes:
        out.append(binary[start : start + size])
        start += size
    return out


def decode_fixed(raw: bytes, datatype: str, count: int) -> np.ndarray:
    """`count` elements of a fixed-size datatype (a read-only view of `raw`)."""
    dtype = FIXED.get(datatype)
    if dtype is None:
        raise BinaryDataError(f"datatype {datatype!r} cannot be read as binary data here")
    if len(raw) != count * dtype.itemsize:
        raise BinaryDataError(
            f"{count} {datatype} values take {count * dtype.itemsize} bytes, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype, count=count)


def _elements(raw: bytes, count: int, text: bool) -> list[Any]:
    """The `count` BYTES elements of `raw`, each after its 4-byte little-endian length,
    as bytes or (`text`) as UTF-8 text; BinaryDataError if the lengths do not tile
    `raw` or an element is not text. One pass: this runs for every categorical value
    of a binary request."""
    out: list[Any] = []
    append, unpack, size, end, pos = out.append, _LENGTH.unpack_from, _LENGTH.size, len(raw), 0
    for i in range(count):
        if pos + size > end:
            raise BinaryDataError(
                f"BYTES data ends at element {i} of {count}: no 4-byte length at byte {pos}"
            )
        (length,) = unpack(raw, pos)
        pos += size
        stop = pos + length
        if stop > end:
            raise BinaryDataError(
                f"BYTES element {i} declares {length} bytes but only {end - pos} remain"
            )
        item = raw[pos:stop]
        if text:
            try:
                append(item.decode("utf-8"))
            except UnicodeDecodeError:
                raise BinaryDataError(f"element {i} is not UTF-8 text: {item[:40]!r}") from None
        else:
            append(item)
        pos = stop
    if pos != end:
        raise BinaryDataError(f"{end - pos} bytes left after the {count} BYTES elements")
    return out


_ZEROS = b"\x00\x00\x00"  # the top bytes of the length prefix of an element under 256 bytes


@lru_cache(maxsize=64)
def _pieces(categories: tuple[str, ...]) -> tuple[dict[bytes, int], dict[bytes, int], np.ndarray]:
    """What `category_codes` looks pieces up in: a category's bytes followed by the
    first byte of the next element's length (code * 256 + that byte), a category's bytes
    alone (the last element: its code), and each category's length in bytes."""
    encoded = [c.encode("utf-8") for c in categories]
    if any(not 0 < len(e) < 256 or _ZEROS in e for e in encoded):
        return {}, {}, np.zeros(0, dtype=np.int64)  # never matches: read one by one
    lengths = {len(e) for e in encoded}
    middle = {e + bytes([n]): k * 256 + n for k, e in enumerate(encoded) for n in lengths}
    last = {e: k for k, e in enumerate(encoded)}
    return middle, last, np.array([len(e) for e in encoded], dtype=np.int64)


def category_codes(raw: bytes, count: int, categories: Sequence[str]) -> np.ndarray | None:
    """`count` BYTES elements that are all among `categories` (short strings), as their
    indices there; None if they are not, or the data are not as declared (then
    `decode_text` reads them one by one and names the problem).

    Without a Python step per element: an element under 256 bytes has the length
    prefix `n 0 0 0`, so splitting `raw` at three zero bytes gives the first length,
    then each element followed by the next one's length, then the last element; each
    piece is looked up whole. When every element is as long as its prefix says, the
    pieces tile `raw` exactly as the prefixes declare."""
    middle, last, lengths = _pieces(tuple(categories))
    pieces = raw.split(_ZEROS)
    if count < 1 or len(pieces) != count + 1 or len(pieces[0]) != 1:
        return None
    try:
        found = np.fromiter(map(middle.__getitem__, pieces[1:-1]), dtype=np.int64, count=count - 1)
        final = last[pieces[-1]]
    except KeyError:  # not a category (or not followed by a category's length)
        return None
    codes = np.append(found >> 8, final)
    declared = np.append(pieces[0][0], found & 0xFF)  # each element's length prefix
    return codes if np.array_equal(declared, lengths[codes]) else None


def decode_bytes(raw: bytes, count: int) -> list[bytes]:
    """`count` BYTES elements, each a 4-byte little-endian length and its bytes."""
    return _elements(raw, count, text=False)


def decode_text(raw: bytes, count: int) -> list[str]:
    """BYTES elements as UTF-8 text; the error names the first element that is not."""
    return _elements(raw, count, text=True)


def encode_fixed(values: Iterable[float] | np.ndarray, datatype: str) -> bytes:
    """Values as the little-endian binary of a fixed-size datatype."""
    return np.asarray(values, dtype=FIXED[datatype]).tobytes()


def encode_bytes(items: Iterable[str | bytes]) -> bytes:
    """BYTES elements (text as UTF-8), each prefixed by its 4-byte little-endian length."""
    parts: list[bytes] = []
    for item in items:
        data = item.encode("utf-8") if isinstance(item, str) else item
        parts.append(len(data).to_bytes(4, "little"))
        parts.append(data)
    return b"".join(parts)
