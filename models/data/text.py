"""Labelled text (CSV or JSONL): token ids padded to (N, T) with lengths, vocabulary from train."""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from rnntune.models import files
from rnntune.models.data.container import DataError, SequenceData
from rnntune.models.data.files import _file_path
from rnntune.models.data.splits import (
    Params,
    _check_int,
    _kfold,
    _kfold_meta,
    _random_split,
    _reject,
    _Request,
    _take_params,
)

if TYPE_CHECKING:  # rnntune.models.text imports torch; loading text data imports it on first use
    from rnntune.models.text import Vocab

TEXT_DEFAULTS = {
    "path": None,
    "format": None,  # "csv" | "jsonl"; None: by extension (.jsonl/.json/.ndjson), else by content
    "text_column": "text",
    "label_column": "label",
    "delimiter": ",",
    "lowercase": True,
    "min_freq": 1,
    "max_size": None,
    "max_length": None,
    "embeddings": None,  # a .npy (V', D) matrix ...
    "embeddings_vocab": None,  # ... and a UTF-8 text file of its V' tokens, one per line
}


def read_text_rows(
    content: bytes,
    *,
    fmt: str | None,
    text_column: str,
    label_column: str,
    delimiter: str = ",",
    where: str = "text",
) -> tuple[list[str], list[str]]:
    """(texts, labels as strings) of a CSV / JSONL file's bytes; DataError naming the problem."""
    try:
        body = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_number = content[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{where} is not UTF-8 text: an invalid byte at offset {exc.start} (line {line_number}); "
            "save the file as UTF-8."
        ) from None
    body = body.removeprefix("\ufeff")
    if fmt is None:
        fmt = "jsonl" if body.lstrip().startswith("{") else "csv"
    if fmt not in ("csv", "jsonl"):
        raise DataError(f"{where}: format must be 'csv' or 'jsonl', but got {fmt!r}.")
    if fmt == "jsonl":
        texts, labels = _jsonl_rows(body, text_column, label_column, where)
    else:
        texts, labels = _csv_rows(body, text_column, label_column, delimiter, where)
    if not texts:
        raise DataError(f"{where}: the file has no examples.")
    return texts, labels


def _jsonl_rows(body: str, text_column: str, label_column: str, where: str) -> tuple[list[str], list[str]]:
    """Each JSON object's text (a string) and label (a non-empty string or an integer)."""
    texts: list[str] = []
    labels: list[str] = []
    try:
        for number, record in files.jsonl_records(body.splitlines()):
            for column in (text_column, label_column):
                if column not in record:
                    raise DataError(f"{where}: line {number} has no {column!r} field; fields: {sorted(record)}.")
            text, label = record[text_column], record[label_column]
            if not isinstance(text, str):
                raise DataError(f"{where}: line {number}: {text_column!r} must be a string.")
            if isinstance(label, bool) or not isinstance(label, (str, int)) or label == "":
                raise DataError(
                    f"{where}: line {number}: {label_column!r} must be a non-empty string or an "
                    f"integer, but got a {type(label).__name__}."
                )
            texts.append(text)
            labels.append(str(label))
    except files.FileCheckError as exc:  # a line that is not a JSON object
        raise DataError(f"{where}: {exc}.") from None
    return texts, labels


