"""Uploaded data sets: validate a CSV / .npz file, store it in ``rnntune_datasets``, find it.

The bytes live in the database, so every worker and every API replica reads the same file
without a shared filesystem; workers copy it to local disk once (``objective.DataCache``).
A file is checked when it is uploaded, so a broken one is a 422 naming the reason, not a failed
study later. The checks here mirror ``rnntune.models.data`` (which the API cannot import: it pulls in
torch) and only look at the file; the spec's choices (target column, window) are checked against
what was found here when a study is submitted (:func:`check_spec`).
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rnntune.service.spec import Limits, StudySpec, check_limits, is_path, stored_spec

if TYPE_CHECKING:
    from rnntune.models.files import FileLimits
from rnntune.service.tables import DatasetRow, StudyRow

# text: a CSV or JSONL of labelled text (data.name: text); npy: an embedding matrix (V, D) and
# vocab: its tokens, one per line (data.params.embeddings / embeddings_vocab name them).
FORMATS = ("csv", "npz", "text", "npy", "vocab")
EXTENSIONS = {"jsonl": "text", "ndjson": "text", "txt": "vocab"}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
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
    fmt = EXTENSIONS.get(fmt, fmt)  # JSON lines are always labelled text, .txt a vocabulary
    if fmt not in FORMATS:
        raise InvalidDataset(
            f"format must be one of {', '.join(FORMATS)} (from the file's extension or the format field), "
            f"but got {filename!r}"
        )
    return fmt


# --- validation --------------------------------------------------------------------------------


def inspect_file(content: bytes, fmt: str, *, delimiter: str = ",", limits: FileLimits | None = None) -> dict[str, Any]:
    """What the file holds (stored as the data set's ``info``); raise InvalidDataset if broken.

    The checks (``rnntune.models.files``, shared with the workers) read the bytes as a stream:
    an .npz or .npy is judged by its headers before any value is decompressed, and memory stays
    a small multiple of one chunk whatever the file claims to hold."""
    from rnntune.models import files  # numpy only, never torch (the API must start fast)

    limits = limits or files.FileLimits()
    if not content:
        raise InvalidDataset("the file is empty")
    try:
        if fmt == "text":
            return files.check_text(content, delimiter)
        if fmt == "csv":
            return files.check_csv(content, delimiter)
        if fmt == "npz":
            return files.check_npz(content, limits)
        if fmt == "npy":
            return files.check_npy(content, limits)
        return files.check_vocab(content, limits)
    except files.FileCheckError as exc:
        raise InvalidDataset(str(exc)) from None


# --- rows --------------------------------------------------------------------------------------


def create(
    session: Session,
    *,
    name: str,
    filename: str,
    fmt: str,
    content: bytes,
    delimiter: str = ",",
    limits: FileLimits | None = None,
    owner: str | None = None,
) -> DatasetRow:
    """Validate and store an upload (``owner``: the uploading token's name); raise
    InvalidDataset or DatasetConflict. Commits."""
    check_name(name)
    if find(session, name) is not None:
        raise DatasetConflict(f"a dataset named {name!r} exists; delete it first or choose another name")
    info = inspect_file(content, fmt, delimiter=delimiter, limits=limits)
    row = DatasetRow(
        name=name,
        filename=filename[:255],
        format=fmt,
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
        info=info,
        content=content,
        owner=owner,
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


def digests(session: Session) -> set[str]:
    """The sha256 of every stored data set (what a worker's local copies may keep)."""
    return set(session.scalars(select(DatasetRow.sha256)))


def content(session: Session, dataset_id: int) -> bytes:
    return session.scalar(select(DatasetRow.content).where(DatasetRow.id == dataset_id))


def list_all(session: Session) -> list[DatasetRow]:
    return list(session.scalars(select(DatasetRow).order_by(DatasetRow.name)))


def refers_to(ref: Any, row: DatasetRow) -> bool:
    """Whether a spec's reference (a name, or an id in any spelling: 2, "2", "002") is ``row``."""
    if isinstance(ref, bool) or ref is None:
        return False
    if isinstance(ref, int):
        return ref == row.id
    ref = str(ref)
    return ref == row.name or (ref.isascii() and ref.isdigit() and int(ref) == row.id)


def spec_refs(spec: StudySpec) -> list[tuple[str, Any]]:
    """(field, reference) of every uploaded data set a spec reads."""
    if spec.data is None:
        return []
    refs = [("data.dataset", spec.data.dataset)]
    for key in ("embeddings", "embeddings_vocab"):
        value = spec.data.params.get(key)  # the data set's own options
        if value is not None and not is_path(value):
            refs.append((f"data.params.{key}", value))
    return [(field, ref) for field, ref in refs if ref is not None]


def users(session: Session, row: DatasetRow, states: tuple[str, ...] = ACTIVE_STUDY_STATES) -> list[str]:
    """Names of the studies in ``states`` whose spec reads this data set."""
    studies = session.scalars(select(StudyRow).where(StudyRow.state.in_(states)))
    return [s.name for s in studies if any(refers_to(ref, row) for _, ref in spec_refs(stored_spec(s)))]


def remove(session: Session, row: DatasetRow) -> None:
    """Delete a data set no unfinished study needs; raise DatasetConflict otherwise. Commits."""
    needed_by = users(session, row)
    if needed_by:
        raise DatasetConflict(
            f"dataset {row.name!r} is used by unfinished studies {needed_by}; cancel them or wait until they end"
        )
    session.execute(delete(DatasetRow).where(DatasetRow.id == row.id))
    session.commit()


# --- a spec that names a data set ------------------------------------------------------------


def check_spec(session: Session, spec: StudySpec, limits: Limits | None = None) -> list[tuple[str, str]]:
    """(field, reason) for each way the spec's uploaded files do not fit the stored ones, and,
    given the server's ``limits``, an .npz whose width and length take the spec past them."""
    errors = _check_embeddings(session, spec)
    d = spec.data
    if d is None or d.dataset is None:  # no data (an objective plugin or command), or not uploaded
        return errors
    row = find(session, d.dataset)
    if row is None:
        return [("data.dataset", f"no dataset named {d.dataset!r} (upload it with POST /v1/datasets)")]
    if row.format != d.name:
        return [("data.name", f"dataset {row.name!r} is a {row.format} file, but data.name is {d.name!r}")]
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
    if row.format == "npz" and limits is not None and not errors:
        _, n_steps, n_features = row.info["X"]
        try:
            check_limits(spec, limits, n_features=n_features, window=n_steps)
        except ValueError as exc:
            field, _, reason = str(exc).partition(": ")
            errors.append((field, f"{reason} (dataset {row.name!r}: {n_steps} steps of {n_features} features)"))
    return errors


def _check_embeddings(session: Session, spec: StudySpec) -> list[tuple[str, str]]:
    """``data.params.embeddings`` / ``embeddings_vocab`` that name uploads: they exist, of the
    right format (a path instead is checked against RNNTUNE_DATA_ROOTS by ``spec.check_paths``)."""
    errors = []
    for field, ref in spec_refs(spec):
        if field == "data.dataset":
            continue
        fmt = "npy" if field.endswith(".embeddings") else "vocab"
        row = find(session, ref)
        if row is None:
            extension = "npy" if fmt == "npy" else "txt"
            errors.append((field, f"no dataset named {ref!r} (upload the .{extension} file with POST /v1/datasets)"))
        elif row.format != fmt:
            errors.append((field, f"dataset {row.name!r} is a {row.format} file, but {field} needs a {fmt} file"))
    return errors
