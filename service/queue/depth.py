"""Queue depth: how many tickets workers could claim right now.

One per-study statement, :data:`queue.claimable.BY_STUDY` (built from the claim's own
conditions), feeds the ``rnntune_queue_depth{study}`` metric (service/reports/metrics.py) and, compiled
to SQL text for PostgreSQL, the query of KEDA's trigger that scales the Kubernetes workers
(deploy/kubernetes; :func:`keda_query`, which adds the leases held now so that busy workers are
not scaled away). tests/deploy/test_queue_depth.py checks that it counts exactly the tickets
that real ``claim`` calls take.

KEDA's query keeps the studies that its worker pods would claim: those whose labels are all
among the worker Deployment's, and leaves out those whose stored ``requires`` names a plugin the
image lacks, or a command objective when the pods don't run ``--allow-commands`` (a worker never
claims such a study; scaling pods up for it would only leave them idle until their cooldown).
These filters are PostgreSQL jsonb, the claim's are Python (``routing``).

``python -m rnntune.service.queue.depth [--label L ...] [--plugin GROUP:NAME ...] [--commands]``
prints KEDA's query (deploy/kubernetes embeds it).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from rnntune.service.queue.claimable import BY_STUDY

_DIALECTS: dict[str, Dialect] = {"postgresql": postgresql.dialect(), "sqlite": sqlite.dialect()}

LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
# "entry-point group:name", as service.routing.requirements stores them.
PLUGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}:[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def claimable_by_study_sql(dialect: str = "postgresql") -> str:
    """:data:`BY_STUDY` as SQL text for ``dialect`` ("postgresql" or "sqlite"), its values
    inline (KEDA runs a plain string), no trailing spaces (deploy/kubernetes embeds it)."""
    if dialect not in _DIALECTS:
        raise ValueError(f"queue depth is defined for {sorted(_DIALECTS)}, but got {dialect=}")
    sql = str(BY_STUDY.compile(dialect=_DIALECTS[dialect], compile_kwargs={"literal_binds": True}))
    return "\n".join(line.rstrip() for line in sql.splitlines())


def _label_filter(labels: Iterable[str]) -> str:
    labels = sorted(set(labels))
    bad = [label for label in labels if not LABEL.fullmatch(label)]
    if bad:
        raise ValueError(f"labels must match {LABEL.pattern}, but got {bad}")
    return (
        "CASE WHEN json_typeof(q.labels) = 'array' THEN q.labels::jsonb ELSE '[]'::jsonb END "
        f"<@ '{json.dumps(labels)}'::jsonb"
    )


def _requires_filter(plugins: Iterable[str], commands: bool) -> str:
    """The studies a worker with these plugins (and command trials or not) can run: no
    ``requires`` (stored as SQL NULL or JSON null), or its plugins among ``plugins`` and no
    command unless ``commands`` (service.routing.missing, in SQL)."""
    plugins = sorted(set(plugins))
    bad = [p for p in plugins if not PLUGIN.fullmatch(p)]
    if bad:
        raise ValueError(f"plugins must be 'group:name' matching {PLUGIN.pattern}, but got {bad}")
    req = "q.requires::jsonb"
    return (
        f"(q.requires IS NULL OR json_typeof(q.requires) <> 'object' OR ("
        f"COALESCE({req} -> 'plugins', '[]'::jsonb) <@ '{json.dumps(plugins)}'::jsonb"
        + ("" if commands else f" AND ({req} ->> 'command') IS NULL")
        + "))"
    )


def claimable_sql(labels: Iterable[str] = (), *, plugins: Iterable[str] = (), commands: bool = False) -> str:
    """PostgreSQL: the tickets a worker started with these ``--label`` options could claim now
    (studies whose labels are all among them and whose plugins / command trials it has)."""
    return (
        f"SELECT COALESCE(SUM(q.n_claimable), 0) FROM ({claimable_by_study_sql()}) AS q\n"
        f"WHERE {_label_filter(labels)}\n  AND {_requires_filter(plugins, commands)}"
    )


def keda_query(labels: Iterable[str] = (), *, plugins: Iterable[str] = (), commands: bool = False) -> str:
    """KEDA's PostgreSQL trigger: the claimable tickets plus those leased right now, for workers
    with ``labels``, the ``plugins`` their image has installed ("group:name") and, with
    ``commands``, ``--allow-commands``. The leased ones are in the sum so that workers busy with
    a trial are not scaled away: on the claimable count alone, every claim would lower the
    replica count the HPA wants while the claiming pod is still training. All done: 0, and KEDA
    scales to zero."""
    return (
        f"SELECT COALESCE(SUM(q.n_claimable + q.n_held), 0) FROM ({claimable_by_study_sql()}) AS q\n"
        f"WHERE {_label_filter(labels)}\n  AND {_requires_filter(plugins, commands)}"
    )


def claimable_by_study(session: Session) -> dict[int, int]:
    """study id -> tickets claimable now (studies with none are left out)."""
    return {row.study_id: int(row.n_claimable) for row in session.execute(BY_STUDY) if row.n_claimable}


def n_claimable(
    session: Session, labels: Iterable[str] = (), *, plugins: Iterable[str] = (), commands: bool = False
) -> int:
    """PostgreSQL: tickets a worker with ``labels`` (and ``plugins``, ``commands``) could claim now."""
    return int(session.execute(text(claimable_sql(labels, plugins=plugins, commands=commands))).scalar_one())


def n_demand(
    session: Session, labels: Iterable[str] = (), *, plugins: Iterable[str] = (), commands: bool = False
) -> int:
    """PostgreSQL: what KEDA reads (:func:`keda_query`)."""
    return int(session.execute(text(keda_query(labels, plugins=plugins, commands=commands))).scalar_one())


def main() -> None:
    ap = argparse.ArgumentParser(description="Print the KEDA PostgreSQL trigger's query for workers with these labels.")
    ap.add_argument("--label", action="append", default=[], help="a worker label (repeat for several)")
    ap.add_argument(
        "--plugin",
        action="append",
        default=[],
        help="a plugin the worker image has installed, as 'entry-point group:name' (repeat for several)",
    )
    ap.add_argument("--commands", action="store_true", help="the workers run with --allow-commands")
    args = ap.parse_args()
    try:
        print(keda_query(args.label, plugins=args.plugin, commands=args.commands))
    except ValueError as exc:
        ap.error(str(exc))


if __name__ == "__main__":
    main()
