"""Recurrent sequence models: one nn.Module built from a ModelConfig (``rnntune.models.config``).

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

import torch
from torch import Tensor, nn

from rnntune.models.config import ModelConfig

_RECURRENT_CLASSES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class SequenceModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, but got {type(config).__name__}.")
        self.config = config
        input_size = config.input_size
        if config.vocab_size is not None and config.embed_dim is not None:  # text: ModelConfig sets both or none
            self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=config.padding_idx)
            self.embedding.weight.requires_grad_(not config.freeze_embeddings)
            input_size = config.embed_dim
        recurrent_class = _RECURRENT_CLASSES[config.cell]
        self.rnn = recurrent_class(
            input_size=input_size,
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
        result: Tensor = self.head(self.drop(last))  # (B, output_size)
        return result

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
        result: Tensor = self.head(self.drop(last))  # (B, output_size)
        return result

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
