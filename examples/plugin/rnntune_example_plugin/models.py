"""A GRU with additive attention over its time steps: the ``gru-attention`` model plugin.

rnntune calls the factory with one dict: ``input_size``, ``output_size`` and ``task`` (from the
data), plus every model hyperparameter of the trial (fixed in the spec's ``model:`` or searched).
The module keeps rnntune's contract: (B, T, F) floats in, (B, output_size) out.

    x (B, T, F) -> GRU -> h (B, T, H) -> score (B, T) -> softmax over T -> weighted sum (B, H)
                -> dropout -> linear -> (B, output_size)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GRUAttention(nn.Module):
    def __init__(
        self, input_size: int, output_size: int, hidden_size: int, num_layers: int, dropout: float, attn_dim: int
    ):
        super().__init__()
        self.gru = nn.GRU(
            input_size, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.score = nn.Sequential(nn.Linear(hidden_size, attn_dim), nn.Tanh(), nn.Linear(attn_dim, 1))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        h, _ = self.gru(x)  # (B, T, H)
        weights = torch.softmax(self.score(h).squeeze(-1), dim=1)  # (B, T)
        context = (weights.unsqueeze(-1) * h).sum(dim=1)  # (B, H)
        return self.head(self.drop(context))  # (B, output_size)


def gru_attention(config: dict) -> nn.Module:
    """The entry point: rnntune's config dict -> the module."""
    if config.get("vocab_size"):
        raise ValueError("gru-attention reads numeric sequences (B, T, F), not token ids")
    return GRUAttention(
        input_size=config["input_size"],
        output_size=config["output_size"],
        hidden_size=int(config.get("hidden_size", 32)),
        num_layers=int(config.get("num_layers", 1)),
        dropout=float(config.get("dropout", 0.0)),
        attn_dim=int(config.get("attn_dim", 16)),
    )
