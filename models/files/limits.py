"""What every check shares: the error it raises, the limits it enforces and two checks of counts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


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
