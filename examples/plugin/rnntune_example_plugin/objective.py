"""``sine-lstm-loop``: an objective plugin, a whole training function of the user's own.

rnntune calls ``train(params, report)`` with the trial's searched parameters; ``report(epoch,
val_loss)`` records each epoch and raises ``rnntune.TrialPruned`` when the pruner stops the
trial (let it propagate). The return value is the trial's value."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _data(n: int, window: int, seed: int) -> tuple[torch.Tensor, ...]:
    rng = np.random.default_rng(seed)
    t = np.arange(window + 1)
    series = np.sin(rng.uniform(0.05, 0.3, (n, 1)) * t + rng.uniform(0, 6.28, (n, 1)))
    x = torch.tensor(series[:, :window, None], dtype=torch.float32)
    y = torch.tensor(series[:, window:], dtype=torch.float32)
    split = int(0.8 * n)
    return x[:split], y[:split], x[split:], y[split:]


class Regressor(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.lstm = nn.LSTM(1, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)  # (B, T, H)
        return self.head(out[:, -1])  # (B, 1)


def train(params: dict, report) -> float:
    torch.manual_seed(int(params.get("seed", 0)))
    x_train, y_train, x_val, y_val = _data(int(params.get("n_series", 256)), 16, int(params.get("seed", 0)))
    model = Regressor(int(params.get("hidden_size", 16)))
    optimizer = torch.optim.Adam(model.parameters(), lr=float(params.get("lr", 1e-2)))
    batch_size, best = int(params.get("batch_size", 32)), float("inf")
    for epoch in range(1, int(params.get("epochs", 5)) + 1):
        model.train()
        for start in range(0, len(x_train), batch_size):
            loss = nn.functional.mse_loss(
                model(x_train[start : start + batch_size]), y_train[start : start + batch_size]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = nn.functional.mse_loss(model(x_val), y_val).item()
        best = min(best, val_loss)
        report(epoch, val_loss)  # raises rnntune.TrialPruned when the pruner says so
    return best
