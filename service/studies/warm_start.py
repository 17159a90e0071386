"""Warm start: a spec's ``warm_start: {from: [STUDY, ...], top_k: N}``.

At submission (:func:`plan`, called by the API before the study is created) each named study's
``top_k`` best COMPLETE trials whose parameters fit this study's search space become this
study's first tickets' parameters, right after ``initial_trials`` and exactly like them (a ticket
that carries params runs them through the pinned sampler; counted in ``n_trials``). A trial fits
when every parameter this space searches (and whose ``when`` holds) has a value inside its
range or choices here: the value the earlier trial searched, or, for a parameter it did not
search, the value it trained with (its spec's fixed value or the default). What it searched and
this space does not is left out: this study's own fixed values apply.

Where a source study's space and objective are the same as this one's, its complete trials
(best first, at most ``RNNTUNE_MAX_WARM_START_HISTORY``) are also given to the sampler as
completed trials (Optuna's ``study.add_trials``), without per-epoch values (so the pruner
compares only this study's own curves), marked with the user attribute ``warm_start_from``
(``"STUDY#NUMBER"``) that the dashboard shows. rnntune leaves them out of everything it counts:
trial counts, ``finished``, the best trial, the top trials of a selection, the finalize step, the
Pareto front and importances (``results.NOT_WARM``).

Who may warm-start from whom: any token may read any study (``GET`` routes check no owner), so
a study may start from any other; what it takes (parameters and values) is what ``GET
…/trials`` already shows that token.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from sqlalchemy import select
from sqlalchemy.orm import Session

from rnntune.service.reports import results
from rnntune.service.search import hyperparameters
from rnntune.service.space import CategoricalParam, FloatParam, IntParam, Param
from rnntune.service.spec import StudySpec, try_stored_spec
from rnntune.service.store.attrs import TrialAttr
from rnntune.service.store.tables import StudyRow

FETCH_FACTOR = 4  # best trials read per source, per one kept: some of the best may not fit


@dataclass
class Plan:
    """What a warm start adds to a new study: the tickets' parameters (best first, per source
    in ``from`` order) and the trials for the sampler's history."""

    params: list[dict[str, Any]] = field(default_factory=list)
    history: list[optuna.trial.FrozenTrial] = field(default_factory=list)


def plan(session: Session, spec: StudySpec, *, max_history: int) -> tuple[Plan, list[tuple[str, str]]]:
    """The warm start of ``spec`` and the errors (field, reason) that make it a 422: a study
    that does not exist or whose spec no longer parses, an incompatible space (which parameter
    and why), more tickets' parameters than ``budget.n_trials`` has room for."""
    warm = spec.warm_start
    out = Plan()
    if warm is None:
        return out, []
    errors: list[tuple[str, str]] = []
    seen = {_key(p) for p in spec.initial_trials}
    for i, name in enumerate(warm.from_):
        where = f"warm_start.from[{i}]"
        row = session.scalar(select(StudyRow).where(StudyRow.name == name))
        source = None if row is None else try_stored_spec(row)
        if row is None or source is None:
            errors.append((where, f"no study named {name!r}" if row is None else f"study {name!r} cannot be read"))
            continue
        problems = space_errors(spec, source)
        if problems:
            errors.extend((where, f"study {name!r}: {p}") for p in problems)
            continue
        assert source.direction is not None  # validation sets it
        fetched = results.top_trials(session, row.optuna_study_id, source.direction, warm.top_k * FETCH_FACTOR)
        fitted = [p for p in (fit(spec, source, t.params) for t in fetched) if p is not None][: warm.top_k]
        for params in fitted:
            if _key(params) not in seen:
                seen.add(_key(params))
                out.params.append(params)
        if same_search(spec, source) and max_history:
            out.history += _history(session, spec, source, row, max_history)
    n_initial, n_trials = len({_key(p) for p in spec.initial_trials}), spec.budget.n_trials
    assert n_trials is not None  # validation sets it
    if not errors and n_initial + len(out.params) > n_trials:
        errors.append(
            (
                "warm_start.top_k",
                f"{len(out.params)} trials to start from, with initial_trials more than budget.n_trials="
                f"{n_trials}; lower top_k or raise n_trials",
            )
        )
    return out, errors


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def space_errors(spec: StudySpec, source: StudySpec) -> list[str]:
    """Why no trial of ``source`` can fit this space, parameter by parameter: a parameter of
    another kind there, ranges or choices that do not meet, one that ``source`` neither searched
    nor trained with a value for, or trained every trial with a value outside this range."""
    if source.direction != spec.direction:
        return [f"its direction is {source.direction}, this study's {spec.direction}"]
    base = _source_base(source)
    errors = []
    for name, param in spec.search_space.items():
        theirs = source.search_space.get(name)
        if theirs is not None:
            problem = _meets(param, theirs)
        elif name not in base:
            problem = "searched here; that study neither searched it nor has a value for it"
        elif not param.when and not fits(param, base[name]):
            problem = f"that study trained every trial with {base[name]!r}, outside this study's {_shown(param)}"
        else:
            problem = None
        if problem is not None:
            errors.append(f"parameter {name!r}: {problem}")
    return errors


