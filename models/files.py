"""Bounded checks of user data files, shared by the API (uploads) and the workers (loading).

Every check reads its file as a stream, so memory stays a small multiple of one chunk (plus the
caller's bytes), whatever the file claims to hold:

- ``.npz``: each member's sizes come from the zip headers and its ``.npy`` header before a single
  value is decompressed; a member over the element cap, or one that expands more than the
  compression-ratio cap, is refused. Values are then checked chunk by chunk, never as a whole array.
- ``.npy`` (an embedding matrix): the same header checks.
- CSV and labelled text (CSV / JSONL): parsed row by row; only counts and column names are kept.

Errors name the problem and where (column, row, line), never a file's contents beyond its
column names: the caller may be reading a file its user was not meant to see.

Standard library and numpy only: the API imports this module and must not import torch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

MISSING = ("", "nan", "na", "null")  # what the data loaders read as a missing value
CHUNK_BYTES = 1 << 20  # values are checked this many bytes at a time


class FileCheckError(ValueError):
    """The file is not usable; the message names the reason, never the file's contents."""


@dataclass(frozen=True)
class FileLimits:
    """``max_elements``: values in one array (and in all of an .npz's together);
    ``max_compression_ratio``: uncompressed / compressed size of one .npz member;
    ``max_columns``: columns of a CSV header (or keys of a JSONL file);
    ``max_classes``: classes a classification file implies (an .npz's largest label + 1, a text
    file's distinct labels): the model's head and every per-class table grow with it;
    ``max_vocab`` / ``max_text_length``: a text data set's vocabulary (its most frequent tokens)
    and the tokens kept per text (the padded length), when the spec sets none, and their caps;
    ``max_text_cells``: a text data set's padded token ids, rows x padded length (8 bytes each)."""

    max_elements: int = 2**27
    max_compression_ratio: float = 200.0
    max_columns: int = 4096
    max_classes: int = 1000
    max_vocab: int = 100_000
    max_text_length: int = 512
    max_text_cells: int = 2**27


def check_classes(n_classes: int, limits: FileLimits, where: str) -> None:
    """FileCheckError when ``n_classes`` is over ``limits.max_classes`` (RNNTUNE_MAX_CLASSES)."""
    if n_classes > limits.max_classes:
        raise FileCheckError(
            f"{where} implies {n_classes} classes, over the limit of {limits.max_classes} (RNNTUNE_MAX_CLASSES)"
        )


def check_header(header: list[str], limits: FileLimits, *, unique: bool = True) -> None:
    """A header's width within ``limits.max_columns`` and (``unique``) no repeated name, in linear time."""
    if len(header) > limits.max_columns:
        raise FileCheckError(
            f"the header has {len(header)} columns, over the limit of {limits.max_columns} (RNNTUNE_MAX_COLUMNS)"
        )
    counts = Counter(header)
    duplicates = sorted(c for c, n in counts.items() if n > 1)
    if unique and duplicates:
        raise FileCheckError(f"the CSV header repeats columns {duplicates[:20]}")


# --- arrays ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrayHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def read_npy_header(stream: IO[bytes], where: str) -> ArrayHeader:
    """The shape and dtype an ``.npy`` stream declares, read without loading any value."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise FileCheckError(f"{where}: unsupported .npy version {version}")
    except FileCheckError:
        raise
    except Exception:  # numpy raises ValueError / OSError / SyntaxError on a malformed header
        raise FileCheckError(f"{where}: not a readable .npy array (malformed header)") from None
    if dtype.hasobject:
        raise FileCheckError(f"{where}: object arrays (pickles) are not accepted")
    return ArrayHeader(tuple(int(n) for n in shape), dtype, bool(fortran_order))


def _check_elements(header: ArrayHeader, where: str, limits: FileLimits) -> None:
    if header.size > limits.max_elements:
        raise FileCheckError(
            f"{where}: shape {list(header.shape)} holds {header.size} values, over the limit of "
            f"{limits.max_elements} (RNNTUNE_MAX_UPLOAD_ELEMENTS)"
        )


def _chunks(stream: IO[bytes], header: ArrayHeader, where: str) -> Iterator[np.ndarray]:
    """The array's values, a chunk at a time (flat; order does not matter to the checks)."""
    itemsize = header.dtype.itemsize
    left = header.size * itemsize
    step = max(itemsize, CHUNK_BYTES // itemsize * itemsize)
    while left:
        raw = stream.read(min(step, left))
        if not raw or len(raw) % itemsize:
            raise FileCheckError(f"{where}: the file is shorter than its header says")
        left -= len(raw)
        yield np.frombuffer(raw, dtype=header.dtype)


@dataclass
class _Summary:
    """What the checks need of an array's values, gathered chunk by chunk."""

    n_nonfinite: int = 0
    low: float | None = None
    high: float | None = None

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        if np.issubdtype(values.dtype, np.inexact):
            bad = ~np.isfinite(values)
            self.n_nonfinite += int(bad.sum())
            values = values[~bad]
            if values.size == 0:
                return
        low, high = values.min(), values.max()
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)


