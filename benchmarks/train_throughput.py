"""Training throughput: rnntune.models.train.fit vs a minimal hand-written loop vs a DataLoader loop.

All three train the same SequenceModel (LSTM, hidden 64 by default) with Adam on the same
adding-problem data (seq len 50, batch 64) for the same number of epochs, and evaluate the
val split once per epoch (fit always does). Each run is timed end to end: model construction,
moving the data to the device, training and evaluation. Runs are interleaved (the order rotates
every repeat) so drifting machine load hits all three alike; ratios are medians of the
per-repeat ratios against the hand loop.

    python benchmarks/train_throughput.py                 # torch's default thread count
    python benchmarks/train_throughput.py --threads 1     # torch.set_num_threads(1)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnntune.models.data import SequenceData, load_dataset
from rnntune.models.recurrent import ModelConfig, SequenceModel
from rnntune.models.train import TrainConfig, fit, pick_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _on(device: torch.device, *arrays) -> list[torch.Tensor]:
    return [torch.as_tensor(array, device=device) for array in arrays]


@torch.no_grad()
def _val_loss(model: SequenceModel, x_val: torch.Tensor, y_val: torch.Tensor) -> float:
    model.eval()
    total = torch.zeros((), device=x_val.device)
    for start in range(0, len(x_val), 1024):
        out = model(x_val[start : start + 1024])
        total += F.mse_loss(out, y_val[start : start + 1024], reduction="sum")
    model.train()
    return total.item() / y_val.numel()


def run_fit(data: SequenceData, config: ModelConfig, args: argparse.Namespace) -> float:
    train_config = TrainConfig(
        lr=1e-3, batch_size=args.batch_size, max_epochs=args.epochs, seed=0,
        device=args.device, amp=False,
    )  # fmt: skip
    return fit(config, train_config, data).history[-1].val_loss


def run_hand_loop(data: SequenceData, config: ModelConfig, args: argparse.Namespace) -> float:
    device = pick_device(args.device)
    torch.manual_seed(0)
    model = SequenceModel(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = _on(device, data.x_train, data.y_train)
    x_val, y_val = _on(device, data.x_val, data.y_val)
    val = 0.0
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(x), device=device)
        for start in range(0, len(x), args.batch_size):
            index = order[start : start + args.batch_size]
            loss = F.mse_loss(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        val = _val_loss(model, x_val, y_val)
    return val


def run_dataloader(data: SequenceData, config: ModelConfig, args: argparse.Namespace) -> float:
    device = pick_device(args.device)
    torch.manual_seed(0)
    model = SequenceModel(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(
        TensorDataset(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)),
        batch_size=args.batch_size, shuffle=True, pin_memory=device.type == "cuda",
    )  # fmt: skip
    x_val, y_val = _on(device, data.x_val, data.y_val)
    val = 0.0
    for _ in range(args.epochs):
        model.train()
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = F.mse_loss(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        val = _val_loss(model, x_val, y_val)
    return val


VARIANTS = {"fit": run_fit, "hand loop": run_hand_loop, "dataloader": run_dataloader}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm", choices=("rnn", "lstm", "gru"))
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-samples", type=int, default=4000, help="70%% of them train")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)

    data = load_dataset("adding", {"n_samples": args.n_samples, "length": args.seq_len})
    config = ModelConfig(input_size=2, output_size=1, cell=args.cell, hidden_size=args.hidden)
    n_samples = len(data.x_train) * args.epochs
    print(
        f"{args.cell.upper()}-{args.hidden}, seq {args.seq_len}, batch {args.batch_size}, "
        f"{len(data.x_train)} train samples x {args.epochs} epochs (+ val each epoch), "
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{args.repeats} interleaved repeats"
    )

    warmup = argparse.Namespace(**{**vars(args), "epochs": 1})
    for run in VARIANTS.values():
        run(data, config, warmup)

    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    for repeat in range(args.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            _sync(device)
            started = time.perf_counter()
            VARIANTS[name](data, config, args)
            _sync(device)
            rates[name].append(n_samples / (time.perf_counter() - started))

    base = rates["hand loop"]
    header = f"{'variant':<12} {'samples/s (median)':>19} {'min':>9} {'max':>9}"
    print(f"\n{header} {'vs hand loop':>13}")
    for name in names:
        paired = statistics.median(r / b for r, b in zip(rates[name], base, strict=False))
        print(
            f"{name:<12} {statistics.median(rates[name]):>19,.0f} {min(rates[name]):>9,.0f} "
            f"{max(rates[name]):>9,.0f} {paired:>12.3f}x"
        )


if __name__ == "__main__":
    main()
