"""Spec + ``optuna.Trial`` -> a ``models`` training run whose every epoch reports to Optuna.

The only place where Optuna meets PyTorch: ``rnntune.models.train.fit`` calls ``on_epoch_end`` after each
epoch; we report the metric there and raise ``TrialPruned`` when the pruner says so.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy.orm import Session, sessionmaker

from rnntune.models.data import DataError, SequenceData, load_dataset
from rnntune.models.files import FileLimits
from rnntune.models.recurrent import ModelConfig
from rnntune.models.train import DivergedError, EpochResult, FitResult, TrainConfig, TrainingStopped, fit
from rnntune.reporting import TrialPruned
from rnntune.service import command, optuna_compat, pareto, plugins
from rnntune.service.db import TRANSIENT_ERRORS
from rnntune.service.outcome import Interruption, Outcome, TrialOutcome
from rnntune.service.plugins import PluginError
from rnntune.service.search import suggest
from rnntune.service.spec import (
    HYPERPARAMETERS,
    ROOT_TEXT_REASON,
    StudySpec,
    is_path,
    resolve_path,
    resolve_roots,
)

METRIC_KEYS = {"val_loss": "loss", "val_mae": "mae", "val_accuracy": "accuracy", "val_f1": "f1"}
DEFAULT_EMBED_DIM = 64  # text: when embed_dim is neither fixed, searched nor set by a matrix


class Interrupted(Exception):
    """Raised at an epoch boundary when the worker must stop (shutdown, cancel, lost lease)."""


class StudyDataError(Exception):
    """The study's data cannot be loaded: the study fails at once instead of trial after trial."""


class SearchError(Exception):
    """The sampler or the pruner raised: ``part`` says which (a trial attribute and the reason's
    prefix, so that a misconfigured search says so in the study's ``reason``)."""

    def __init__(self, part: str, message: str):
        super().__init__(message)
        self.part = part


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
        if d.name == "plugin":
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
        from rnntune.service import datasets

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
        from rnntune.service import datasets

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
    splits = [a[idx] for idx in parts for a in (x, y)]
    return SequenceData(name, task, *splits, meta={"source": f"plugin {name}"})


class PluginModel:
    """A model plugin as ``fit``'s ``model_factory``: the plugin's config from the trial's
    hyperparameters, the module checked against SequenceModel's contract, and the record a model
    file keeps (entry-point name, distribution, version, config) to re-create it."""

    def __init__(self, name: str, spec: StudySpec, hp: dict[str, Any]):
        self.name = name
        self.fn, self.info = plugins.load("model", name)
        model_hp = {k: v for k, v in spec.model.items() if k != "plugin"}
        for key, value in hp.items():  # built-in model parameters and the plugin's own
            hp_def = HYPERPARAMETERS.get(key)
            if hp_def is None or hp_def.group == "model":
                model_hp.setdefault(key, value)
        self.hp = model_hp
        self.config: dict[str, Any] | None = None

    def __call__(self, model_config: ModelConfig):
        import torch

        config = {
            **self.hp,
            "input_size": model_config.input_size,
            "output_size": model_config.output_size,
            "task": model_config.task,
            "vocab_size": model_config.vocab_size,
            "embed_dim": model_config.embed_dim,
            "padding_idx": model_config.padding_idx,
        }
        try:
            model = self.fn(dict(config))
        except Exception as exc:
            raise PluginError(f"model plugin {self.name!r} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(model, torch.nn.Module):
            raise PluginError(f"model plugin {self.name!r} returned a {type(model).__name__}, not a torch.nn.Module")
        self.config = config
        return model

    def check(self, model_config: ModelConfig, data: SequenceData) -> None:
        """One forward pass on two training samples: (2, output_size) out, or the study fails."""
        import torch

        model = self(model_config).eval()
        x = torch.as_tensor(data.x_train[:2])
        try:
            with torch.no_grad():
                if data.lengths_train is not None:
                    out = model(x, torch.as_tensor(data.lengths_train[:2]))
                else:
                    out = model(x)
        except Exception as exc:
            raise PluginError(
                f"model plugin {self.name!r} failed on a batch of shape {tuple(x.shape)}: {type(exc).__name__}: {exc}"
            ) from exc
        want = (len(x), model_config.output_size)
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if shape != want:
            raise PluginError(
                f"model plugin {self.name!r} returned {shape} for a batch of shape {tuple(x.shape)}; "
                f"the contract is (batch, output_size) = {want}"
            )

    def record(self) -> dict[str, Any]:
        """What a model file keeps to re-create the module (see ``rnntune.models.checkpoint``)."""
        return {
            "name": self.name,
            "distribution": self.info.distribution,
            "version": self.info.version,
            "config": self.config,
        }


def _retry_db(fn, *args, attempts: int = 8):
    """Call an Optuna storage method, riding out a dropped connection or a database restart."""
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args)
        except TRANSIENT_ERRORS:
            if attempt == attempts:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def build_configs(
    spec: StudySpec, hp: dict[str, Any], data: SequenceData, *, device: str | None
) -> tuple[ModelConfig, TrainConfig]:
    """Every hyperparameter of a trial (``search.suggest`` / ``search.hyperparameters``) -> the
    ``models`` configs. The objective and the finalize step (which retrains the best trial) both
    use it, so the stored model is built exactly as the tuned one was."""
    text: dict[str, Any] = {}
    if data.vocab_size is not None:  # token ids: an embedding first
        embed_dim = hp.get("embed_dim")
        if data.embeddings is not None:
            width = int(data.embeddings.shape[1])
            if embed_dim is not None and embed_dim != width:
                raise ValueError(
                    f"embed_dim={embed_dim} but the embedding matrix (data.params.embeddings) has width {width}"
                )
            embed_dim = width
        text = {
            "vocab_size": data.vocab_size,
            "embed_dim": embed_dim if embed_dim is not None else DEFAULT_EMBED_DIM,
            "freeze_embeddings": bool(hp.get("freeze_embeddings", False)),
        }
    model_config = ModelConfig(
        input_size=data.input_size,
        output_size=data.output_size,
        task=data.task,
        cell=hp["cell"],
        hidden_size=hp["hidden_size"],
        num_layers=hp["num_layers"],
        bidirectional=hp["bidirectional"],
        dropout=hp["dropout"],
        **text,
    )
    train_config = TrainConfig(
        optimizer=hp["optimizer"],
        lr=hp["lr"],
        momentum=hp["momentum"],
        # Nesterov applies to SGD with momentum only; elsewhere a searched `nesterov` is moot.
        nesterov=hp["nesterov"] and hp["optimizer"] == "sgd" and hp["momentum"] > 0,
        weight_decay=hp["weight_decay"],
        batch_size=hp["batch_size"],
        max_epochs=spec.budget.max_epochs,
        clip_norm=hp["clip_norm"],
        scheduler=hp["scheduler"],
        patience=hp["patience"],
        seed=spec.seed,
        device=device,
    )
    return model_config, train_config