def _summarise(stream: IO[bytes], header: ArrayHeader, where: str) -> _Summary:
    summary = _Summary()
    for values in _chunks(stream, header, where):
        summary.add(values)
    return summary


def _is_numeric(dtype: np.dtype) -> bool:
    if dtype.kind == "b":
        return True
    return bool(np.issubdtype(dtype, np.number)) and not np.issubdtype(dtype, np.complexfloating)


def check_npz(source: str | bytes | IO[bytes], limits: FileLimits = FileLimits()) -> dict[str, Any]:
    """Check an ``.npz`` of ``X`` (N, T, F), ``y`` (N,) labels or (N, K) targets and optionally
    ``lengths`` (N,) (variable-length sequences, padded to T) without loading it; return its
    ``info`` (shapes, task, classes, the lengths' range). ``source``: a path, bytes or a file."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise FileCheckError("not a readable .npz file (not a zip archive)") from None
    with archive:
        members = {}
        total = 0
        for member in archive.infolist():
            key = member.filename.removesuffix(".npy")
            where = f"array {key!r}"
            ratio = member.file_size / max(member.compress_size, 1)
            if ratio > limits.max_compression_ratio:
                raise FileCheckError(
                    f"{where}: expands {ratio:.0f}x when decompressed, over the limit of "
                    f"{limits.max_compression_ratio:g}x (RNNTUNE_MAX_COMPRESSION_RATIO)"
                )
            try:
                with archive.open(member) as stream:
                    header = read_npy_header(stream, where)
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError):
                raise FileCheckError(f"{where}: cannot be read from the archive") from None
            _check_elements(header, where, limits)
            if member.file_size < header.size * header.dtype.itemsize:
                raise FileCheckError(f"{where}: the file is shorter than its header says")
            total += header.size
            if total > limits.max_elements:
                raise FileCheckError(
                    f"the arrays hold {total}+ values together, over the limit of {limits.max_elements} "
                    "(RNNTUNE_MAX_UPLOAD_ELEMENTS)"
                )
            members[key] = (member, header)
        x_key = next((k for k in ("X", "x") if k in members), None)
        y_key = next((k for k in ("y", "Y") if k in members), None)
        if x_key is None or y_key is None:
            raise FileCheckError(f"the .npz must hold arrays 'X' and 'y', but has {sorted(members)}")
        x, y = members[x_key][1], members[y_key][1]
        if len(x.shape) != 3 or 0 in x.shape:
            raise FileCheckError(f"X must be a non-empty (N, T, F) array, but has shape {list(x.shape)}")
        if len(y.shape) not in (1, 2) or (len(y.shape) == 2 and y.shape[1] == 0):
            raise FileCheckError(f"y must be (N,) or (N, K), but has shape {list(y.shape)}")
        if x.shape[0] != y.shape[0]:
            raise FileCheckError(f"X has {x.shape[0]} samples but y has {y.shape[0]}")
        if not _is_numeric(x.dtype):
            raise FileCheckError(f"X must be numeric, but has dtype {x.dtype}")
        with archive.open(members[x_key][0]) as stream:
            read_npy_header(stream, "X")
            xs = _summarise(stream, x, "X")
        if xs.n_nonfinite:
            raise FileCheckError(f"X has {xs.n_nonfinite} NaN/inf values")
        if not _is_numeric(y.dtype):  # structured, string or complex: no labels or targets
            raise FileCheckError(f"y must be integer labels or floats, but has dtype {y.dtype}")
        with archive.open(members[y_key][0]) as stream:
            read_npy_header(stream, "y")
            ys = _summarise(stream, y, "y")
        lengths = _check_lengths(archive, members.get("lengths"), x.shape)
    info: dict[str, Any] = {"X": list(x.shape), "y": list(y.shape), **lengths}
    if np.issubdtype(y.dtype, np.integer) or y.dtype.kind == "b":
        if len(y.shape) != 1:
            raise FileCheckError(f"integer labels y must be (N,), but have shape {list(y.shape)}")
        low, high = int(ys.low or 0), int(ys.high or 0)  # y has N >= 1 values: both are set
        if low < 0:
            raise FileCheckError(f"class labels must be >= 0, but y has {low}")
        if high + 1 < 2:
            raise FileCheckError("classification needs at least 2 classes, but y has 1")
        check_classes(high + 1, limits, f"y's largest label, {high},")
        info.update(task="classification", n_classes=high + 1)
    elif np.issubdtype(y.dtype, np.floating):
        if ys.n_nonfinite:
            raise FileCheckError(f"y has {ys.n_nonfinite} NaN/inf values")
        info.update(task="regression")
    else:
        raise FileCheckError(f"y must be integer labels or floats, but has dtype {y.dtype}")
    return info


def _check_lengths(
    archive: zipfile.ZipFile, member: tuple[zipfile.ZipInfo, ArrayHeader] | None, x_shape: tuple[int, ...]
) -> dict[str, Any]:
    """An .npz's optional ``lengths`` (N,): each padded sequence's real steps, a plain integer
    array with 1 <= lengths <= T. {} without one, else its range for the data set's info."""
    if member is None:
        return {}
    n, steps = x_shape[0], x_shape[1]
    header = member[1]
    if header.dtype.kind not in "iu" or header.dtype.names is not None:
        raise FileCheckError(f"lengths must be a plain integer array, but has dtype {header.dtype}")
    if header.shape != (n,):
        raise FileCheckError(f"lengths must have shape [{n}] (one per sequence of X), but has {list(header.shape)}")
    with archive.open(member[0]) as stream:
        read_npy_header(stream, "lengths")
        summary = _summarise(stream, header, "lengths")
    low, high = int(summary.low or 0), int(summary.high or 0)  # N >= 1 values: both are set
    if low < 1:
        raise FileCheckError(f"lengths must be >= 1 (every sequence has a step), but lengths has {low}")
    if high > steps:
        raise FileCheckError(f"lengths must be <= T = {steps} (X's padded steps), but lengths has {high}")
    return {"lengths": [low, high]}


