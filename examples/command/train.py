"""A plain PyTorch LSTM regressor: its own data, loop and optimiser. Runs on its own:

    python examples/command/train.py --lr 0.01 --hidden-size 32 --epochs 10

and under rnntune as a command trial (studies/command-trial.yaml) with one line added, the
``report`` call in the epoch loop: alone it does nothing; under a worker it records the epoch's
validation loss and raises ``rnntune.TrialPruned`` when the pruner stops the trial.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from rnntune import report


def make_data(n_series: int, window: int, seed: int):
    """Sines of random frequency and phase plus noise; forecast the next value."""
    rng = np.random.default_rng(seed)
    t = np.arange(window + 1)
    series = np.sin(rng.uniform(0.05, 0.3, (n_series, 1)) * t + rng.uniform(0, 2 * np.pi, (n_series, 1)))
    series += 0.05 * rng.standard_normal(series.shape)
    x = torch.tensor(series[:, :window, None], dtype=torch.float32)  # (N, T, 1)
    y = torch.tensor(series[:, window:], dtype=torch.float32)  # (N, 1)
    split = int(0.8 * n_series)
    return x[:split], y[:split], x[split:], y[split:]


class LSTMRegressor(nn.Module):
    def __init__(self, hidden_size: int, num_layers: int):
        super().__init__()
        self.lstm = nn.LSTM(1, hidden_size, num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)  # (B, T, H)
        return self.head(out[:, -1])  # (B, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--num-layers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--n-series", type=int, default=1000)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    x_train, y_train, x_val, y_val = make_data(args.n_series, args.window, args.seed)
    model = LSTMRegressor(args.hidden_size, args.num_layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train))
        for start in range(0, len(x_train), args.batch_size):
            idx = order[start : start + args.batch_size]
            loss = nn.functional.mse_loss(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = nn.functional.mse_loss(model(x_val), y_val).item()
        print(f"epoch {epoch}: val_loss {val_loss:.5f} ({time.perf_counter() - started:.2f} s)", flush=True)
        report(epoch, val_loss)  # the one line rnntune needs


if __name__ == "__main__":
    main()
