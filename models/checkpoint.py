"""The best model of a study as one file a user downloads and loads to predict.

The file is a single torch.save of plain Python values and CPU tensors, so it loads with
torch.load(path, weights_only=True) (no pickled classes, nothing executed on load):

    {"format": "rnntune.model", "version": 1, "model_config": {...}, "state_dict": {...},
     "train_config": {...} | None, "scaler": {...} | None, "meta": {...},
     "text": {"tokenizer": {"pattern", "lowercase"}, "vocab": {"itos": [...], ...},
              "labels": [...], "max_length": int | None, ...} | None}

A text model's file carries its tokenizer settings, vocabulary and label names, so that
``load_model(path).predict(["a raw review", ...])`` returns label names.

A model plugin's file (an installed ``rnntune.models`` entry point built the module) records
``"plugin": {"name", "distribution", "version", "config"}`` instead of code: ``load_model``
re-creates the module through the entry point of that name, installed where it loads, and says
which distribution to install when it is not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
import os
import tempfile
from collections.abc import Sequence
from typing import IO, Any, SupportsFloat, overload

import numpy as np
import torch
from torch import nn

from rnntune.models.config import ModelConfig, TrainConfig
from rnntune.models.data.container import Scaler
from rnntune.models.recurrent import SequenceModel
from rnntune.models.text import TextInfo, Vocab, as_text, encode_texts, tokenize
from rnntune.models.train import pick_device

FORMAT = "rnntune.model"
VERSION = 1
PLUGIN_GROUP = "rnntune.models"


def build_plugin_model(plugin: dict[str, Any]) -> nn.Module:
    """Re-create a model plugin's module from a model file's ``plugin`` record."""
    from importlib import metadata

    name = plugin["name"]
    found = list(metadata.entry_points(group=PLUGIN_GROUP, name=name))
    if not found:
        dist, version = plugin.get("distribution"), plugin.get("version")
        hint = f"; install {dist}=={version}" if dist else ""
        raise ValueError(f"this model file needs the model plugin {name!r} ({PLUGIN_GROUP}), not installed here{hint}")
    model = found[0].load()(dict(plugin["config"]))
    if not isinstance(model, nn.Module):
        raise TypeError(f"model plugin {name!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


Texts = Sequence[str | bytes]  # a text model's input: raw strings (or UTF-8 bytes)


def save_model(
    path: str | os.PathLike[str] | IO[bytes],
    model_config: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    *,
    train_config: TrainConfig | None = None,
    scaler: Scaler | None = None,
    meta: dict[str, Any] | None = None,
    text: TextInfo | None = None,
    plugin: dict[str, Any] | None = None,
) -> None:
    """Write one checkpoint file (atomically when path is a file name; or to a binary stream).
    ``plugin``: the model plugin that built the module (name, distribution, version, config)."""
    if not isinstance(model_config, ModelConfig):
        raise TypeError(f"model_config must be a ModelConfig, got {type(model_config).__name__}.")
    state = {key: value.detach().to("cpu") for key, value in state_dict.items()}
    module = build_plugin_model(plugin) if plugin is not None else SequenceModel(model_config)
    module.load_state_dict(state)  # fail now, not when a user loads it
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": dataclasses.asdict(model_config),
        "state_dict": state,
        "train_config": dataclasses.asdict(train_config) if train_config is not None else None,
        "scaler": _plain(scaler, "scaler"),
        "meta": _plain(meta or {}, "meta"),
        "text": _plain(text, "text"),
    }
    if plugin is not None:
        payload["plugin"] = _plain(plugin, "plugin")
    if not isinstance(path, (str, os.PathLike)):  # a binary stream
        torch.save(payload, path)
        return
    file_name = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(file_name))
    handle, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
        os.replace(tmp_path, file_name)
    except BaseException:
        _remove_quietly(tmp_path)
        raise


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


class Predictor:
    """A loaded model that predicts in the data's original units."""

    def __init__(
        self,
        model: nn.Module,
        config: ModelConfig,
        scaler: Scaler | None,
        meta: dict[str, Any],
        train_config: TrainConfig | None = None,
        text: TextInfo | None = None,
    ) -> None:
        self.model = model
        self.text = text  # tokenizer, vocabulary, label names (text models only)
        self._vocab = Vocab.from_dict(text["vocab"]) if text is not None else None
        self.config = config
        self.scaler = scaler
        self.meta = meta
        self.train_config = train_config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def labels(self) -> list[str] | None:
        """Text models: the label names, in the order of predict_proba's columns."""
        return None if self.text is None else list(self.text["labels"])

    @torch.no_grad()
    def _forward_text(self, texts: np.ndarray | Texts, text: TextInfo, vocab: Vocab, batch_size: int) -> np.ndarray:
        if isinstance(texts, (str, bytes)) or not isinstance(texts, (list, tuple)):
            raise ValueError("a text model predicts from a list of strings, e.g. predict(['great film'])")
        lowercase = text["tokenizer"]["lowercase"]
        tokens = [tokenize(as_text(t, f"texts[{i}]"), lowercase=lowercase) for i, t in enumerate(texts)]
        if not tokens:
            return np.zeros((0, self.config.output_size), np.float32)
        ids, lengths = encode_texts(tokens, vocab, text.get("max_length"))
        ids_t = torch.as_tensor(ids, device=self.device)
        lengths_t = torch.as_tensor(lengths)
        self.model.eval()
        outputs = []
        for start in range(0, len(ids), batch_size):
            lb = lengths_t[start : start + batch_size]
            out = self.model(ids_t[start : start + batch_size, : int(lb.max())], lb)
            outputs.append(out.float().cpu())
        return torch.cat(outputs).numpy()

    @torch.no_grad()
    def _forward(self, x: np.ndarray | Texts, batch_size: int) -> np.ndarray:
        if self.text is not None and self._vocab is not None:  # both or neither (__init__)
            return self._forward_text(x, self.text, self._vocab, batch_size)
        values, lengths = self._padded(x)
        if self.scaler is not None and "x_mean" in self.scaler:
            values = (values - np.asarray(self.scaler["x_mean"])) / np.asarray(self.scaler["x_std"])
        if lengths is not None:  # padding is zeros, as the loader made it
            values = np.where(np.arange(values.shape[1])[None, :, None] < lengths[:, None, None], values, 0.0)
        inputs = torch.as_tensor(values.astype(np.float32), device=self.device)  # (N, T, F)
        lengths_t = None if lengths is None else torch.as_tensor(lengths)
        self.model.eval()
        outputs = []
        for start in range(0, len(inputs), batch_size):
            if lengths_t is None:
                out = self.model(inputs[start : start + batch_size])
            else:  # trimmed to the batch's longest sequence, packed
                lb = lengths_t[start : start + batch_size]
                out = self.model(inputs[start : start + batch_size, : int(lb.max())], lb)
            outputs.append(out.float().cpu())
        if not outputs:
            return np.zeros((0, self.config.output_size), np.float32)
        return torch.cat(outputs).numpy()  # (N, output_size)

    def _padded(self, x: np.ndarray | Sequence[np.ndarray] | Texts) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, T, F) values and, for a list of (T_i, F) sequences (ragged), their lengths (N,)
        with the values zero-padded to the longest; an (N, T, F) array is N full-length ones."""
        width = self.config.input_size
        if isinstance(x, (list, tuple)) and x and all(np.ndim(item) == 2 for item in x):
            rows = [np.asarray(item, dtype=np.float64) for item in x]
            for i, row in enumerate(rows):
                if row.shape[0] < 1 or row.shape[1] != width:
                    raise ValueError(
                        f"x[{i}] must be (T_i >= 1, {width}) in original units, but got shape {row.shape}."
                    )
            lengths = np.array([len(row) for row in rows], dtype=np.int64)
            values = np.zeros((len(rows), int(lengths.max()), width))
            for i, row in enumerate(rows):
                values[i, : len(row)] = row
            return values, lengths
        values = np.asarray(x, dtype=np.float64)
        if values.ndim != 3 or values.shape[2] != width:
            raise ValueError(
                f"x must be (N, T, {width}) or a list of (T_i, {width}) sequences in original units, "
                f"but got shape {values.shape}."
            )
        return values, None

    @overload
    def predict(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray: ...

    @overload
    def predict(self, x: Texts, batch_size: int = 1024) -> list[str]: ...

    def predict(self, x: np.ndarray | Texts, batch_size: int = 1024) -> np.ndarray | list[str]:
        """x (N, T, F) in original units, or a list of N sequences (T_i, F) of their own lengths
        (padded and packed here) -> regression: (N, output_size) float32 in original units;
        classification: (N,) int64 class indices.

        Text models: x is a list of raw strings (or UTF-8 bytes), tokenized, encoded and
        truncated as in training -> a list of label names (``labels``); ``predict_indices``
        gives the class indices, ``predict_proba`` the probabilities."""
        out = self._forward(x, batch_size)
        if self.text is not None:
            return [self.text["labels"][i] for i in out.argmax(axis=1)]
        if self.config.task == "classification":
            indices: np.ndarray = out.argmax(axis=1).astype(np.int64)
            return indices
        if self.scaler is not None and "y_mean" in self.scaler:
            out = out * np.asarray(self.scaler["y_std"]) + np.asarray(self.scaler["y_mean"])
        return out.astype(np.float32)

    def predict_indices(self, x: np.ndarray | Texts, batch_size: int = 1024) -> np.ndarray:
        """Classification: (N,) int64 class indices (for text, positions in ``labels``)."""
        if self.config.task != "classification":
            raise ValueError(f"predict_indices needs a classification model, but got task={self.config.task!r}.")
        indices: np.ndarray = self._forward(x, batch_size).argmax(axis=1).astype(np.int64)
        return indices

    def predict_proba(self, x: np.ndarray | Texts, batch_size: int = 1024) -> np.ndarray:
        """Classification only: (N, n_classes) class probabilities."""
        if self.config.task != "classification":
            task = self.config.task
            raise ValueError(f"predict_proba needs a classification model, but got {task=}.")
        logits = torch.from_numpy(self._forward(x, batch_size))
        return torch.softmax(logits, dim=1).numpy()


def load_model(path: str | os.PathLike[str] | IO[bytes], device: str | torch.device | None = None) -> Predictor:
    """Load a save_model file (weights_only: safe on untrusted files) onto device (None = auto)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not an rnntune model file.")
    if payload.get("version") != VERSION:
        raise ValueError(
            f"{path!r} has model file version {payload.get('version')!r}; this code reads version {VERSION}."
        )
    config = ModelConfig(**{"highway": False, **payload["model_config"]})  # files from before the highway
    model = build_plugin_model(payload["plugin"]) if payload.get("plugin") else SequenceModel(config)
    model.load_state_dict(payload["state_dict"])
    model.to(pick_device(device)).eval()
    train_config = payload.get("train_config")
    return Predictor(
        model=model,
        config=config,
        scaler=payload.get("scaler"),
        meta=payload.get("meta") or {},
        train_config=TrainConfig(**train_config) if train_config is not None else None,
        text=payload.get("text"),
    )


def _plain(value: Any, where: str) -> Any:
    """Convert to the plain types torch.load(weights_only=True) accepts, or raise TypeError."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, numbers.Number) and isinstance(value, SupportsFloat):
        return float(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} keys must be strings, but got {key!r}.")
            out[key] = _plain(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{where} holds a {type(value).__name__}, which a model file cannot store.")
