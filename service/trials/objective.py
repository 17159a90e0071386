"""Spec + ``optuna.Trial`` -> a ``models`` training run whose every epoch reports to Optuna.

The only place where Optuna meets PyTorch: ``rnntune.models.train.fit`` calls ``on_epoch_end`` after each
epoch; we report the metric there and raise ``TrialPruned`` when the pruner says so.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from typing import Any

import optuna

from rnntune.models.config import ModelConfig, TrainConfig
from rnntune.models.train import DivergedError, EpochResult, FitResult, TrainingStopped
from rnntune.reporting import TrialPruned
from rnntune.service import plugins
from rnntune.service.data.data_cache import DataCache, StudyDataError
from rnntune.service.plugins import PluginError
from rnntune.service.search import suggest
from rnntune.service.spec import StudySpec
from rnntune.service.store import optuna_compat
from rnntune.service.store.attrs import TrialAttr
from rnntune.service.store.db import TRANSIENT_ERRORS, retry_db
from rnntune.service.trials import command, pareto
from rnntune.service.trials.outcome import Interrupted, Interruption, Outcome, TrialOutcome
from rnntune.service.trials.recipe import METRIC_KEYS, Recipe, metric_value

Ids = tuple[int, int]  # an Optuna trial's (row id, number)


class SearchError(Exception):
    """The sampler or the pruner raised: ``part`` says which (a trial attribute and the reason's
    prefix, so that a misconfigured search says so in the study's ``reason``)."""

    def __init__(self, part: str, message: str):
        super().__init__(message)
        self.part = part


class Objective:
    """Callable for ``study.optimize``; :meth:`run` runs one trial and says how it ended.

    Every way out of a trial maps onto one :class:`~rnntune.service.trials.outcome.TrialOutcome`, and
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

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        ids: Ids = (optuna_compat.trial_id(trial), trial.number)
        self.trial_id, self.trial_number = ids
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

    def _fail(self, trial, fail_reason: str, error: str, ids: Ids, *, kind: Outcome = Outcome.FAILED) -> None:
        retry_db(trial.set_user_attr, TrialAttr.FAIL_REASON, fail_reason)
        retry_db(trial.set_user_attr, TrialAttr.ERROR, error)
        self._outcome = TrialOutcome(kind, *ids, reason=error)

    def _interrupted(self, trial, exc: BaseException, ids: Ids) -> None:
        why = self.interruption()
        retry_db(trial.set_user_attr, TrialAttr.INTERRUPTED, f"{why.describe}: {exc}" if str(exc) else why.describe)
        self._outcome = TrialOutcome.interrupted(why, *ids, params=trial.params)

    def _report(self, trial: optuna.Trial, step: int, value: float, started: float) -> bool:
        """Record one step of the user's own training; answer whether the pruner stops it."""
        value = float(value)
        if not math.isfinite(value):
            raise DivergedError(f"{self.spec.metric} is {value} at step {step}")
        retry_db(trial.report, value, int(step))
        if self.stop.is_set():
            raise Interrupted(f"stopped at step {step}")
        if retry_db(trial.should_prune):
            trial.set_user_attr(TrialAttr.EPOCHS, int(step))
            trial.set_user_attr(TrialAttr.TRAIN_SECONDS, round(time.monotonic() - started, 3))
            return True
        return False

    def _own(self, trial: optuna.Trial, hp: dict[str, Any]) -> float:
        """The user's own training: an objective plugin called in-process, or a command child."""
        spec, started = self.spec, time.monotonic()
        assert spec.objective is not None  # _train runs the specs without one
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
            raise Interrupted("stopped before the trial could finish")
        trial.set_user_attr(TrialAttr.TRAIN_SECONDS, round(time.monotonic() - started, 3))
        return value

    def _command(self, trial: optuna.Trial, hp: dict[str, Any], started: float) -> float:
        spec, opts = self.spec, self.commands
        assert spec.objective is not None and spec.objective.command is not None
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
        trial.set_user_attr(TrialAttr.EPOCHS, result.steps)
        if result.state == "PRUNED":
            raise optuna.TrialPruned(f"pruned at step {result.steps}; the command was stopped")
        if result.value is None:  # command.run raises instead of finishing without a value
            raise command.CommandFailed("the command finished without a value")
        return result.value

    def _train(self, trial: optuna.Trial, hp: dict[str, Any]) -> float | tuple[float, ...]:
        spec = self.spec
        recipe = Recipe.build(spec, hp, self.data_cache, device=self.device)
        data = recipe.data
        if recipe.factory is not None:
            recipe.factory.check(recipe.model_config, data)
        self.model_config, self.train_config = recipe.model_config, recipe.train_config
        started = time.monotonic()
        report, should_prune = trial.report, trial.should_prune
        if spec.multi_objective:  # Optuna neither records nor prunes those per epoch: see service/trials/pareto.py
            report, should_prune = (
                functools.partial(pareto.report, trial),
                functools.partial(pareto.should_prune, trial),
            )

        def on_epoch_end(result: EpochResult) -> bool:
            value = metric_value(spec, result)
            if not math.isfinite(value):
                raise DivergedError(f"{spec.metric} is {value} at epoch {result.epoch}")
            retry_db(report, value, result.epoch)
            if self.stop.is_set():
                raise Interrupted(f"stopped at epoch {result.epoch}")
            try:
                prune = retry_db(should_prune)
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:  # the pruner, not the model
                raise SearchError("pruner", f"pruner: {type(exc).__name__}: {exc}") from exc
            if prune:
                trial.set_user_attr(TrialAttr.EPOCHS, result.epoch)
                trial.set_user_attr(TrialAttr.TRAIN_SECONDS, round(time.monotonic() - started, 3))
                raise optuna.TrialPruned(f"pruned at epoch {result.epoch} ({spec.metric}={value:.6g})")
            return False

        result: FitResult = recipe.fit(on_epoch_end, should_stop=self.stop.is_set)
        if self.stop.is_set() or (self.still_ours is not None and not self.still_ours()):
            # Our lease was lost (another worker has this ticket) or we must stop: finishing
            # now would run the budget over.
            raise Interrupted("stopped before the trial could finish")
        best = result.history[result.best_epoch - 1]
        trial.set_user_attr(TrialAttr.EPOCHS, len(result.history))
        trial.set_user_attr(TrialAttr.BEST_EPOCH, result.best_epoch)
        trial.set_user_attr(TrialAttr.STOPPED, result.stopped)
        trial.set_user_attr(TrialAttr.TRAIN_SECONDS, round(time.monotonic() - started, 3))
        trial.set_user_attr(TrialAttr.SAMPLES_PER_S, round(result.samples_per_s, 1))
        trial.set_user_attr(TrialAttr.DEVICE, result.device)
        trial.set_user_attr(TrialAttr.VAL_METRICS, {k: float(v) for k, v in best.val_metrics.items()})
        # what breaks a tie on the metric (service/reports/results.py's ``tie_key``): val loss, then size
        trial.set_user_attr(TrialAttr.VAL_LOSS, float(best.val_loss))
        trial.set_user_attr(TrialAttr.N_PARAMS, int(sum(t.numel() for t in result.state_dict.values())))
        if spec.metric == "val_loss":  # the bar to beat: a model that learned nothing
            trial.set_user_attr(TrialAttr.NAIVE_VAL_LOSS, round(data.naive_val_loss(), 6))
        if not spec.multi_objective:
            return metric_value(spec, best)
        values = objective_values(recipe, best, result)
        trial.set_user_attr(TrialAttr.OBJECTIVES, dict(zip(spec.objective_names(), values, strict=True)))
        return values


def objective_values(recipe: Recipe, best: EpochResult, result: FitResult) -> tuple[float, ...]:
    """A trial's value for each of ``spec.objectives``: the val metrics at its best epoch, the
    model's parameter count, and its batch-1 inference time on the device it trained on."""
    import torch

    from rnntune.models.train import inference_latency_ms

    spec, data = recipe.spec, recipe.data
    model = recipe.model(result)
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
