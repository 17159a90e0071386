"""Recurrent sequence models: one nn.Module built from a ModelConfig (``rnntune.models.config``).

A SequenceModel reads a batch of sequences (B, T, F) with an RNN, LSTM or GRU stack and maps
the output at the last time step to the task's head:

    x (B, T, F) -> recurrent stack -> last step (B, H * D) -> dropout -> linear -> (B, output_size)

For regression the head's outputs are the predicted values (horizon * n_targets of them for
forecasting); for classification they are logits over n_classes.

Variable-length sequences (``lengths`` (B,) given): the batch is packed
(``pack_padded_sequence``), so padding never reaches the recurrent state, and the head reads the
final hidden state of each sequence's own last step:

    x (B, T, F) -> packed -> recurrent stack -> h_n of the last layer (B, H * D) -> dropout -> linear

Text (``vocab_size`` set): the input is token ids (B, T), embedded first, and always packed:

    ids (B, T) -> embedding (B, T, E) -> packed -> recurrent stack -> h_n ... -> (B, n_classes)

With ``highway`` (LSTNet's highway component, Lai et al. 2018), a linear map of the last
``highway_window`` values of the target feature is added to the head's output, so the model holds
a linear autoregression beside the RNN: (B, W) -> linear -> (B, output_size), summed.
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
        # LSTNet's highway: a linear autoregression on the target's last steps, beside the RNN
        self.highway = nn.Linear(config.highway_window, config.output_size) if config.highway else None

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if self.config.is_text:
            if x.ndim != 2:
                raise ValueError(f"expected token ids of shape (batch, time), but got {tuple(x.shape)}.")
            return self._head(self._last_packed(self.embedding(x), lengths))  # ids (B, T) -> (B, T, E)
        if x.ndim != 3 or x.shape[2] != self.config.input_size:
            raise ValueError(
                f"expected input of shape (batch, time, {self.config.input_size}), but got {tuple(x.shape)}."
            )
        last = self._last(x) if lengths is None else self._last_packed(x, lengths)
        result = self._head(last)  # (B, output_size)
        if self.highway is not None:
            result = result + self.highway(self._highway_inputs(x, lengths))
        return result

    def _head(self, last: Tensor) -> Tensor:
        result: Tensor = self.head(self.drop(last))  # (B, H * D) -> (B, output_size)
        return result

    def _last(self, x: Tensor) -> Tensor:
        """Every row full length: the outputs after the last step (and, backward, the first)."""
        out: Tensor = self.rnn(x)[0]  # (B, T, H * D); the directions are concatenated on the last axis
        if not self.config.bidirectional:
            return out[:, -1, :]  # (B, H)
        hidden = self.config.hidden_size
        forward_last = out[:, -1, :hidden]  # (B, H): forward direction after reading all T
        backward_last = out[:, 0, hidden:]  # (B, H): backward direction after reading all T
        return torch.cat([forward_last, backward_last], dim=1)  # (B, 2H)

    def _last_packed(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        """Rows of their own lengths, packed: padding never reaches the recurrent state; the final
        hidden state of each row's own last step (backward: after reading back to its first)."""
        if lengths is None:  # every row is full length
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths.to("cpu", torch.int64), batch_first=True, enforce_sorted=False
        )
        state = self.rnn(packed)[1]  # h_n: (L * D, B, H), in the batch's own order
        h_n: Tensor = state[0] if isinstance(state, tuple) else state  # LSTM: (h_n, c_n)
        if self.config.bidirectional:
            return torch.cat([h_n[-2], h_n[-1]], dim=1)  # (B, 2H)
        return h_n[-1]  # (B, H)

    def _highway_inputs(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        """The last highway_window steps of the highway feature (B, W); with lengths, each row's
        own last steps (zeros before a row shorter than W)."""
        window, target = self.config.highway_window, self.config.highway_target
        if x.shape[1] < window:
            raise ValueError(f"the highway reads the last {window} steps, but the input has {x.shape[1]}.")
        if lengths is None:
            return x[:, -window:, target]  # (B, W)
        steps = lengths.to(x.device, torch.int64)[:, None] - window + torch.arange(window, device=x.device)  # (B, W)
        values = x[:, :, target].gather(1, steps.clamp(min=0))  # (B, W)
        return values * (steps >= 0)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
