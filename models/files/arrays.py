"""Array files: an ``.npz`` of X, y (and lengths) and an ``.npy`` embedding matrix, checked unloaded.

Each array's shape and dtype come from its ``.npy`` header (and, in an .npz, its size from the zip
headers) before a single value is decompressed; values are then read chunk by chunk, never as a
whole array, and only their count of NaN/inf and their range are kept.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from rnntune.models.files.limits import FileCheckError, FileLimits, check_classes

CHUNK_BYTES = 1 << 20  # values are checked this many bytes at a time


@dataclass(frozen=True)
class ArrayHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def size(self) -> int:
        return math.prod(self.shape)


# an .npz member: its zip entry and the header of the .npy inside
_Member = tuple[zipfile.ZipInfo, ArrayHeader]


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


def _summarise_member(archive: zipfile.ZipFile, member: _Member, where: str) -> _Summary:
    """An .npz member's values, summarised from a fresh stream (past its header)."""
    with archive.open(member[0]) as stream:
        read_npy_header(stream, where)
        return _summarise(stream, member[1], where)


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
        members = _read_members(archive, limits)
        x_member, y_member = _x_and_y(members)
        x, y = x_member[1], y_member[1]
        if not _is_numeric(x.dtype):
            raise FileCheckError(f"X must be numeric, but has dtype {x.dtype}")
        xs = _summarise_member(archive, x_member, "X")
        if xs.n_nonfinite:
            raise FileCheckError(f"X has {xs.n_nonfinite} NaN/inf values")
        if not _is_numeric(y.dtype):  # structured, string or complex: no labels or targets
            raise FileCheckError(f"y must be integer labels or floats, but has dtype {y.dtype}")
        ys = _summarise_member(archive, y_member, "y")
        lengths = _check_lengths(archive, members.get("lengths"), x.shape)
    info: dict[str, Any] = {"X": list(x.shape), "y": list(y.shape), **lengths}
    return info | _target_info(y, ys, limits)


def _read_members(archive: zipfile.ZipFile, limits: FileLimits) -> dict[str, _Member]:
    """Every member by its array name, its sizes checked from the zip and .npy headers alone:
    the compression ratio, the values it declares (one array's and all arrays' together) and
    that the entry is long enough to hold them."""
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
    return members


def _x_and_y(members: dict[str, _Member]) -> tuple[_Member, _Member]:
    """The members X (N, T, F) and y (N,) or (N, K), by either case of their names, shapes checked."""
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
    return members[x_key], members[y_key]


def _target_info(y: ArrayHeader, ys: _Summary, limits: FileLimits) -> dict[str, Any]:
    """The task y implies: integer labels (N,) classify into largest label + 1 classes, floats
    regress (and must be finite)."""
    if np.issubdtype(y.dtype, np.integer) or y.dtype.kind == "b":
        if len(y.shape) != 1:
            raise FileCheckError(f"integer labels y must be (N,), but have shape {list(y.shape)}")
        low, high = int(ys.low or 0), int(ys.high or 0)  # y has N >= 1 values: both are set
        if low < 0:
            raise FileCheckError(f"class labels must be >= 0, but y has {low}")
        if high + 1 < 2:
            raise FileCheckError("classification needs at least 2 classes, but y has 1")
        check_classes(high + 1, limits, f"y's largest label, {high},")
        return {"task": "classification", "n_classes": high + 1}
    if np.issubdtype(y.dtype, np.floating):
        if ys.n_nonfinite:
            raise FileCheckError(f"y has {ys.n_nonfinite} NaN/inf values")
        return {"task": "regression"}
    raise FileCheckError(f"y must be integer labels or floats, but has dtype {y.dtype}")


def _check_lengths(archive: zipfile.ZipFile, member: _Member | None, x_shape: tuple[int, ...]) -> dict[str, Any]:
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
    summary = _summarise_member(archive, member, "lengths")
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
