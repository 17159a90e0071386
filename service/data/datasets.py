"""Uploaded data sets: validate a CSV / .npz file, store it in ``rnntune_datasets``, find it.

The bytes live in the database, so every worker and every API replica reads the same file
without a shared filesystem; workers copy it to local disk once (``data_cache.DataCache``).
A file is checked when it is uploaded, so a broken one is a 422 naming the reason, not a failed
study later. The checks here mirror ``rnntune.models.data`` (which the API cannot import: it pulls in
torch) and only look at the file; the spec's choices (target column, window) are checked against
what was found here when a study is submitted (:func:`check_spec`).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rnntune.service.data.text_cells import padded_cells_error
from rnntune.service.spec import DataSpec, Limits, StudySpec, check_limits, is_path, try_stored_spec

if TYPE_CHECKING:
    from rnntune.models.files import FileLimits
from rnntune.service.store.tables import DatasetRow, StudyRow, StudyState, utcnow

# text: a CSV or JSONL of labelled text (data.name: text); npy: an embedding matrix (V, D) and
# vocab: its tokens, one per line (data.params.embeddings / embeddings_vocab name them).
FORMATS = ("csv", "npz", "text", "npy", "vocab")
EXTENSIONS = {"jsonl": "text", "ndjson": "text", "txt": "vocab"}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
ACTIVE_STUDY_STATES = (StudyState.QUEUED, StudyState.RUNNING, StudyState.PAUSED)  # not ended


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
    if not NAME_RE.fullmatch(name):
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


def inspect_file(
    content: bytes | IO[bytes], fmt: str, *, delimiter: str = ",", limits: FileLimits | None = None
) -> dict[str, Any]:
    """What the file holds (stored as the data set's ``info``); raise InvalidDataset if broken.

    ``content``: the bytes, or a seekable binary file (an upload spooled to disk), read from its
    start. The checks (``rnntune.models.files``, shared with the workers) read it as a stream:
    an .npz or .npy is judged by its headers before any value is decompressed, and memory stays
    a small multiple of one chunk whatever the file claims to hold."""
    from rnntune.models import files  # numpy only, never torch (the API must start fast)

    limits = limits or files.FileLimits()
    stream = io.BytesIO(content) if isinstance(content, bytes) else content
    stream.seek(0, io.SEEK_END)
    if not stream.tell():
        raise InvalidDataset("the file is empty")
    stream.seek(0)
    try:
        if fmt == "text":
            return files.check_text(stream, delimiter, limits)
        if fmt == "csv":
            return files.check_csv(stream, delimiter, limits)
        if fmt == "npz":
            return files.check_npz(stream, limits)
        if fmt == "npy":
            return files.check_npy(stream, limits)
        return files.check_vocab(stream, limits)
    except files.FileCheckError as exc:
        raise InvalidDataset(str(exc)) from None


# --- rows --------------------------------------------------------------------------------------

STORE_CHUNK = 2**20  # bytes sent to PostgreSQL per statement when a file is stored (a few MiB once escaped)


def create(
    session: Session,
    *,
    name: str,
    filename: str,
    fmt: str,
    content: bytes | IO[bytes],
    delimiter: str = ",",
    limits: FileLimits | None = None,
    owner: str | None = None,
) -> DatasetRow:
    """Validate and store an upload (``owner``: the uploading token's name); raise InvalidDataset or DatasetConflict. Commits.

    ``content`` may be a seekable file (an upload spooled to disk): it is checked from there and,
    on PostgreSQL, streamed into the row by COPY, so the API holds a chunk of it, never the whole
    file."""
    check_name(name)
    if find(session, name) is not None:
        raise DatasetConflict(f"a dataset named {name!r} exists; delete it first or choose another name")
    info = inspect_file(content, fmt, delimiter=delimiter, limits=limits)
    stream = io.BytesIO(content) if isinstance(content, bytes) else content
    digest, size = _digest(stream)
    fields = {
        "name": name,
        "filename": filename[:255],
        "format": fmt,
        "sha256": digest,
        "size": size,
        "info": info,
        "owner": owner,
    }
    try:
        if session.get_bind().dialect.name == "postgresql":
            _copy_in(session, fields, stream)
        else:  # SQLite (embedded, one user): the file's bytes once, in one insert
            stream.seek(0)
            session.add(DatasetRow(**fields, content=stream.read()))
        session.commit()
    except IntegrityError:  # another upload took the name between the check and the insert
        session.rollback()
        raise DatasetConflict(f"a dataset named {name!r} exists; delete it first or choose another name") from None
    return session.scalars(select(DatasetRow).where(DatasetRow.name == name)).one()


class _CopyLine(io.RawIOBase):
    """One row of COPY's text format, made as it is read: the escaped fields, then the file's
    bytes as bytea hex, a chunk at a time (``copy_expert`` reads it STORE_CHUNK bytes at a time)."""

    def __init__(self, prefix: bytes, stream: IO[bytes]):
        self.pending, self.stream, self.done = prefix + b"\\\\x", stream, False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self.done and (size < 0 or len(self.pending) < size):
            chunk = self.stream.read(STORE_CHUNK // 2)
            if chunk:
                self.pending += chunk.hex().encode()
            else:
                self.pending += b"\n"
                self.done = True
        n = len(self.pending) if size < 0 else size
        out, self.pending = self.pending[:n], self.pending[n:]
        return out


def _copy_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_in(session: Session, fields: dict[str, Any], stream: IO[bytes]) -> None:
    """Insert the row with ``COPY ... FROM STDIN``, streaming the content from ``stream``: the
    API holds a chunk of the file at a time, not the file and its escaped copy in one statement."""
    values = [*(str(fields[k]) for k in ("name", "filename", "format", "sha256", "size")), json.dumps(fields["info"])]
    owner = fields.get("owner")
    values.append(utcnow().isoformat(sep=" "))
    cells = [_copy_text(v) for v in values]
    cells.insert(6, r"\N" if owner is None else _copy_text(owner))  # owner: NULL for an unnamed token
    prefix = "\t".join(cells) + "\t"
    stream.seek(0)
    driver = session.connection().connection.driver_connection
    assert driver is not None  # a live connection's psycopg2 connection
    cursor = driver.cursor()
    try:
        cursor.copy_expert(
            "COPY rnntune_datasets (name, filename, format, sha256, size, info, owner, created_at, content) FROM STDIN",
            _CopyLine(prefix.encode(), stream),
            size=STORE_CHUNK,
        )
    except Exception as exc:  # a concurrent upload of the same name: as the ORM insert would say
        if getattr(exc, "pgcode", None) == "23505":
            raise IntegrityError("COPY rnntune_datasets", None, exc) from exc
        raise
    finally:
        cursor.close()


def _digest(stream: IO[bytes]) -> tuple[str, int]:
    stream.seek(0)
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(STORE_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


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
    return session.scalars(select(DatasetRow.content).where(DatasetRow.id == dataset_id)).one()


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


def spec_refs(spec: StudySpec | dict[str, Any]) -> list[tuple[str, Any]]:
    """(field, reference) of every uploaded data set a spec reads; a stored spec that no longer
    parses is read as its JSON, so a data set it names stays protected."""
    if isinstance(spec, dict):
        raw = spec.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        raw_params = data.get("params")
        dataset, params = data.get("dataset"), raw_params if isinstance(raw_params, dict) else {}
    elif spec.data is None:
        return []
    else:
        dataset, params = spec.data.dataset, spec.data.params
    refs = [("data.dataset", dataset)]
    for key in ("embeddings", "embeddings_vocab"):
        value = params.get(key)  # the data set's own options
        if value is not None and not is_path(value):
            refs.append((f"data.params.{key}", value))
    return [(field, ref) for field, ref in refs if ref is not None]


def users(session: Session, row: DatasetRow, states: tuple[str, ...] = ACTIVE_STUDY_STATES) -> list[str]:
    """Names of the studies in ``states`` whose spec reads this data set."""
    studies = session.scalars(select(StudyRow).where(StudyRow.state.in_(states)))
    return [
        s.name for s in studies if any(refers_to(ref, row) for _, ref in spec_refs(try_stored_spec(s) or s.spec or {}))
    ]


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
        errors += _csv_errors(row, d)
    elif row.format == "text":
        errors += _text_errors(row, spec, d, limits)
    elif spec.metric in ("val_accuracy", "val_f1") and row.info.get("task") != "classification":
        errors.append(("metric", f"val_accuracy needs integer labels, but dataset {row.name!r} has float targets"))
    if row.format == "npz" and limits is not None:
        errors += _npz_errors(row, spec, limits, clean=not errors)
    return errors


def _csv_errors(row: DatasetRow, d: DataSpec) -> list[tuple[str, str]]:
    """A CSV upload: the spec's delimiter is the upload's, its target and inputs numeric columns."""
    errors = []
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
    return errors


def _text_errors(row: DatasetRow, spec: StudySpec, d: DataSpec, limits: Limits | None) -> list[tuple[str, str]]:
    """A text upload: the columns of the spec's data ``d`` are in it, its padded batches within
    the limits, its ``format`` the upload's layout."""
    errors = []
    columns = row.info.get("columns", [])
    for key, default in (("text_column", "text"), ("label_column", "label")):
        column = d.params.get(key, default)
        if column not in columns:
            errors.append(
                (f"data.params.{key}", f"column {column!r} is not in dataset {row.name!r}; columns: {columns}")
            )
    cells = None if limits is None else padded_cells_error(spec, int(row.info.get("rows") or 0), limits)
    if cells is not None:
        errors.append(cells)
    fmt = d.params.get("format")
    if fmt is not None and fmt != row.info.get("layout"):
        errors.append(
            ("data.params.format", f"dataset {row.name!r} is {row.info.get('layout')}, but got format={fmt!r}")
        )
    return errors


def _npz_errors(row: DatasetRow, spec: StudySpec, limits: Limits, clean: bool) -> list[tuple[str, str]]:
    """An .npz upload within the server's limits: its classes, and (``clean``: nothing else is
    wrong yet) the model and batches its width and length imply."""
    if (row.info.get("n_classes") or 0) > limits.max_classes:
        return [
            (
                "data.dataset",
                f"dataset {row.name!r} implies {row.info['n_classes']} classes, over this server's limit "
                f"RNNTUNE_MAX_CLASSES={limits.max_classes}",
            )
        ]
    if not clean:
        return []
    _, n_steps, n_features = row.info["X"]
    n_outputs = row.info.get("n_classes") or (row.info["y"][1] if len(row.info["y"]) == 2 else 1)
    try:
        check_limits(spec, limits, n_features=n_features, window=n_steps, n_outputs=n_outputs)
    except ValueError as exc:
        field, _, reason = str(exc).partition(": ")
        return [(field, f"{reason} (dataset {row.name!r}: {n_steps} steps of {n_features} features)")]
    return []


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
