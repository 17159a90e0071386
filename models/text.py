"""Text for recurrent classifiers: a tokenizer, a vocabulary, and length-bucketed batches.

Tokenizer (``tokenize``): optionally lower-case, then take every match of

    TOKEN_PATTERN = r"\\w+(?:'\\w+)*|[^\\w\\s]"

in order: runs of letters, digits and underscores (Unicode-aware), with inner apostrophes kept
("don't", "rock'n'roll"), and every other non-space character as a token of its own
("!", "?", ","). Whitespace only separates. ``"Not bad, really!"`` -> ``["not", "bad", ",",
"really", "!"]``. Text must be ``str`` or UTF-8 ``bytes``; other bytes raise ``ValueError``
naming the offset of the first bad byte.

Vocabulary (``Vocab``): built from the train split's tokens only. Id 0 is ``<pad>``, id 1 is
``<unk>`` (every token not in the vocabulary); then tokens seen at least ``min_freq`` times,
most frequent first (ties alphabetical, so the same data always gives the same ids), at most
``max_size`` of them (the two specials not counted). ``to_dict`` / ``from_dict`` store it as
plain lists in a model file.

Encoding (``encode_texts``): token ids padded with 0 to (N, T) int64 plus the lengths (N,).
Truncation to ``max_length`` keeps the first ``max_length`` tokens. A text with no tokens (an
empty string) is one ``<pad>`` step of length 1, so every row can be packed
(``pack_padded_sequence`` refuses length 0); the model then predicts from its bias.

Batches (``bucket_batches``): shuffle, cut the permutation into chunks of ``bucket_batches``
batches, sort each chunk by length, slice it into batches, shuffle the batches. Every example
lands in exactly one batch per epoch, and a batch holds sequences of similar length, so little
padding is embedded. Seeded through the caller's generator.

This module imports numpy and torch only.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TypedDict

import numpy as np
import torch

TOKEN_PATTERN = r"\w+(?:'\w+)*|[^\w\s]"
_TOKEN_RE = re.compile(TOKEN_PATTERN)
PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


class VocabDict(TypedDict):
    """A Vocab as plain lists (``to_dict`` / ``from_dict``), as a model file stores it."""

    itos: list[str]
    min_freq: int
    max_size: int | None


class TokenizerInfo(TypedDict):
    pattern: str  # TOKEN_PATTERN when the text was tokenized
    lowercase: bool


class TextInfo(TypedDict):
    """What a text model needs to predict from raw strings (``SequenceData.text``, the model file)."""

    tokenizer: TokenizerInfo
    vocab: VocabDict
    labels: list[str]  # label names; class i is labels[i]
    max_length: int | None  # tokens kept per text (truncation); None keeps all
    text_column: str
    label_column: str


def as_text(value: str | bytes, where: str = "text") -> str:
    """``value`` as str; bytes must be UTF-8 (ValueError naming the first bad byte otherwise)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = bytes(value)[exc.start : exc.start + 1]
            raise ValueError(f"{where} is not UTF-8 text: byte {bad!r} at offset {exc.start} ({exc.reason})") from None
    raise TypeError(f"{where} must be str or UTF-8 bytes, but got {type(value).__name__}")


def tokenize(text: str | bytes, lowercase: bool = True) -> list[str]:
    """Tokens of one text (see the module docstring for the rule)."""
    text = as_text(text)
    if lowercase:
        text = text.lower()
    return _TOKEN_RE.findall(text)


