"""Text files: a time-series CSV, labelled text (CSV / JSONL) and an embedding matrix's vocabulary.

Each is parsed line by line (row by row); only counts and column names are kept.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator
from typing import IO, Any

from rnntune.models.files.limits import FileCheckError, FileLimits, check_header

MISSING = ("", "nan", "na", "null")  # what the data loaders read as a missing value


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