def check_npy(source: str | bytes | IO[bytes], limits: FileLimits = FileLimits()) -> dict[str, Any]:
    """Check an ``.npy`` embedding matrix (V, D) of finite floats without loading it."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    stream = open(source, "rb") if isinstance(source, str) else source  # noqa: SIM115 -- closed below
    try:
        header = read_npy_header(stream, "the matrix")
        _check_elements(header, "the matrix", limits)
        if len(header.shape) != 2 or 0 in header.shape:
            raise FileCheckError(
                f"an embedding matrix must be a non-empty (V, D) array, but has shape {list(header.shape)}"
            )
        if not np.issubdtype(header.dtype, np.floating):
            raise FileCheckError(f"an embedding matrix must hold floats, but has dtype {header.dtype}")
        summary = _summarise(stream, header, "the matrix")
    finally:
        if isinstance(source, str):
            stream.close()
    if summary.n_nonfinite:
        raise FileCheckError(f"the matrix has {summary.n_nonfinite} NaN/inf values")
    return {"shape": list(header.shape), "dtype": str(header.dtype)}


# --- text ------------------------------------------------------------------------------------


def _text_lines(source: bytes | IO[bytes], *, strip_bom: bool = True) -> Iterator[str]:
    """Decoded lines of a UTF-8 stream; FileCheckError naming the line of a bad byte."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    first = True
    for number, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FileCheckError(
                f"the file is not UTF-8 text: an invalid byte on line {number} (column {exc.start + 1}); save it as UTF-8"
            ) from None
        if first and strip_bom:
            line = line.removeprefix("\ufeff")
            first = False
        yield line


def _rows(source: bytes | IO[bytes], delimiter: str) -> Iterator[list[str]]:
    """Non-blank CSV rows, one at a time."""
    if len(delimiter) != 1:
        raise FileCheckError(f"delimiter must be one character, but got {delimiter!r}")
    try:
        for row in csv.reader(_text_lines(source), delimiter=delimiter):
            if any(cell.strip() for cell in row):
                yield row
    except csv.Error as exc:
        raise FileCheckError(f"the CSV cannot be parsed: {exc}") from None