def _csv_rows(
    body: str, text_column: str, label_column: str, delimiter: str, where: str
) -> tuple[list[str], list[str]]:
    """Each non-blank row's text (empty when the row is short) and label (never empty), by the header."""
    try:
        rows = list(csv.reader(io.StringIO(body, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise DataError(f"{where}: the CSV cannot be parsed: {exc}.") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{where}: the file is empty.")
    header = [cell.strip() for cell in rows[0]]
    for column in (text_column, label_column):
        if column not in header:
            raise DataError(f"{where}: column {column!r} not found; columns: {header}.")
    ti, li = header.index(text_column), header.index(label_column)
    texts: list[str] = []
    labels: list[str] = []
    for number, row in enumerate(rows[1:], start=2):
        label = row[li].strip() if li < len(row) else ""
        if not label:
            raise DataError(f"{where}: row {number} has an empty {label_column!r}.")
        texts.append(row[ti] if ti < len(row) else "")
        labels.append(label)
    return texts, labels


def _cap_sizes(p: dict[str, Any], limits: files.FileLimits) -> None:
    """The vocabulary and the padded length, bounded by this server's limits: unset, they take
    the limit (the most frequent ``max_vocab`` tokens; the first ``max_text_length`` tokens of
    each text); set above it, the data cannot be loaded."""
    for key, cap, setting in (
        ("max_size", limits.max_vocab, "RNNTUNE_MAX_VOCAB"),
        ("max_length", limits.max_text_length, "RNNTUNE_MAX_TEXT_LENGTH"),
    ):
        if p[key] is None:
            p[key] = cap
        elif p[key] > cap:
            raise DataError(f"text: {key}={p[key]} is over this server's limit {setting}={cap}.")


def _encode_splits(
    splits: dict[str, np.ndarray],
    truncated: Callable[[np.ndarray, str], Iterator[list[str]]],
    vocab: Any,
    max_length: int,
    max_cells: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each split's padded ids and lengths, all splits' ids together within ``max_cells``
    (RNNTUNE_MAX_TEXT_CELLS), checked before each split's array is made."""
    from rnntune.models.text import encode_texts

    arrays, used = {}, 0
    for split, rows in splits.items():
        try:
            arrays[split] = encode_texts(truncated(rows, split), vocab, max_length, max_cells - used)
        except ValueError as error:
            raise DataError(
                f"text: the {split} split's {error} left of this server's limit RNNTUNE_MAX_TEXT_CELLS="
                f"{max_cells} (padded token ids, rows x padded length); set a smaller max_length."
            ) from None
        used += arrays[split][0].size
    return arrays


def _label_names(labels: list[str]) -> list[str]:
    """Distinct labels: numerically sorted when all are integers, else alphabetically."""
    names = set(labels)
    if all(re.fullmatch(r"-?\d+", name) for name in names):
        return sorted(names, key=int)
    return sorted(names)


def _load_text(params: Params, request: _Request) -> SequenceData:
    from rnntune.models.text import TOKEN_PATTERN, TextInfo

    p = _take_params("text", params, TEXT_DEFAULTS)
    _reject(request, "window", "horizon", "target", "inputs")
    path = _file_path(p, request)
    _check_text_params(p, request.file_limits)
    fmt = p["format"] if p["format"] is not None else _format_by_extension(path)
    try:
        with open(path, "rb") as handle:
            content = handle.read()
    except OSError as error:
        raise DataError(f"text: cannot read {path!r}: {error}.") from error
    texts, label_values = read_text_rows(
        content, fmt=fmt, text_column=p["text_column"], label_column=p["label_column"],
        delimiter=p["delimiter"], where=f"text: {os.path.basename(path)}",
    )  # fmt: skip
    names, y = _label_ids(label_values, p["label_column"], request.file_limits)
    splits = _kfold(request, _random_split(request, len(y), labels=y), y)  # the vocabulary: the fold's train
    vocab, arrays, n_tokens, known = _encode(texts, splits, p, request.file_limits)
    embeddings, coverage = _embeddings(p, vocab, request)
    text_info: TextInfo = {
        "tokenizer": {"pattern": TOKEN_PATTERN, "lowercase": p["lowercase"]},
        "vocab": vocab.to_dict(),
        "labels": names,
        "max_length": p["max_length"],
        "text_column": p["text_column"],
        "label_column": p["label_column"],
    }
    return SequenceData(
        name="text",
        task="classification",
        x_train=arrays["train"][0], y_train=y[splits["train"]], lengths_train=arrays["train"][1],
        x_val=arrays["val"][0], y_val=y[splits["val"]], lengths_val=arrays["val"][1],
        x_test=arrays["test"][0], y_test=y[splits["test"]], lengths_test=arrays["test"][1],
        n_classes=len(names),
        text=text_info,
        embeddings=embeddings,
        meta={
            "kind": "text_classification",
            "split": "stratified",
            "source": os.path.basename(path),
            "format": fmt,
            "labels": names,
            "vocab_size": len(vocab),
            "max_length": p["max_length"],
            "n_examples": len(y),
            "tokens_per_example": {"median": float(np.median(n_tokens)), "max": int(n_tokens.max())},
            "truncated": int((n_tokens > p["max_length"]).sum()) if p["max_length"] else 0,
            "val_known_token_fraction": round(float(np.mean(known)), 4) if known else None,
            "embeddings_coverage": round(coverage, 4) if coverage is not None else None,
            **_kfold_meta(request, y),
        },
    )  # fmt: skip


def _check_text_params(p: Params, limits: files.FileLimits) -> None:
    """The columns' names, lowercase, min_freq and the sizes; unset sizes take the server's caps."""
    for key in ("text_column", "label_column"):
        if not isinstance(p[key], str) or not p[key]:
            raise DataError(f"text: {key} must be a column name, but got {p[key]!r}.")
    if not isinstance(p["lowercase"], bool):
        raise DataError(f"text: lowercase must be true or false, but got {p['lowercase']!r}.")
    _check_int("text", "min_freq", p["min_freq"], low=1)
    for key in ("max_size", "max_length"):
        if p[key] is not None:
            _check_int("text", key, p[key], low=1)
    _cap_sizes(p, limits)


def _format_by_extension(path: str) -> str | None:
    """ "jsonl" or "csv" by the file's extension; None: read_text_rows looks at the content."""
    extension = os.path.splitext(path)[1].lower()
    return "jsonl" if extension in (".jsonl", ".json", ".ndjson") else "csv" if extension in (".csv", ".tsv") else None


def _label_ids(labels: list[str], label_column: str, limits: files.FileLimits) -> tuple[list[str], np.ndarray]:
    """The label names (at least 2, within RNNTUNE_MAX_CLASSES) and y (N,) int64, each label's index."""
    names = _label_names(labels)
    if len(names) < 2:
        raise DataError(f"text: classification needs at least 2 labels, but found {names}.")
    try:
        files.check_classes(len(names), limits, f"text: the column {label_column!r}")
    except files.FileCheckError as error:
        raise DataError(f"{error}.") from None
    index = {name: i for i, name in enumerate(names)}
    return names, np.array([index[label] for label in labels], dtype=np.int64)


def _encode(
    texts: list[str], splits: dict[str, np.ndarray], p: Params, limits: files.FileLimits
) -> tuple[Vocab, dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray, list[float]]:
    """The vocabulary of the train split's texts, each split's padded ids and lengths, every
    text's token count (N,) and, per val text, the fraction of its distinct tokens the vocabulary knows.

    Tokens are never all held at once: counted for the vocabulary, then tokenized again and
    truncated text by text as they are encoded (a few very long rows cost their ids, no more)."""
    from rnntune.models.text import Vocab, tokenize

    lowercase = p["lowercase"]
    vocab = Vocab.build(
        (tokenize(texts[i], lowercase=lowercase) for i in splits["train"]),
        min_freq=p["min_freq"],
        max_size=p["max_size"],
    )
    n_tokens = np.zeros(len(texts), dtype=np.int64)
    known: list[float] = []

    def truncated(rows: np.ndarray, split: str) -> Iterator[list[str]]:
        for i in rows:
            tokens = tokenize(texts[i], lowercase=lowercase)
            n_tokens[i] = len(tokens)
            if split == "val":
                distinct = set(tokens)
                known.append(len(distinct & vocab.stoi.keys()) / max(1, len(distinct)))
            yield tokens[: p["max_length"]]

    arrays = _encode_splits(splits, truncated, vocab, p["max_length"], limits.max_text_cells)
    return vocab, arrays, n_tokens, known


def _embeddings(p: Params, vocab: Vocab, request: _Request) -> tuple[np.ndarray | None, float | None]:
    """The user's embedding matrix in the vocabulary's order (V, D) float32 and the fraction of
    tokens it covers; (None, None) without one. Its headers are checked before it is loaded."""
    from rnntune.models.text import embedding_matrix

    if p["embeddings"] is None:
        return None, None
    if p["embeddings_vocab"] is None:
        raise DataError("text: embeddings needs embeddings_vocab (its tokens, one per line).")
    try:  # headers first: the matrix's size is known before it is loaded
        files.check_npy(p["embeddings"], request.file_limits)
        with open(p["embeddings_vocab"], "rb") as raw:
            files.check_vocab(raw, request.file_limits)
    except (OSError, files.FileCheckError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        raise DataError(f"text: cannot use the embeddings: {reason}.") from None
    try:
        vectors = np.load(p["embeddings"], allow_pickle=False)
        with open(p["embeddings_vocab"], encoding="utf-8") as text_file:
            vectors_vocab = [line.rstrip("\n") for line in text_file]
        if vectors_vocab and vectors_vocab[-1] == "" and len(vectors_vocab) == len(vectors) + 1:
            vectors_vocab.pop()
        return embedding_matrix(vocab, vectors.astype(np.float32), vectors_vocab, request.seed)
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"text: cannot use the embeddings ({type(error).__name__}).") from None
    except ValueError as error:  # embedding_matrix: the matrix and its vocabulary disagree
        raise DataError(f"text: cannot use the embeddings: {error}.") from None
