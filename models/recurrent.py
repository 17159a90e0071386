"""Recurrent sequence models: one config dataclass and one nn.Module.

A SequenceModel reads a batch of sequences (B, T, F) with an RNN, LSTM or GRU stack and maps
the output at the last time step to the task's head:

    x (B, T, F) -> recurrent stack -> last step (B, H * D) -> dropout -> linear -> (B, output_size)

For regression the head's outputs are the predicted values (horizon * n_targets of them for
forecasting); for classification they are logits over n_classes.

Text (``vocab_size`` set): the input is token ids (B, T) and an embedding comes first; with
``lengths`` (B,) the embedded batch is packed (``pack_padded_sequence``), so padding never reaches
the recurrent state, and the head reads the final hidden state of each sequence's own last token:

    ids (B, T) -> embedding (B, T, E) -> packed -> recurrent stack -> h_n of the last layer
               (B, H * D) -> dropout -> linear -> (B, n_classes)
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import Tensor, nn

CELLS = ("rnn", "lstm", "gru")
TASKS = ("regression", "classification")

_RECURRENT_CLASSES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class ModelConfig:
    input_size: int  # F: features per time step
    output_size: int  # regression: horizon * n_targets; classification: n_classes
    task: str = "regression"
    cell: str = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0  # between recurrent layers (only when num_layers > 1) and before the head
    # text: token ids in (input_size must be 1), an nn.Embedding(vocab_size, embed_dim) first
    vocab_size: int | None = None
    embed_dim: int | None = None
    padding_idx: int = 0
    freeze_embeddings: bool = False  # keep the embedding as loaded (e.g. a user's matrix)

    def __post_init__(self) -> None:
        input_size, output_size = self.input_size, self.output_size
        hidden_size, num_layers = self.hidden_size, self.num_layers
        task, cell = self.task, self.cell
        bidirectional, dropout = self.bidirectional, self.dropout
        if not _is_int(input_size) or input_size < 1:
            raise ValueError(f"input_size must be an integer >= 1, but got {input_size=}.")
        if not _is_int(output_size) or output_size < 1:
            raise ValueError(f"output_size must be an integer >= 1, but got {output_size=}.")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, but got {task=}.")
        if task == "classification" and output_size < 2:
            raise ValueError(
                f"output_size is the number of classes for classification and must be >= 2, but got {output_size=}."
            )
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, but got {cell=}.")
        if not _is_int(hidden_size) or hidden_size < 1:
            raise ValueError(f"hidden_size must be an integer >= 1, but got {hidden_size=}.")
        if not _is_int(num_layers) or num_layers < 1:
            raise ValueError(f"num_layers must be an integer >= 1, but got {num_layers=}.")
        if not isinstance(bidirectional, bool):
            raise ValueError(f"bidirectional must be a bool, but got {bidirectional=}.")
        if not isinstance(dropout, numbers.Real) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a float in [0, 1), but got {dropout=}.")
        vocab_size, embed_dim = self.vocab_size, self.embed_dim
        padding_idx, freeze_embeddings = self.padding_idx, self.freeze_embeddings
        if not isinstance(freeze_embeddings, bool):
            raise ValueError(f"freeze_embeddings must be a bool, but got {freeze_embeddings=}.")
        if vocab_size is None:
            if embed_dim is not None or freeze_embeddings:
                raise ValueError(
                    f"embed_dim and freeze_embeddings need vocab_size (a text model), but got "
                    f"{embed_dim=}, {freeze_embeddings=}."
                )
            return
        if not _is_int(vocab_size) or vocab_size < 2:
            raise ValueError(f"vocab_size must be an integer >= 2, but got {vocab_size=}.")
        if not _is_int(embed_dim) or embed_dim < 1:
            raise ValueError(f"embed_dim must be an integer >= 1 with vocab_size, but got {embed_dim=}.")
        if not _is_int(padding_idx) or not 0 <= padding_idx < vocab_size:
            raise ValueError(f"padding_idx must be in [0, vocab_size), but got {padding_idx=}.")
        if input_size != 1:
            raise ValueError(f"a text model reads one token id per step: input_size must be 1, but got {input_size=}.")

    @property
    def is_text(self) -> bool:
        return self.vocab_size is not None

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1


class SequenceModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, but got {type(config).__name__}.")
        self.config = config
        if config.is_text:
            self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=config.padding_idx)
            self.embedding.weight.requires_grad_(not config.freeze_embeddings)
        recurrent_class = _RECURRENT_CLASSES[config.cell]
        self.rnn = recurrent_class(
            input_size=config.embed_dim if config.is_text else config.input_size,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            # torch applies this dropout to the outputs of every layer but the last
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            bidirectional=config.bidirectional,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size * config.num_directions, config.output_size)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if self.config.is_text:
            return self._forward_text(x, lengths)
        if x.ndim != 3 or x.shape[2] != self.config.input_size:
            raise ValueError(
                f"expected input of shape (batch, time, {self.config.input_size}), but got {tuple(x.shape)}."
            )
        out, _ = self.rnn(x)  # (B, T, H * D); the directions are concatenated on the last axis
        if self.config.bidirectional:
            hidden = self.config.hidden_size
            forward_last = out[:, -1, :hidden]  # (B, H): forward direction after reading all T
            backward_last = out[:, 0, hidden:]  # (B, H): backward direction after reading all T
            last = torch.cat([forward_last, backward_last], dim=1)  # (B, 2H)
        else:
            last = out[:, -1, :]  # (B, H)
        return self.head(self.drop(last))  # (B, output_size)

    def _forward_text(self, ids: Tensor, lengths: Tensor | None) -> Tensor:
        if ids.ndim != 2:
            raise ValueError(f"expected token ids of shape (batch, time), but got {tuple(ids.shape)}.")
        embedded = self.embedding(ids)  # (B, T, E)
        if lengths is None:  # every row is full length
            lengths = torch.full((ids.shape[0],), ids.shape[1], dtype=torch.int64)
        packed = nn.utils.rnn.pack_padded_sequence(
            embedded, lengths.to("cpu", torch.int64), batch_first=True, enforce_sorted=False
        )
        _, h_n = self.rnn(packed)  # h_n: (L * D, B, H), in the batch's own order
        if isinstance(h_n, tuple):  # LSTM: (h_n, c_n)
            h_n = h_n[0]
        if self.config.bidirectional:
            # forward after each row's last token, backward after reading back to its first
            last = torch.cat([h_n[-2], h_n[-1]], dim=1)  # (B, 2H)
        else:
            last = h_n[-1]  # (B, H)
        return self.head(self.drop(last))  # (B, output_size)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
