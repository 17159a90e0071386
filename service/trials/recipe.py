"""One recipe for a trial: its hyperparameters -> data -> configs -> model -> ``fit``.

The search's objective, a candidate's re-evaluation (``service/trials/selection.py``), the finalize
step and ``rnntune export --trial`` build and train a trial only through :class:`Recipe`, so a
re-created model is the tuned one: same data, configs, seed and model factory."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rnntune.models.config import ModelConfig, TrainConfig
from rnntune.service import plugins
from rnntune.service.plugins import PluginError
from rnntune.service.search import hyperparameters
from rnntune.service.spec import HYPERPARAMETERS, StudySpec

if TYPE_CHECKING:  # torch is imported where a model is trained: the API reads through here
    import optuna
    import torch

    from rnntune.models.data import SequenceData
    from rnntune.models.train import EpochResult, FitResult
    from rnntune.service.data.data_cache import DataCache


METRIC_KEYS = {"val_loss": "loss", "val_mae": "mae", "val_accuracy": "accuracy", "val_f1": "f1"}
DEFAULT_EMBED_DIM = 64  # text: when embed_dim is neither fixed, searched nor set by a matrix


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
        **_highway(hp, data),
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


def _highway(hp: dict[str, Any], data: SequenceData) -> dict[str, Any]:
    """The highway's ModelConfig fields, over at most the window: forecasting data only (the spec
    refuses ``highway`` on built-in data of another kind; a data plugin's other kinds go without)."""
    if not hp.get("highway") or data.meta.get("kind") != "forecasting":
        return {}
    window = min(int(hp["highway_window"]), data.window)
    return {"highway": True, "highway_window": window, "highway_target": int(data.meta["target_index"])}


def metric_value(spec: StudySpec, result: EpochResult) -> float:
    if spec.metric == "val_loss":
        return result.val_loss
    return float(result.val_metrics[METRIC_KEYS[spec.metric]])


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """What re-creating a trial needs of it: an Optuna trial, or one read back from the API."""

    number: int
    params: dict[str, Any]
    value: float | None  # the (first) objective's value
    user_attrs: dict[str, Any]

    @classmethod
    def of(cls, trial: optuna.trial.FrozenTrial) -> TrialRecord:
        return cls(trial.number, trial.params, trial.values[0] if trial.values else None, trial.user_attrs)


@dataclasses.dataclass
class Recipe:
    """How one trial trains: its hyperparameters, the data, the ``models`` configs and the model
    factory (a model plugin, or None for the built-in ``SequenceModel``)."""

    spec: StudySpec
    hp: dict[str, Any]
    data: SequenceData
    model_config: ModelConfig
    train_config: TrainConfig
    factory: PluginModel | None

    @classmethod
    def build(
        cls,
        spec: StudySpec,
        hp: dict[str, Any],
        data_cache: DataCache,
        *,
        device: str | None,
        fold: tuple[int, int] | None = None,
        seed: int | None = None,
    ) -> Recipe:
        """``hp``: every hyperparameter (``search.suggest``); ``fold`` (index, n_folds): a fold of
        the data instead of the search's split; ``seed``: a training seed other than the spec's."""
        data = data_cache.get(spec, hp["window"], hp.get("max_length"), fold=fold)
        model_config, train_config = build_configs(spec, hp, data, device=device)
        if seed is not None:
            train_config = dataclasses.replace(train_config, seed=seed)
        factory = PluginModel(spec.model["plugin"], spec, hp) if spec.model.get("plugin") else None
        return cls(spec, hp, data, model_config, train_config, factory)

    @classmethod
    def of_trial(cls, spec: StudySpec, trial: TrialRecord, data_cache: DataCache, **options: Any) -> Recipe:
        """A finished trial's recipe, from its suggested ``params`` (``search.hyperparameters``)."""
        return cls.build(spec, hyperparameters(spec, trial.params), data_cache, **options)

    def fit(self, on_epoch_end: Callable[[EpochResult], bool], should_stop: Callable[[], bool]) -> FitResult:
        from rnntune.models.train import fit

        return fit(
            self.model_config,
            self.train_config,
            self.data,
            on_epoch_end=on_epoch_end,
            should_stop=should_stop,
            model_factory=self.factory,
        )

    def model(self, result: FitResult) -> torch.nn.Module:
        """The model ``result`` trained, on its device, in eval mode."""
        from rnntune.models.recurrent import SequenceModel

        model = (self.factory or SequenceModel)(self.model_config).to(result.device)
        model.load_state_dict(result.state_dict)
        return model.eval()
