"""The data a worker trains on: each study's data set loaded once and kept for its trials.

A spec names built-in data, a file under a data root, an uploaded data set or a data-set
plugin; :class:`DataCache` turns any of them into ``models.SequenceData`` and keeps a few.
A failure here fails the whole study (:class:`StudyDataError`): every trial would fail the same way."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from rnntune.models.data import DataError, SequenceData, load_dataset
from rnntune.models.files import FileLimits
from rnntune.service import plugins
from rnntune.service.spec import ROOT_TEXT_REASON, StudySpec, is_path, resolve_path, resolve_roots


class StudyDataError(Exception):
    """The study's data cannot be loaded: the study fails at once instead of trial after trial."""


class DataCache:
    """A worker keeps a few loaded data sets: trials of one study share them.

    A spec's ``data.dataset`` (and ``data.params.embeddings`` / ``embeddings_vocab`` when they
    are not paths) names an uploaded file (``rnntune_datasets``): its bytes are read from the
    database once, written to ``cache_dir/<sha256>.<format>`` (shared by every study that uses
    the same file), and loaded from there like a file named by ``data.path``. Copies of data
    sets deleted since are removed (:meth:`prune`) whenever a data set is loaded.

    A path a spec names is opened only if it lies under ``data_roots`` (``RNNTUNE_DATA_ROOTS``),
    symlinks followed: the API checked it at submit, and the worker checks it again here, since
    its own filesystem is the one that counts. A text study trains on such a file only with
    ``allow_root_text`` (``RNNTUNE_ALLOW_ROOT_TEXT``): its model file carries the file's words."""

    def __init__(
        self,
        size: int = 4,
        *,
        sessions: sessionmaker[Session] | None = None,
        cache_dir: str | os.PathLike | None = None,
        data_roots: Sequence[str] = (),
        file_limits: FileLimits | None = None,
        allow_root_text: bool = False,
    ):
        self.size = size
        self.allow_root_text = allow_root_text
        self.sessions = sessions
        self.cache_dir = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "rnntune-datasets"
        self.data_roots = resolve_roots(data_roots)
        self.file_limits = file_limits
        self._items: OrderedDict[str, SequenceData] = OrderedDict()

    def forget(self, study_name: str) -> None:
        """Drop the data sets loaded for a study (deleted: a new one may take its name)."""
        for key in [k for k in self._items if k.startswith(f"{study_name}|")]:
            del self._items[key]

    def get(
        self,
        spec: StudySpec,
        window: int | None,
        max_length: int | None = None,
        *,
        fold: tuple[int, int] | None = None,
    ) -> SequenceData:
        """``max_length`` (text: a searched truncation) overrides ``data.params.max_length``;
        ``fold`` (index, n_folds): a rolling-origin fold instead of the split (``load_dataset``)."""
        d = spec.data
        if d is None:
            raise StudyDataError("data: this study has none (its objective plugin or command trains)")
        key = f"{spec.name}|{d.model_dump_json()}|{window}|{max_length}|{fold}"
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        params = dict(d.params)
        if max_length is not None:
            params["max_length"] = max_length
        field, path = ("data.path", d.path) if d.path is not None else ("data.params.path", params.pop("path", None))
        params.pop("path", None)
        target = d.target or params.pop("target", None)
        self.prune()
        if d.dataset is not None:
            path = self.dataset_file(d.dataset)
        elif path is not None:
            path = self._allowed(field, path)
            if d.name == "text" and not self.allow_root_text:
                raise StudyDataError(f"{field}: {ROOT_TEXT_REASON}")
        if d.name == "plugin" and d.plugin is not None:
            data = _plugin_data(d.plugin, params)
            self._items[key] = data
            return data
        for name in ("embeddings", "embeddings_vocab"):
            ref = params.get(name)
            if ref is not None:
                where = f"data.params.{name}"
                params[name] = self._allowed(where, ref) if is_path(ref) else self.dataset_file(ref, field=where)
        try:
            data = load_dataset(
                d.name,
                params,
                window=window,
                horizon=d.horizon,
                target=target,
                inputs=d.inputs,
                path=path,
                file_limits=self.file_limits,
                fold=fold,
            )
        except (DataError, OSError) as exc:
            raise StudyDataError(f"data: {exc}") from exc
        self._items[key] = data
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return data

    def _allowed(self, field: str, path: Any) -> str:
        """The real path of a file the spec names, if under a data root; else the study fails."""
        try:
            return resolve_path(path, self.data_roots)
        except ValueError as exc:
            raise StudyDataError(f"{field}: {exc}") from None

    def prune(self) -> int:
        """Remove local copies of data sets that were deleted; return how many."""
        from rnntune.service.data import datasets

        if self.sessions is None or not self.cache_dir.is_dir():
            return 0
        asked = time.time() - 1.0  # a copy written after this may be of an upload newer than the list
        with self.sessions() as session:
            kept = datasets.digests(session)
        n = 0
        for file in self.cache_dir.iterdir():
            digest = file.name.partition(".")[0]
            stale = digest not in kept and file.stat().st_mtime < asked
            if file.is_file() and not file.name.startswith(".") and stale:
                file.unlink(missing_ok=True)
                n += 1
        return n

    def dataset_file(self, ref: str, *, field: str = "data.dataset") -> str:
        """A local copy of the uploaded data set ``ref`` (name or id), checked against its sha256."""
        from rnntune.service.data import datasets

        if self.sessions is None:
            raise StudyDataError(f"{field}: {ref!r} is an uploaded data set, but this worker has no database")
        with self.sessions() as session:
            row = datasets.find(session, ref)
            if row is None:
                raise StudyDataError(f"{field}: no dataset named {ref!r} (deleted after the study was submitted?)")
            digest, fmt = row.sha256, row.format
            local = self.cache_dir / f"{digest}.{fmt}"
            if local.is_file():
                return str(local)
            content = datasets.content(session, row.id)
        if hashlib.sha256(content).hexdigest() != digest:
            raise StudyDataError(f"{field}: the stored bytes of {ref!r} do not match its sha256 {digest}")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as f:
                f.write(content)
            os.replace(tmp, local)  # atomic: workers on one host may fetch the same file at once
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return str(local)


