"""Uploaded data sets: validate a CSV / .npz file, store it in ``rnntune_datasets``, find it.

The bytes live in the database, so every worker and every API replica reads the same file
without a shared filesystem; workers copy it to local disk once (``objective.DataCache``).
A file is checked when it is uploaded, so a broken one is a 422 naming the reason, not a failed
study later. The checks here mirror ``rnntune.models.data`` (which the API cannot import: it pulls in
torch) and only look at the file; the spec's choices (target column, window) are checked against
what was found here when a study is submitted (:func:`check_spec`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rnntune.service.spec import StudySpec
from rnntune.service.tables import DatasetRow, StudyRow

FORMATS = ("csv", "npz", "text")  # text: a CSV or JSONL of labelled text (data.name: text)
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MISSING = ("", "nan", "na", "null")  # what rnntune.models.data reads as a missing value
ACTIVE_STUDY_STATES = ("queued", "running", "paused")


class InvalidDataset(ValueError):
    """The upload is not a usable data file (HTTP 422)."""


class DatasetConflict(Exception):
    """The name is taken, or a study still needs the data set (HTTP 409)."""


# --- names -------------------------------------------------------------------------------------


def default_name(filename: str) -> str:
    """``My Sales.csv`` -> ``my-sales``: the name a file gets when none is given."""
    stem = filename.rsplit("/", 1)[-1].rsplit("\\", 1)[-1].rsplit(".", 1)[0].lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-._")[:64]
    return name or "dataset"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidDataset(f"name must match {NAME_RE.pattern}, but got {name!r}")
    if name.isascii() and name.isdigit():
        raise InvalidDataset(f"name must not be all digits (a spec may name a data set by id), but got {name!r}")
    return name


def format_of(filename: str, fmt: str | None) -> str:
    if not fmt:
        fmt = filename.rsplit(".", 1)[-1] if "." in filename else ""
    fmt = fmt.lower()
    if fmt in ("jsonl", "ndjson"):  # JSON lines are always labelled text
        fmt = "text"
    if fmt not in FORMATS:
        raise InvalidDataset(
            f"format must be csv, npz or text (from the file's extension or the format field), but got {filename!r}"
        )
    return fmt


# --- validation --------------------------------------------------------------------------------


def inspect_file(content: bytes, fmt: str, *, delimiter: str = ",") -> dict[str, Any]:
    """What the file holds (stored as the data set's ``info``); raise InvalidDataset if broken."""
    if not content:
        raise InvalidDataset("the file is empty")
    if fmt == "text":
        return _inspect_text(content, delimiter)
    return _inspect_csv(content, delimiter) if fmt == "csv" else _inspect_npz(content)


def _inspect_text(content: bytes, delimiter: str) -> dict[str, Any]:
    """Labelled text, CSV (a header row) or JSONL (one object per line, found by a leading '{').

    Checks: UTF-8, parseable, at least two columns and one row. Which columns hold the text and
    the label is the spec's choice (``data.params.text_column`` / ``label_column``, default
    ``text`` / ``label``), checked against ``columns`` when a study is submitted."""
    import json

    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        raise InvalidDataset(
            f"the text file is not UTF-8: byte {content[exc.start : exc.start + 1]!r} at offset {exc.start} (line {line}); save it as UTF-8"
        ) from None
    text = text.removeprefix("\ufeff")
    if text.lstrip().startswith("{"):
        columns: dict[str, None] = {}
        rows = 0
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidDataset(f"line {number} is not JSON: {exc.msg}") from None
            if not isinstance(record, dict):
                raise InvalidDataset(f"line {number} is not a JSON object")
            columns.update(dict.fromkeys(record))
            rows += 1
        layout, header = "jsonl", list(columns)
    else:
        if len(delimiter) != 1:
            raise InvalidDataset(f"delimiter must be one character, but got {delimiter!r}")
        try:
            table = [
                row
                for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
                if any(c.strip() for c in row)
            ]
        except csv.Error as exc:
            raise InvalidDataset(f"the CSV cannot be parsed: {exc}") from None
        if not table:
            raise InvalidDataset("the file has no rows")
        layout, header, rows = "csv", [c.strip() for c in table[0]], len(table) - 1
    if len(header) < 2:
        raise InvalidDataset(f"labelled text needs a text and a label column, but the file has columns {header}")
    if rows < 1:
        raise InvalidDataset("the file has a header but no examples")
    return {"layout": layout, "rows": rows, "columns": header, "delimiter": delimiter}


def _inspect_csv(content: bytes, delimiter: str) -> dict[str, Any]:
    if len(delimiter) != 1:
        raise InvalidDataset(f"delimiter must be one character, but got {delimiter!r}")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidDataset(f"the CSV is not UTF-8 text: {exc}") from None
    try:
        rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in row)]
    except csv.Error as exc:
        raise InvalidDataset(f"the CSV cannot be parsed: {exc}") from None
    if not rows:
        raise InvalidDataset("the CSV has no rows")
    header = [c.strip() for c in rows[0]]
    body = rows[1:]
    if not body:
        raise InvalidDataset("the CSV has a header but no data rows")
    if any(not c for c in header):
        raise InvalidDataset(f"the CSV header has an empty column name: {header}")
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise InvalidDataset(f"the CSV header repeats columns {duplicates}")
    numeric, problems = [], {}
    for position, column in enumerate(header):
        n_missing, first_bad = 0, None
        for i, row in enumerate(body):
            cell = row[position].strip() if position < len(row) else ""
            if cell.lower() in MISSING:
                n_missing += 1
                continue
            try:
                value = float(cell)
            except ValueError:
                first_bad = first_bad or f"row {i + 2} holds {cell!r}"
                continue
            if not math.isfinite(value):
                n_missing += 1
        if first_bad:
            problems[column] = f"not numeric ({first_bad})"
        elif n_missing:
            problems[column] = f"{n_missing} missing/NaN/inf values"
        else:
            numeric.append(column)
    if not numeric:
        raise InvalidDataset(f"the CSV has no numeric column without missing values: {problems}")
    return {
        "rows": len(body),
        "columns": header,
        "numeric_columns": numeric,
        "other_columns": problems,
        "delimiter": delimiter,
    }