def metric_value(spec: StudySpec, result: EpochResult) -> float:
    if spec.metric == "val_loss":
        return result.val_loss
    return float(result.val_metrics[METRIC_KEYS[spec.metric]])


class Objective:
    """Callable for ``study.optimize``; :meth:`run` runs one trial and says how it ended.

    Every way out of a trial maps onto one :class:`~rnntune.service.outcome.TrialOutcome`, and
    the trial's Optuna attributes say the same: a counted failure carries ``fail_reason``
    (error / diverged / sampler / pruner / data) and ``error``, an interrupted trial
    ``interrupted``."""

    def __init__(
        self,
        spec: StudySpec,
        *,
        device: str | None,
        data_cache: DataCache,
        stop: threading.Event | None = None,
        on_trial_start=None,
        still_ours=None,
        interruption=None,
        commands: command.CommandOptions | None = None,
    ):
        self.spec = spec
        self.commands = commands or command.CommandOptions()  # what the operator allowed
        self.device = device
        self.data_cache = data_cache
        self.stop = stop or threading.Event()
        self.on_trial_start = on_trial_start  # (trial) -> None; raises Interrupted if the ticket is lost
        self.still_ours = still_ours  # () -> bool: checked before a trial may finish
        self.interruption = interruption or (lambda: Interruption.STOPPED)  # () -> why ``stop`` was set
        self.trial_number: int | None = None  # the last trial's, once it started
        self.trial_id: int | None = None
        self.params: dict[str, Any] | None = None
        self._outcome: TrialOutcome | None = None
        self.model_config: ModelConfig | None = None  # the last trial's, for inspection
        self.train_config: TrainConfig | None = None

    def run(self, study: optuna.Study) -> TrialOutcome:
        """One trial through ``study.optimize`` (so Optuna's heartbeat thread runs while it
        trains) and its outcome. Errors of Optuna's own bookkeeping around the trial (``ask``,
        ``tell``) propagate: the worker knows what they mean for the ticket."""
        self._outcome = None
        self.trial_number = self.trial_id = self.params = None
        study.optimize(self, n_trials=1, catch=(Exception,))
        if self._outcome is None:  # cannot happen: every path through __call__ sets one
            return TrialOutcome.failed("the objective recorded no outcome", self.trial_id, self.trial_number)
        return self._outcome

    def __call__(self, trial: optuna.Trial) -> float:
        self.trial_number = trial.number
        self.trial_id = optuna_compat.trial_id(trial)
        ids = (self.trial_id, trial.number)
        try:
            if self.on_trial_start is not None:
                self.on_trial_start(trial)
        except Interrupted as exc:
            self._interrupted(trial, exc, ids)
            raise
        try:
            hp = suggest(trial, self.spec)
        except Exception as exc:  # the sampler (or a search-space option it rejects)
            self._fail(trial, "sampler", f"sampler: {type(exc).__name__}: {exc}", ids)
            raise
        self.params = trial.params
        try:
            value = self._train(trial, hp) if self.spec.objective is None else self._own(trial, hp)
        except optuna.TrialPruned:
            self._outcome = TrialOutcome.pruned(*ids)
            raise
        except TrialPruned as exc:  # an objective plugin let rnntune's signal propagate
            self._outcome = TrialOutcome.pruned(*ids)
            raise optuna.TrialPruned(str(exc)) from None
        except (Interrupted, TrainingStopped) as exc:
            self._interrupted(trial, exc, ids)
            raise
        except (StudyDataError, PluginError) as exc:  # every trial would fail the same way
            self._fail(trial, "data", str(exc), ids, kind=Outcome.DATA_ERROR)
            raise
        except DivergedError as exc:
            self._fail(trial, "diverged", f"DivergedError: {exc}", ids, kind=Outcome.DIVERGED)
            raise
        except SearchError as exc:
            self._fail(trial, exc.part, str(exc), ids)
            raise
        except Exception as exc:
            self._fail(trial, "error", f"{type(exc).__name__}: {exc}", ids)
            raise
        values = value if isinstance(value, tuple) else (value,)  # several objectives: a tuple
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):  # what Optuna's tell accepts
            self._fail(trial, "error", f"the objective returned {value!r}", ids)
            return value
        self._outcome = TrialOutcome.complete(*ids, float(values[0]))  # the first objective's
        return value

    def _fail(self, trial, fail_reason: str, error: str, ids, *, kind: Outcome = Outcome.FAILED) -> None:
        _retry_db(trial.set_user_attr, "fail_reason", fail_reason)
        _retry_db(trial.set_user_attr, "error", error)
        self._outcome = TrialOutcome(kind, *ids, reason=error)

    def _interrupted(self, trial, exc: BaseException, ids) -> None:
        why = self.interruption()
        _retry_db(trial.set_user_attr, "interrupted", str(exc) or "worker stopped")
        self._outcome = TrialOutcome.interrupted(why, *ids, params=trial.params)

    def _report(self, trial: optuna.Trial, step: int, value: float, started: float) -> bool:
        """Record one step of the user's own training; answer whether the pruner stops it."""
        value = float(value)
        if not math.isfinite(value):
            raise DivergedError(f"{self.spec.metric} is {value} at step {step}")
        _retry_db(trial.report, value, int(step))
        if self.stop.is_set():
            raise Interrupted(f"stopped at step {step}")
        if _retry_db(trial.should_prune):
            trial.set_user_attr("epochs", int(step))
            trial.set_user_attr("train_seconds", round(time.monotonic() - started, 3))
            return True
        return False

    def _own(self, trial: optuna.Trial, hp: dict[str, Any]) -> float:
        """The user's own training: an objective plugin called in-process, or a command child."""
        spec, started = self.spec, time.monotonic()
        if spec.objective.plugin is not None:
            name = spec.objective.plugin
            fn, _ = plugins.load("objective", name)

            def report(step: int, value: float) -> None:
                if self._report(trial, step, value, started):
                    raise TrialPruned(f"pruned at step {step} ({spec.metric}={float(value):.6g})")

            value = plugins.objective_value(fn(dict(hp), report), name)
        else:
            value = self._command(trial, hp, started)
        if self.stop.is_set() or (self.still_ours is not None and not self.still_ours()):
            raise Interrupted("the ticket's lease was lost before the trial could finish")
        trial.set_user_attr("train_seconds", round(time.monotonic() - started, 3))
        return value

    def _command(self, trial: optuna.Trial, hp: dict[str, Any], started: float) -> float:
        spec, opts = self.spec, self.commands
        argv = spec.objective.command
        name = command.script_of(argv)
        script = command.resolve_script(name, list(opts.dirs))
        if script is None:
            escapes = command.escape_reason(name, list(opts.dirs))
            if escapes is not None:  # every trial would be refused the same way: the study fails
                raise StudyDataError(f"objective.command: {escapes}")
            raise command.CommandFailed("the script is not in this worker's allowed command directories")
        try:
            result = command.run(
                command.build_argv(argv, hp, script),
                hp,
                cwd=script.parent,
                device=self.device or "cpu",
                on_report=lambda step, value: self._report(trial, step, value, started),
                stop=self.stop,
                timeout_s=spec.objective.timeout_s or opts.timeout_s,
                grace_s=opts.grace_s,
                env_extra=opts.env,
            )
        except command.CommandStopped as exc:
            raise Interrupted(str(exc)) from None
        trial.set_user_attr("epochs", result.steps)
        if result.state == "PRUNED":
            raise optuna.TrialPruned(f"pruned at step {result.steps}; the command was stopped")
        return result.value

    def _train(self, trial: optuna.Trial, hp: dict[str, Any]) -> float | tuple[float, ...]:
        spec = self.spec
        data = self.data_cache.get(spec, hp["window"], hp.get("max_length"))
        model_config, train_config = build_configs(spec, hp, data, device=self.device)
        factory = None
        if spec.model.get("plugin"):
            factory = PluginModel(spec.model["plugin"], spec, hp)
            factory.check(model_config, data)
        self.model_config, self.train_config = model_config, train_config
        started = time.monotonic()
        report, should_prune = trial.report, trial.should_prune
        if spec.multi_objective:  # Optuna neither records nor prunes those per epoch: see service/pareto.py
            report, should_prune = (
                functools.partial(pareto.report, trial),
                functools.partial(pareto.should_prune, trial),
            )

        def on_epoch_end(result: EpochResult) -> bool:
            value = metric_value(spec, result)
            if not math.isfinite(value):
                raise DivergedError(f"{spec.metric} is {value} at epoch {result.epoch}")
            _retry_db(report, value, result.epoch)
            if self.stop.is_set():
                raise Interrupted(f"stopped at epoch {result.epoch}")
            try:
                prune = _retry_db(should_prune)
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:  # the pruner, not the model
                raise SearchError("pruner", f"pruner: {type(exc).__name__}: {exc}") from exc
            if prune:
                trial.set_user_attr("epochs", result.epoch)
                trial.set_user_attr("train_seconds", round(time.monotonic() - started, 3))
                raise optuna.TrialPruned(f"pruned at epoch {result.epoch} ({spec.metric}={value:.6g})")
            return False

        result: FitResult = fit(
            model_config,
            train_config,
            data,
            on_epoch_end=on_epoch_end,
            should_stop=self.stop.is_set,
            model_factory=factory,
        )
        if self.stop.is_set() or (self.still_ours is not None and not self.still_ours()):
            # Our lease was lost (another worker has this ticket) or we must stop: finishing
            # now would run the budget over.
            raise Interrupted("the ticket's lease was lost before the trial could finish")
        best = result.history[result.best_epoch - 1]
        trial.set_user_attr("epochs", len(result.history))
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("stopped", result.stopped)
        trial.set_user_attr("train_seconds", round(time.monotonic() - started, 3))
        trial.set_user_attr("samples_per_s", round(result.samples_per_s, 1))
        trial.set_user_attr("device", result.device)
        trial.set_user_attr("val_metrics", {k: float(v) for k, v in best.val_metrics.items()})
        # what breaks a tie on the metric (service/results.py's ``tie_key``): val loss, then size
        trial.set_user_attr("val_loss", float(best.val_loss))
        trial.set_user_attr("n_params", int(sum(t.numel() for t in result.state_dict.values())))
        if spec.metric == "val_loss":  # the bar to beat: a model that learned nothing
            trial.set_user_attr("naive_val_loss", round(data.naive_val_loss(), 6))
        if not spec.multi_objective:
            return metric_value(spec, best)
        values = objective_values(spec, best, model_config, result, data)
        trial.set_user_attr("objectives", dict(zip(spec.objective_names(), values, strict=True)))
        return values


def objective_values(
    spec: StudySpec, best: EpochResult, model_config: ModelConfig, result: FitResult, data: SequenceData
) -> tuple[float, ...]:
    """A trial's value for each of ``spec.objectives``: the val metrics at its best epoch, the
    model's parameter count, and its batch-1 inference time on the device it trained on."""
    import torch

    from rnntune.models.recurrent import SequenceModel
    from rnntune.models.train import inference_latency_ms

    model = SequenceModel(model_config).to(result.device)
    model.load_state_dict(result.state_dict)
    out = []
    for name in spec.objective_names():
        if name == "n_params":
            out.append(float(sum(p.numel() for p in model.parameters())))
        elif name == "latency_ms":
            x = data.x_val if len(data.x_val) else data.x_train
            lengths = data.lengths_val if len(data.x_val) else data.lengths_train
            with torch.no_grad():
                out.append(inference_latency_ms(model, x, lengths))
        elif name == "val_loss":
            out.append(float(best.val_loss))
        else:
            out.append(float(best.val_metrics[METRIC_KEYS[name]]))
    return tuple(out)