def _source_base(source: StudySpec) -> dict[str, Any]:
    return hyperparameters(source, {})


def _meets(ours: Param, theirs: Param) -> str | None:
    """Why a parameter searched by both cannot take a value of the other's domain (None: it can)."""
    if isinstance(ours, CategoricalParam) and isinstance(theirs, CategoricalParam):
        if not any(fits(ours, c) for c in theirs.choices):
            return f"none of its choices {theirs.choices} is one of this study's {ours.choices}"
        return None
    if isinstance(ours, CategoricalParam) or isinstance(theirs, CategoricalParam):
        return f"{_kind(theirs)} there, {_kind(ours)} here"
    if isinstance(ours, IntParam) and isinstance(theirs, FloatParam):
        return "float there, int here"
    if theirs.high < ours.low or theirs.low > ours.high:
        return f"its range [{theirs.low}, {theirs.high}] does not meet this study's [{ours.low}, {ours.high}]"
    return None


def _kind(param: Param) -> str:
    return param.type


def _shown(param: Param) -> str:
    if isinstance(param, CategoricalParam):
        return f"choices {param.choices}"
    return f"range [{param.low}, {param.high}]"


def fits(param: Param, value: Any) -> bool:
    """Whether ``value`` is one this parameter can take (its step and log scale included)."""
    if isinstance(param, CategoricalParam):
        return any(type(value) is type(c) and value == c for c in param.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if not param.low <= value <= param.high:
        return False
    if isinstance(param, IntParam):
        return value == int(value) and (int(value) - param.low) % param.step == 0
    if param.step is not None:
        steps = (value - param.low) / param.step
        return abs(steps - round(steps)) < 1e-9
    return True


def fit(spec: StudySpec, source: StudySpec, params: dict[str, Any]) -> dict[str, Any] | None:
    """An earlier trial's parameters in this space (None: it does not fit): for each parameter
    searched here whose ``when`` holds, the trial's searched value, else the value it trained
    with; each must fit. What only ``source`` searched is left out."""
    trained = {**_source_base(source), **params}
    values = spec.fixed_params()
    out: dict[str, Any] = {}
    for name, param in spec.search_space.items():
        if any(values.get(k) not in allowed for k, allowed in param.when_values().items()):
            continue  # as search.suggest: not suggested, the fixed value or default stands
        value = trained.get(name)
        if value is None or not fits(param, value):
            return None
        if isinstance(param, FloatParam):
            value = float(value)
        out[name] = values[name] = value
    return out


def same_search(spec: StudySpec, source: StudySpec) -> bool:
    """Whether ``source``'s trials can be this study's sampler history: the same search space,
    the same single objective and direction."""
    if spec.multi_objective or source.objective_names() != spec.objective_names():
        return False
    if source.direction != spec.direction:
        return False
    ours = {k: v.model_dump(mode="json") for k, v in spec.search_space.items()}
    return ours == {k: v.model_dump(mode="json") for k, v in source.search_space.items()}


def distribution(param: Param) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution ``search.suggest`` asks for this parameter."""
    if isinstance(param, FloatParam):
        return optuna.distributions.FloatDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, IntParam):
        return optuna.distributions.IntDistribution(param.low, param.high, log=param.log, step=param.step)
    return optuna.distributions.CategoricalDistribution(param.choices)


def _history(
    session: Session, spec: StudySpec, source: StudySpec, row: StudyRow, limit: int
) -> list[optuna.trial.FrozenTrial]:
    """The source's complete trials (best first, at most ``limit``) as completed trials of this
    study: its parameters, value and a ``warm_start_from`` mark; no per-epoch values."""
    assert source.direction is not None  # validation sets it
    out = []
    for trial in results.top_trials(session, row.optuna_study_id, source.direction, limit):
        params = fit(spec, source, trial.params)
        if params is None or trial.value is None:
            continue
        out.append(
            optuna.trial.create_trial(
                params=params,
                distributions={name: distribution(spec.search_space[name]) for name in params},
                value=trial.value,
                user_attrs={TrialAttr.WARM_START_FROM: f"{row.name}#{trial.number}"},
            )
        )
    return out


def add_history(study: optuna.Study, history: list[optuna.trial.FrozenTrial]) -> None:
    """Give the new study's sampler its warm-start history, once (an adopted study that has it
    already gets no second copy)."""
    if not history:
        return
    if any(TrialAttr.WARM_START_FROM in t.user_attrs for t in study.get_trials(deepcopy=False)):
        return
    study.add_trials(history)