def _inspect_npz(content: bytes) -> dict[str, Any]:
    import numpy as np

    try:
        with np.load(io.BytesIO(content), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:
        raise InvalidDataset(f"not a readable .npz file: {type(exc).__name__}: {exc}") from None
    x = arrays.get("X", arrays.get("x"))
    y = arrays.get("y", arrays.get("Y"))
    if x is None or y is None:
        raise InvalidDataset(f"the .npz must hold arrays 'X' and 'y', but has {sorted(arrays)}")
    if x.ndim != 3 or 0 in x.shape:
        raise InvalidDataset(f"X must be a non-empty (N, T, F) array, but has shape {list(x.shape)}")
    if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] == 0):
        raise InvalidDataset(f"y must be (N,) or (N, K), but has shape {list(y.shape)}")
    if len(x) != len(y):
        raise InvalidDataset(f"X has {len(x)} samples but y has {len(y)}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise InvalidDataset(f"X must be numeric, but has dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise InvalidDataset(f"X has {int((~np.isfinite(x)).sum())} NaN/inf values")
    info: dict[str, Any] = {"X": list(x.shape), "y": list(y.shape)}
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        if y.ndim != 1:
            raise InvalidDataset(f"integer labels y must be (N,), but have shape {list(y.shape)}")
        if y.min() < 0:
            raise InvalidDataset(f"class labels must be >= 0, but y has {int(y.min())}")
        if int(y.max()) + 1 < 2:
            raise InvalidDataset("classification needs at least 2 classes, but y has 1")
        info.update(task="classification", n_classes=int(y.max()) + 1)
    elif np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)):
            raise InvalidDataset(f"y has {int((~np.isfinite(y)).sum())} NaN/inf values")
        info.update(task="regression")
    else:
        raise InvalidDataset(f"y must be integer labels or floats, but has dtype {y.dtype}")
    return info


# --- rows --------------------------------------------------------------------------------------


