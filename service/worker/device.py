"""Which torch device a worker trains on."""

from __future__ import annotations

import torch


def pick_device(requested: str = "auto") -> str:
    """``requested`` as given, or for ``auto`` the GPU when there is one, else the CPU."""
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"
