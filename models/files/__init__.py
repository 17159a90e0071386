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

Standard library and numpy only: the API imports this package and must not import torch.

The package reads top to bottom:

- ``limits``: FileCheckError, FileLimits and the checks of a header's and a label set's size;
- ``arrays``: ``.npy`` headers read without values, check_npz and check_npy;
- ``text``: UTF-8 lines and CSV rows, check_csv, check_text, check_vocab and jsonl_records.
"""

from __future__ import annotations

from rnntune.models.files.arrays import CHUNK_BYTES, ArrayHeader, check_npy, check_npz, read_npy_header
from rnntune.models.files.limits import FileCheckError, FileLimits, check_classes, check_header
from rnntune.models.files.text import MISSING, check_csv, check_text, check_vocab, jsonl_records

__all__ = [
    "CHUNK_BYTES",
    "MISSING",
    "ArrayHeader",
    "FileCheckError",
    "FileLimits",
    "check_classes",
    "check_csv",
    "check_header",
    "check_npy",
    "check_npz",
    "check_text",
    "check_vocab",
    "jsonl_records",
    "read_npy_header",
]