def create(session: Session, *, name: str, filename: str, fmt: str, content: bytes, delimiter: str = ",") -> DatasetRow:
    """Validate and store an upload; raise InvalidDataset or DatasetConflict. Commits."""
    check_name(name)
    if find(session, name) is not None:
        raise DatasetConflict(f"a dataset named {name!r} exists; delete it first or choose another name")
    info = inspect_file(content, fmt, delimiter=delimiter)
    row = DatasetRow(
        name=name,
        filename=filename[:255],
        format=fmt,
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
        info=info,
        content=content,
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # another upload took the name between the check and the insert
        session.rollback()
        raise DatasetConflict(f"a dataset named {name!r} exists; delete it first or choose another name") from None
    return row


def find(session: Session, ref: str | int) -> DatasetRow | None:
    """A data set by name, or by id (names are never all digits)."""
    ref = str(ref)
    row = session.scalar(select(DatasetRow).where(DatasetRow.name == ref))
    if row is None and ref.isascii() and ref.isdigit() and int(ref) < 2**31:  # ids are 32-bit integers
        row = session.get(DatasetRow, int(ref))
    return row


def content(session: Session, dataset_id: int) -> bytes:
    return session.scalar(select(DatasetRow.content).where(DatasetRow.id == dataset_id))


def list_all(session: Session) -> list[DatasetRow]:
    return list(session.scalars(select(DatasetRow).order_by(DatasetRow.name)))


def users(session: Session, row: DatasetRow, states: tuple[str, ...] = ACTIVE_STUDY_STATES) -> list[str]:
    """Names of the studies in ``states`` whose spec reads this data set."""
    refs = {row.name, str(row.id)}
    studies = session.execute(select(StudyRow.name, StudyRow.spec).where(StudyRow.state.in_(states))).all()
    return [name for name, spec in studies if (spec.get("data") or {}).get("dataset") in refs]


def remove(session: Session, row: DatasetRow) -> None:
    """Delete a data set no unfinished study needs; raise DatasetConflict otherwise. Commits."""
    needed_by = users(session, row)
    if needed_by:
        raise DatasetConflict(
            f"dataset {row.name!r} is used by unfinished studies {needed_by}; cancel them or wait until they end"
        )
    session.execute(delete(DatasetRow).where(DatasetRow.id == row.id))
    session.commit()


def public(row: DatasetRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "filename": row.filename,
        "format": row.format,
        "sha256": row.sha256,
        "size": row.size,
        "info": row.info,
        "created_at": row.created_at,
    }


# --- a spec that names a data set ------------------------------------------------------------


def check_spec(session: Session, spec: StudySpec) -> list[tuple[str, str]]:
    """(field, reason) for each way the spec's ``data.dataset`` does not fit the stored file."""
    d = spec.data
    if d.dataset is None:
        return []
    row = find(session, d.dataset)
    if row is None:
        return [("data.dataset", f"no dataset named {d.dataset!r} (upload it with POST /v1/datasets)")]
    if row.format != d.name:
        return [("data.name", f"dataset {row.name!r} is a {row.format} file, but data.name is {d.name!r}")]
    errors: list[tuple[str, str]] = []
    if row.format == "csv":
        numeric = row.info.get("numeric_columns", [])
        delimiter = d.params.get("delimiter", ",")
        if delimiter != row.info.get("delimiter", ","):
            errors.append(
                (
                    "data.params.delimiter",
                    f"dataset {row.name!r} was uploaded with delimiter {row.info.get('delimiter')!r}, but got {delimiter!r}",
                )
            )
        target = d.target or d.params.get("target")
        for loc, column in [("data.target", target), *(("data.inputs", c) for c in d.inputs or [])]:
            if column is not None and column not in numeric:
                other = row.info.get("other_columns", {}).get(column)
                why = f"is {other}" if other else "is not a column"
                errors.append((loc, f"column {column!r} of dataset {row.name!r} {why}; numeric columns: {numeric}"))
    elif row.format == "text":
        columns = row.info.get("columns", [])
        for key, default in (("text_column", "text"), ("label_column", "label")):
            column = d.params.get(key, default)
            if column not in columns:
                errors.append(
                    (f"data.params.{key}", f"column {column!r} is not in dataset {row.name!r}; columns: {columns}")
                )
        fmt = d.params.get("format")
        if fmt is not None and fmt != row.info.get("layout"):
            errors.append(
                ("data.params.format", f"dataset {row.name!r} is {row.info.get('layout')}, but got format={fmt!r}")
            )
    elif spec.metric in ("val_accuracy", "val_f1") and row.info.get("task") != "classification":
        errors.append(("metric", f"val_accuracy needs integer labels, but dataset {row.name!r} has float targets"))
    return errors
