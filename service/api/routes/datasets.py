"""/v1/datasets: upload a data file (CSV time series, .npz arrays, labelled text) or an embedding
matrix (.npy) and its vocabulary (.txt), list, read and delete them."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from rnntune.service.api.access import CallerDep, OwnedDataset
from rnntune.service.api.deps import SessionDep, SettingsDep
from rnntune.service.api.schemas import DatasetList, DatasetPublic, Problem
from rnntune.service.data import datasets

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

UPLOAD_TYPES = (
    "application/octet-stream",
    "text/csv",
    "text/plain",
    "text/tab-separated-values",
    "application/json",
    "application/jsonl",
    "application/x-ndjson",
    "application/zip",
    "application/x-npz",
    "application/x-npy",
)
MULTIPART_SLACK = 64 * 1024  # the multipart envelope around the file
CHUNK = 1024 * 1024
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "a .csv, .npz, .jsonl, .npy (embedding matrix) or .txt (its vocabulary) file",
                        },
                        "name": {
                            "type": "string",
                            "description": "default: the file name, lower-cased, without extension",
                        },
                        "format": {
                            "type": "string",
                            "enum": list(datasets.FORMATS),
                            "description": "default: the extension",
                        },
                        "delimiter": {"type": "string", "description": "CSV field delimiter (default ',')"},
                    },
                },
                # the file's declared type: data and text, never an image or an archive of another kind
                "encoding": {"file": {"contentType": ", ".join(UPLOAD_TYPES)}},
            }
        },
    }
}


def _get(session, ref: str):
    row = datasets.find(session, ref)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no dataset named {ref!r}")
    return row


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"the file exceeds the upload limit of {limit / 2**20:g} MiB (RNNTUNE_MAX_UPLOAD_MB)",
    )


async def _check_size(upload: UploadFile, limit: int) -> None:
    """Refuse a file over ``limit`` bytes; it stays where the multipart parser spooled it (on
    disk past 1 MiB), read a chunk at a time, never whole into memory."""
    size = 0
    while chunk := await upload.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
    await upload.seek(0)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=UPLOAD_BODY,
    responses={
        400: {"model": Problem, "description": "a malformed multipart body"},
        409: {"model": Problem, "description": "the name is taken"},
        413: {"model": Problem, "description": "larger than RNNTUNE_MAX_UPLOAD_MB"},
        415: {"model": Problem, "description": "the file part's Content-Type is not a data or text type"},
        422: {"model": Problem, "description": "not a usable file: the reason"},
    },
)
async def upload_dataset(
    request: Request, session: SessionDep, settings: SettingsDep, caller: CallerDep
) -> DatasetPublic:
    """Upload a data file (multipart field ``file``); it is checked, checksummed and stored."""
    limit = int(settings.max_upload_mb * 2**20)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        raise _too_large(limit)  # before reading the body
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail="send the file as multipart/form-data, field 'file'"
        )
    async with request.form(max_files=1, max_fields=8) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, detail="the multipart body needs a file field named 'file'"
            )
        filename = upload.filename or "upload"
        declared = (upload.content_type or "application/octet-stream").split(";")[0].strip().lower()
        if declared not in UPLOAD_TYPES:
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                detail=f"the file's Content-Type must be one of {', '.join(UPLOAD_TYPES)}, but got {declared!r}",
            )
        await _check_size(upload, limit)
        fields = {k: form.get(k) for k in ("name", "format", "delimiter")}
        row = await _store(session, settings, upload, filename, fields, owner=caller.name)
    return DatasetPublic.model_validate(row)


async def _store(session, settings, upload: UploadFile, filename: str, fields: dict, *, owner: str | None):
    """Check the spooled file and store it (the row), or raise the 4xx that says why."""
    try:
        fmt = datasets.format_of(filename, fields["format"] if isinstance(fields["format"], str) else None)
        name = fields["name"] if isinstance(fields["name"], str) and fields["name"] else datasets.default_name(filename)
        delimiter = fields["delimiter"] if isinstance(fields["delimiter"], str) and fields["delimiter"] else ","
        row = await run_in_threadpool(
            datasets.create,
            session,
            name=name,
            filename=filename,
            fmt=fmt,
            content=upload.file,  # checked from disk, sent to the database in chunks
            delimiter=delimiter,
            limits=settings.file_limits,
            owner=owner,
        )
    except datasets.InvalidDataset as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"{filename}: {exc}") from None
    except datasets.DatasetConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return row


@router.get("")
def list_datasets(session: SessionDep) -> DatasetList:
    """List uploaded data sets (without their bytes)."""
    return DatasetList(items=[DatasetPublic.model_validate(row) for row in datasets.list_all(session)])


@router.get("/{ref}", responses={404: {"model": Problem}})
def get_dataset(ref: str, session: SessionDep) -> DatasetPublic:
    """One data set by name or id: size, sha256 and what the upload check found in it."""
    return DatasetPublic.model_validate(_get(session, ref))


@router.delete(
    "/{ref}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        403: {"model": Problem, "description": "another owner's data set (owners enforced), or a read token"},
        404: {"model": Problem},
        409: {"model": Problem, "description": "an unfinished study uses it"},
    },
)
def delete_dataset(row: OwnedDataset, session: SessionDep) -> Response:
    """Delete a data set that no queued, running or paused study uses."""
    try:
        datasets.remove(session, row)
    except datasets.DatasetConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)