class Vocab:
    """Token <-> id; ids 0 and 1 are ``<pad>`` and ``<unk>``."""

    def __init__(self, itos: Sequence[str], min_freq: int = 1, max_size: int | None = None):
        itos = list(itos)
        if itos[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}, but got {itos[:2]}")
        if len(set(itos)) != len(itos):
            raise ValueError("a vocabulary must not repeat tokens")
        self.itos = itos
        self.stoi = {token: i for i, token in enumerate(itos)}
        self.min_freq = min_freq
        self.max_size = max_size

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        if not isinstance(min_freq, int) or isinstance(min_freq, bool) or min_freq < 1:
            raise ValueError(f"min_freq must be an integer >= 1, but got {min_freq=}")
        if max_size is not None and (not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1):
            raise ValueError(f"max_size must be None or an integer >= 1, but got {max_size=}")
        counts = Counter(token for tokens in token_lists for token in tokens)
        for special in (PAD, UNK):
            counts.pop(special, None)
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[:max_size]
        return cls([PAD, UNK, *kept], min_freq=min_freq, max_size=max_size)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.stoi.get(token, UNK_ID) for token in tokens]

    def to_dict(self) -> VocabDict:
        return {"itos": list(self.itos), "min_freq": self.min_freq, "max_size": self.max_size}

    @classmethod
    def from_dict(cls, value: VocabDict) -> Vocab:
        return cls(value["itos"], min_freq=value.get("min_freq", 1), max_size=value.get("max_size"))


def encode_texts(
    token_lists: Iterable[Sequence[str]], vocab: Vocab, max_length: int | None = None, max_cells: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """ids int64 (N, T) padded with 0, lengths int64 (N,) >= 1; T = the longest (truncated) row.
    ``max_cells``: ValueError, before the padded array is made, when N x T is over it."""
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1):
        raise ValueError(f"max_length must be None or an integer >= 1, but got {max_length=}")
    rows = [vocab.encode(tokens[:max_length] if max_length else tokens) for tokens in token_lists]
    lengths = np.array([max(1, len(row)) for row in rows], dtype=np.int64)
    cells = len(rows) * (int(lengths.max()) if len(rows) else 1)
    if max_cells is not None and cells > max_cells:
        raise ValueError(f"{len(rows)} rows padded to {int(lengths.max())} tokens are {cells} cells, over {max_cells}")
    ids = np.full((len(rows), int(lengths.max()) if len(rows) else 1), PAD_ID, dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids, lengths


def bucket_batches(
    lengths: torch.Tensor,
    batch_size: int,
    generator: torch.Generator | None = None,
    bucket_batches: int = 32,
) -> list[torch.Tensor]:
    """One epoch's batches (index tensors on lengths' device), each example exactly once.

    The permutation is cut into chunks of ``batch_size * bucket_batches`` examples; each chunk is
    sorted by length (stable) and sliced into batches; the batches are then shuffled. Only the
    last chunk can yield a short batch."""
    n = len(lengths)
    order = torch.randperm(n, generator=generator, device=lengths.device)
    chunk = batch_size * bucket_batches
    batches: list[torch.Tensor] = []
    for start in range(0, n, chunk):
        part = order[start : start + chunk]
        part = part[torch.argsort(lengths[part], stable=True)]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    shuffle = torch.randperm(len(batches), generator=generator, device=lengths.device).tolist()
    return [batches[i] for i in shuffle]


def embedding_matrix(
    vocab: Vocab, vectors: np.ndarray, vectors_vocab: Sequence[str], seed: int = 0
) -> tuple[np.ndarray, float]:
    """Rows of ``vectors`` (V', D) placed at our vocabulary's ids; tokens the user's vocabulary
    lacks get N(0, 0.1) rows (seeded), ``<pad>`` zeros. Returns (matrix (V, D) float32, the
    fraction of our non-special tokens found)."""
    if vectors.ndim != 2 or len(vectors) != len(vectors_vocab):
        raise ValueError(
            f"the embedding matrix must be (V, D) with one row per vocabulary line, but got "
            f"shape {vectors.shape} and {len(vectors_vocab)} lines"
        )
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, 0.1, size=(len(vocab), vectors.shape[1])).astype(np.float32)
    matrix[PAD_ID] = 0.0
    position = {token: i for i, token in enumerate(vectors_vocab)}
    found = 0
    for i, token in enumerate(vocab.itos):
        row = position.get(token)
        if row is not None and i != PAD_ID:
            matrix[i] = vectors[row]
            found += i > UNK_ID
    coverage = found / max(1, len(vocab) - 2)
    return matrix, coverage