def _plugin_data(name: str, params: dict[str, Any]) -> SequenceData:
    """A data-set plugin's SequenceData, or arrays and a task (``{"x", "y", "task"}``, split here
    70/15/15 at random, seeded by ``params["seed"]``); any failure fails the study (StudyDataError)."""
    try:
        loader, _ = plugins.load("dataset", name)
        data = loader(dict(params))
        if isinstance(data, dict) and "x" in data and "y" in data:
            data = _split_arrays(name, data, int(params.get("seed", 0)))
    except Exception as exc:
        raise StudyDataError(f"data: plugin {name!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(data, SequenceData):
        raise StudyDataError(
            f"data: plugin {name!r} returned a {type(data).__name__}, not rnntune.models.SequenceData "
            "or a dict of x, y and task"
        )
    return data


def _split_arrays(name: str, arrays: dict[str, Any], seed: int) -> SequenceData:
    """x (N, T, F), y (N,) or (N, K), task (default regression) -> train / val / test at random."""
    import numpy as np

    x, y = np.asarray(arrays["x"]), np.asarray(arrays["y"])
    task = arrays.get("task", "regression")
    if task == "regression" and y.ndim == 1:
        y = y[:, None]
    order = np.random.default_rng(seed).permutation(len(x))
    n_train, n_val = int(0.7 * len(x)), max(1, int(0.15 * len(x)))
    parts = np.split(order, [n_train, n_train + n_val])
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = ((x[idx], y[idx]) for idx in parts)
    return SequenceData(name, task, x_train, y_train, x_val, y_val, x_test, y_test, meta={"source": f"plugin {name}"})
