"""Read-only SQL over Optuna's tables: counts, best trials, pages of trials.

Status endpoints must stay fast at 10,000 trials, so they never call ``study.trials`` (which
loads every trial with its params, values and attributes): they aggregate here instead. The table
objects are Optuna's own, from ``rnntune.service.store.optuna_compat`` (pinned by ``optuna>=5,<6``).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from optuna.distributions import json_to_distribution
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from rnntune.service.store.attrs import NOT_FAILED, TrialAttr, TrialSystemAttr
from rnntune.service.store.optuna_compat import FINITE, inter_t, params_t, sattrs_t, trials_t, uattrs_t, values_t

TRIAL_STATES = ("RUNNING", "WAITING", "COMPLETE", "PRUNED", "FAIL")


def _state(value: Any) -> str:
    return value.name if hasattr(value, "name") else str(value)


def _has_attr(keys: tuple[str, ...]):
    return (
        select(uattrs_t.c.trial_id).where(uattrs_t.c.trial_id == trials_t.c.trial_id, uattrs_t.c.key.in_(keys)).exists()
    )


# A trial given to a warm-started study's sampler from an earlier study (service/studies/warm_start.py):
# history, not one of this study's trials. Nothing rnntune counts or ranks includes it.
NOT_WARM = ~_has_attr((TrialAttr.WARM_START_FROM,))


def trial_counts(session: Session, study_ids: list[int]) -> dict[int, dict[str, int]]:
    """{optuna study id: {state: count}} for every Optuna state, zeros included, and
    ``INTERRUPTED``: the FAIL trials that were interrupted, not failed (counted in ``FAIL`` too).
    Two grouped queries."""
    counts: dict[int, dict[str, int]] = {sid: dict.fromkeys((*TRIAL_STATES, "INTERRUPTED"), 0) for sid in study_ids}
    if not study_ids:
        return counts
    rows = session.execute(
        select(trials_t.c.study_id, trials_t.c.state, func.count())
        .where(trials_t.c.study_id.in_(study_ids), NOT_WARM)
        .group_by(trials_t.c.study_id, trials_t.c.state)
    )
    for sid, state, n in rows:
        counts[sid][_state(state)] = n
    interrupted = session.execute(
        select(trials_t.c.study_id, func.count())
        .where(
            trials_t.c.study_id.in_(study_ids),
            trials_t.c.state == "FAIL",
            # stopped (a pause, a shutdown, a cancel, a lost worker) and run again, or never run:
            # Optuna stores it as FAIL; rnntune counts it as ``INTERRUPTED``
            _has_attr(NOT_FAILED),
            ~_has_attr((TrialAttr.FAIL_REASON,)),
        )
        .group_by(trials_t.c.study_id)
    )
    for sid, n in interrupted:
        counts[sid]["INTERRUPTED"] = n
    return counts


def n_complete(session: Session, study_id: int) -> int:
    return session.execute(
        select(func.count())
        .select_from(trials_t)
        .where(trials_t.c.study_id == study_id, trials_t.c.state == "COMPLETE", NOT_WARM)
    ).scalar_one()


def best_values(session: Session, directions: dict[int, str]) -> dict[int, float | None]:
    """{optuna study id: best objective value among COMPLETE trials}: one aggregate query."""
    if not directions:
        return {}
    rows = session.execute(
        select(trials_t.c.study_id, func.min(values_t.c.value), func.max(values_t.c.value))
        .join(values_t, values_t.c.trial_id == trials_t.c.trial_id)
        .where(
            trials_t.c.study_id.in_(list(directions)),
            trials_t.c.state == "COMPLETE",
            values_t.c.objective == 0,
            values_t.c.value_type == FINITE,
            NOT_WARM,
        )
        .group_by(trials_t.c.study_id)
    )
    best = dict.fromkeys(directions)
    for sid, lo, hi in rows:
        best[sid] = lo if directions[sid] == "minimize" else hi
    return best


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass(slots=True)
class StoredTrial:
    """A trial as the results read it from Optuna's tables: what ``GET …/trials`` lists (the
    fields of ``api.schemas.TrialPublic``), and its per-epoch ``curve`` where one was asked for."""

    trial_id: int
    number: int
    state: str
    params: dict[str, Any]
    value: float | None  # the first objective's, finite or None
    epochs: int
    duration_s: float | None
    datetime_start: datetime | None
    datetime_complete: datetime | None
    user_attrs: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)  # {"epoch", "value"}: best_trial's only


def _trials(session: Session, where, *, order, limit: int | None) -> list[StoredTrial]:
    q = (
        select(
            trials_t.c.trial_id,
            trials_t.c.number,
            trials_t.c.state,
            trials_t.c.datetime_start,
            trials_t.c.datetime_complete,
            values_t.c.value,
        )
        .outerjoin(values_t, and_(values_t.c.trial_id == trials_t.c.trial_id, values_t.c.objective == 0))
        .where(where)
        .order_by(*order)
    )
    if limit is not None:
        q = q.limit(limit)
    rows = session.execute(q).all()
    if not rows:
        return []
    ids = [r.trial_id for r in rows]
    params: dict[int, dict[str, Any]] = defaultdict(dict)
    for tid, name, value, dist in session.execute(
        select(params_t.c.trial_id, params_t.c.param_name, params_t.c.param_value, params_t.c.distribution_json)
        .where(params_t.c.trial_id.in_(ids))
        .order_by(params_t.c.param_id)
    ):
        params[tid][name] = json_to_distribution(dist).to_external_repr(value)
    epochs: dict[int, int] = dict(
        session.execute(
            select(inter_t.c.trial_id, func.count()).where(inter_t.c.trial_id.in_(ids)).group_by(inter_t.c.trial_id)
        ).all()
    )
    attrs: dict[int, dict[str, Any]] = defaultdict(dict)
    for tid, key, value_json in session.execute(
        select(uattrs_t.c.trial_id, uattrs_t.c.key, uattrs_t.c.value_json).where(uattrs_t.c.trial_id.in_(ids))
    ):
        attrs[tid][key] = json.loads(value_json)
    out = []
    for r in rows:
        start, end = r.datetime_start, r.datetime_complete
        out.append(
            StoredTrial(
                trial_id=r.trial_id,
                number=r.number,
                state=_state(r.state),
                params=params.get(r.trial_id, {}),
                value=_finite(r.value),
                # several objectives keep their per-epoch values elsewhere (service/trials/pareto.py)
                epochs=epochs.get(r.trial_id) or attrs.get(r.trial_id, {}).get(TrialAttr.EPOCHS, 0),
                duration_s=round((end - start).total_seconds(), 3) if start and end else None,
                datetime_start=start,
                datetime_complete=end,
                user_attrs=attrs.get(r.trial_id, {}),
            )
        )
    return out


def trials_page(
    session: Session, study_id: int, *, after: int | None, limit: int, state: str | None = None
) -> list[StoredTrial]:
    """Trials by number, ``limit`` of them after trial number ``after`` (a keyset cursor)."""
    where = trials_t.c.study_id == study_id
    if after is not None:
        where = and_(where, trials_t.c.number > after)
    if state is not None:
        where = and_(where, trials_t.c.state == state)
    return _trials(session, where, order=[trials_t.c.number], limit=limit)


def tie_key(trial: StoredTrial, direction: str) -> tuple[float, float, float, int]:
    """How complete trials rank: the value, then (ties on it: accuracy 1.0 on a small val split)
    the lower val loss at the best epoch, then fewer parameters, then the earlier trial. A
    trial with ``val_loss`` as its metric has that as its value; one without the attributes
    (an objective plugin's, a command's) ranks after the tied trials that have them."""
    value = trial.value
    assert value is not None  # ranked trials have a finite value
    attrs = trial.user_attrs
    val_loss = attrs.get(TrialAttr.VAL_LOSS)
    n_params = attrs.get(TrialAttr.N_PARAMS)
    return (
        value if direction == "minimize" else -value,
        float(val_loss) if val_loss is not None else math.inf,
        float(n_params) if n_params is not None else math.inf,
        trial.number,
    )


def top_trials(session: Session, study_id: int, direction: str, k: int) -> list[StoredTrial]:
    """The ``k`` best COMPLETE trials with a finite value, best first (ties on the value: the
    lower val loss, then fewer parameters, then the earlier: :func:`tie_key`); fewer when fewer
    completed."""
    order_value = values_t.c.value.asc() if direction == "minimize" else values_t.c.value.desc()
    where = and_(
        trials_t.c.study_id == study_id,
        trials_t.c.state == "COMPLETE",
        values_t.c.value_type == FINITE,
        NOT_WARM,
    )
    first = _trials(session, where, order=[order_value, trials_t.c.number], limit=k)
    if not first:
        return []
    # trials tied with the k-th may outrank some of the first k on the tie-breaks
    edge = first[-1].value
    tied = _trials(session, and_(where, values_t.c.value == edge), order=[trials_t.c.number], limit=None)
    pool = {t.trial_id: t for t in [*first, *tied]}
    return sorted(pool.values(), key=lambda t: tie_key(t, direction))[:k]


def best_trial(session: Session, study_id: int, direction: str) -> StoredTrial | None:
    """The best COMPLETE trial (ties: :func:`tie_key`), with its per-epoch curve."""
    found = top_trials(session, study_id, direction, 1)
    if not found:
        return None
    trial = found[0]
    trial.curve = [
        {"epoch": step, "value": _finite(value)}
        for step, value in session.execute(
            select(inter_t.c.step, inter_t.c.intermediate_value)
            .where(inter_t.c.trial_id == trial.trial_id)
            .order_by(inter_t.c.step)
        )
    ] or _first_objective_curve(session, trial.trial_id)
    return trial


def _first_objective_curve(session: Session, trial_id: int) -> list[dict[str, Any]]:
    """Several objectives: the first one's per-epoch values (written by service/trials/pareto.py)."""
    value_json = session.scalar(
        select(sattrs_t.c.value_json).where(
            sattrs_t.c.trial_id == trial_id, sattrs_t.c.key == TrialSystemAttr.FIRST_OBJECTIVE_CURVE
        )
    )
    if value_json is None:
        return []
    curve = json.loads(value_json)
    return [{"epoch": int(step), "value": _finite(curve[step])} for step in sorted(curve, key=int)]


def complete_values(session: Session, study_id: int) -> list[tuple[int, list[float | None]]]:
    """(trial number, [value of each objective]) of every COMPLETE trial, by number: one query."""
    rows = session.execute(
        select(trials_t.c.number, values_t.c.objective, values_t.c.value)
        .join(values_t, values_t.c.trial_id == trials_t.c.trial_id)
        .where(trials_t.c.study_id == study_id, trials_t.c.state == "COMPLETE", NOT_WARM)
        .order_by(trials_t.c.number, values_t.c.objective)
    )
    out: dict[int, list[float | None]] = {}
    for number, _objective, value in rows:
        out.setdefault(number, []).append(_finite(value))
    return list(out.items())


def trials_by_number(session: Session, study_id: int, numbers: list[int]) -> list[StoredTrial]:
    """The trials with these numbers (params, first value, epochs, attributes), by number."""
    if not numbers:
        return []
    where = and_(trials_t.c.study_id == study_id, trials_t.c.number.in_(numbers))
    return _trials(session, where, order=[trials_t.c.number], limit=None)