def check_csv(source: bytes | IO[bytes], delimiter: str = ",", limits: FileLimits = FileLimits()) -> dict[str, Any]:
    """A time-series CSV: a header, then rows; which columns are numeric without gaps."""
    rows = _rows(source, delimiter)
    header = [cell.strip() for cell in next(rows, [])]
    if not header:
        raise FileCheckError("the CSV has no rows")
    check_header(header, limits)
    if any(not c for c in header):
        raise FileCheckError(f"the CSV header has an empty column name (column {header.index('') + 1})")
    n_missing = [0] * len(header)
    first_bad: list[int | None] = [None] * len(header)
    n_rows = 0
    for n_rows, row in enumerate(rows, start=1):
        for position in range(len(header)):
            cell = row[position].strip() if position < len(row) else ""
            if cell.lower() in MISSING:
                n_missing[position] += 1
                continue
            try:
                value = float(cell)
            except ValueError:
                if first_bad[position] is None:
                    first_bad[position] = n_rows + 1
                continue
            if not math.isfinite(value):
                n_missing[position] += 1
    if not n_rows:
        raise FileCheckError("the CSV has a header but no data rows")
    numeric, problems = [], {}
    for position, column in enumerate(header):
        if first_bad[position] is not None:
            problems[column] = f"not numeric (row {first_bad[position]})"
        elif n_missing[position]:
            problems[column] = f"{n_missing[position]} missing/NaN/inf values"
        else:
            numeric.append(column)
    if not numeric:
        raise FileCheckError(f"the CSV has no numeric column without missing values: {problems}")
    return {
        "rows": n_rows,
        "columns": header,
        "numeric_columns": numeric,
        "other_columns": problems,
        "delimiter": delimiter,
    }


def jsonl_records(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of JSON Lines text, one at a time;
    FileCheckError naming the first line that is not a JSON object."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FileCheckError(f"line {number} is not JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise FileCheckError(f"line {number} is not a JSON object")
        yield number, record


def check_text(source: bytes | IO[bytes], delimiter: str = ",", limits: FileLimits = FileLimits()) -> dict[str, Any]:
    """Labelled text: CSV (a header row) or JSONL (one object per line, found by a leading '{').

    At least two columns and one row. Which columns hold the text and the label is the spec's
    choice, checked against ``columns`` when a study is submitted."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    start = stream.tell()
    head = next((line for line in _text_lines(stream) if line.strip()), None)
    if head is None:
        raise FileCheckError("the file has no rows")
    stream.seek(start)  # read again from the top: the head was only a look
    if head.lstrip().startswith("{"):
        columns: dict[str, None] = {}
        rows = 0
        for number, record in jsonl_records(_text_lines(stream)):
            columns.update(dict.fromkeys(str(k) for k in record))
            if len(columns) > limits.max_columns:
                raise FileCheckError(
                    f"line {number}: the records have over {limits.max_columns} distinct keys (RNNTUNE_MAX_COLUMNS)"
                )
            rows += 1  # noqa: SIM113 (a count, read after the loop)
        layout, header = "jsonl", list(columns)
    else:
        table = _rows(stream, delimiter)
        header = [c.strip() for c in next(table, [])]
        check_header(header, limits, unique=False)
        rows = sum(1 for _ in table)
        layout = "csv"
    if len(header) < 2:
        raise FileCheckError(f"labelled text needs a text and a label column, but the file has columns {header}")
    if rows < 1:
        raise FileCheckError("the file has a header but no examples")
    return {"layout": layout, "rows": rows, "columns": header, "delimiter": delimiter}


def check_vocab(source: bytes | IO[bytes], limits: FileLimits = FileLimits()) -> dict[str, Any]:
    """An embedding matrix's vocabulary: UTF-8, one token per line."""
    n = 0
    for n, line in enumerate(_text_lines(source), start=1):
        if not line.rstrip("\r\n"):
            raise FileCheckError(f"line {n} is empty: a vocabulary holds one token per line")
        if n > limits.max_elements:
            raise FileCheckError(f"over {limits.max_elements} tokens (RNNTUNE_MAX_UPLOAD_ELEMENTS)")
    if not n:
        raise FileCheckError("the vocabulary is empty")
    return {"tokens": n}
