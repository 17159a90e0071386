"""The queue-depth SQL (KEDA's trigger query and the rnntune_queue_depth metric) counts exactly the
tickets that real ``queue.claim`` calls take, on PostgreSQL holding queued, leased, expired,
paused, capped, timed-out, labelled and re-evaluation tickets, and studies that need a plugin or
command trials. If claim's conditions change, this fails."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session

from rnntune.service import queue, routing
from rnntune.service.queue import depth as queue_depth
from rnntune.service.reports.metrics import registry_for
from rnntune.service.store.tables import StudyRow, TicketRow, utcnow
from rnntune.service.studies import registry
from tests.queue_helpers import Env, spec

LABEL_SETS = [(), ("gpu",), ("big", "gpu"), ("cpu",)]


@pytest.fixture(scope="module")
def env(pg_url):
    e = Env(pg_url)
    yield e
    e.close()


@pytest.fixture(scope="module")
def mixed(env):
    """Studies in every state a ticket can be claimable or not in; returns their names."""
    names = {
        "plain": spec("qd-plain", n_trials=3),
        "gpu": spec("qd-gpu", n_trials=2, labels=["gpu"]),
        "gpu-big": spec("qd-gpu-big", n_trials=2, labels=["gpu", "big"]),
        "capped": spec("qd-capped", n_trials=5, budget={"max_parallel": 2}),
        "paused": spec("qd-paused", n_trials=4),
        "leased": spec("qd-leased", n_trials=3),
        "expired": spec("qd-expired", n_trials=2),
        "timeout": spec("qd-timeout", n_trials=3, budget={"timeout_s": 60}),
        "finalize": spec("qd-finalize", n_trials=1, budget={"timeout_s": 60}),
        "reeval": spec("qd-reeval", n_trials=1, budget={"timeout_s": 60}, selection={"seeds": 3}),
        "cancelled": spec("qd-cancelled", n_trials=2),
    }
    for s in names.values():
        env.create(s)
    ids = {}
    with env.sessions() as s:
        for key, d in names.items():
            ids[key] = registry.get_study(s, d["name"]).id
        hour = timedelta(hours=1)
        # One lease held on the capped study: one more slot of its 2.
        _lease(s, ids["capped"], 1, expires=utcnow() + hour)
        # Two of three tickets leased and alive; one of two leased with its lease run out.
        _lease(s, ids["leased"], 2, expires=utcnow() + hour)
        _lease(s, ids["expired"], 1, expires=utcnow() - hour)
        queue.pause_study(s, ids["paused"])
        queue.cancel_study(s, ids["cancelled"])
        # Running for two hours against a 60 s timeout: no trial ticket is claimable ...
        for key in ("timeout", "finalize", "reeval"):
            s.execute(
                sa.update(StudyRow)
                .where(StudyRow.id == ids[key])
                .values(
                    state="running",
                    started_at=utcnow() - 2 * hour,
                    deadline_at=utcnow() - 2 * hour + timedelta(seconds=60),  # what the claim checks
                )
            )
        # ... but a finalize ticket is, and so are re-evaluation tickets: two queued, one expired
        s.execute(sa.update(TicketRow).where(TicketRow.study_id == ids["finalize"]).values(state="done"))
        s.add(TicketRow(study_id=ids["finalize"], seq=1, kind="finalize"))
        s.execute(sa.update(TicketRow).where(TicketRow.study_id == ids["reeval"]).values(state="done"))
        s.add_all(TicketRow(study_id=ids["reeval"], seq=seq, kind="reeval") for seq in (1, 2, 3))
        s.flush()
        _lease(s, ids["reeval"], 1, expires=utcnow() - hour, kind="reeval")
        s.commit()
    return ids


def _lease(session: Session, study_id: int, n: int, *, expires, kind: str = "trial") -> None:
    tickets = session.scalars(
        sa.select(TicketRow.id)
        .where(TicketRow.study_id == study_id, TicketRow.kind == kind)
        .order_by(TicketRow.seq)
        .limit(n)
    ).all()
    session.execute(
        sa.update(TicketRow)
        .where(TicketRow.id.in_(tickets))
        .values(state="leased", worker_id="someone", lease_expires_at=expires, attempts=1, started_at=utcnow())
    )
    session.execute(sa.update(StudyRow).where(StudyRow.id == study_id).values(state="running", started_at=utcnow()))


def _held(env: Env, labels: tuple[str, ...]) -> int:
    """Leases alive now on active studies a worker with ``labels`` may run, counted in Python."""
    with env.sessions() as s:
        rows = s.execute(
            sa.select(StudyRow.labels)
            .join(TicketRow, TicketRow.study_id == StudyRow.id)
            .where(
                StudyRow.state.in_(queue.ACTIVE),
                TicketRow.state == "leased",
                TicketRow.lease_expires_at >= utcnow(),
            )
        ).all()
    return sum(set(row.labels or ()) <= set(labels) for row in rows)


def _claims(env: Env, labels: tuple[str, ...], plugin_keys: tuple[str, ...] = (), commands: bool = False) -> int:
    """How many tickets real ``queue.claim`` calls by workers with ``labels`` (and these plugins
    installed, and command trials allowed or not) take, inside a transaction rolled back
    afterwards (claim's commits become savepoints). KEDA's number stays the same meanwhile: a
    claimed ticket moves from claimable to held."""
    caps = {
        "plugins": [dict(zip(("group", "name"), key.split(":"), strict=True)) for key in plugin_keys],
        "commands": commands,
    }

    def can_run(requires: dict) -> bool:
        return not routing.missing(requires, caps)

    have = {"plugins": plugin_keys, "commands": commands}
    with env.engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        demand = queue_depth.n_demand(session, labels, **have)
        n = 0
        while queue.claim(session, f"w-{n}", labels=set(labels), lease_s=600, can_run=can_run) is not None:
            n += 1
            assert queue_depth.n_demand(session, labels, **have) == demand, "a claim changed what KEDA sees"
        assert n < 100, "claim never ran dry"
        after = queue_depth.n_claimable(session, labels, **have)
        session.close()
        outer.rollback()
    assert after == 0, f"after {n} claims the queue depth is still {after}"
    return n


@pytest.mark.parametrize("labels", LABEL_SETS, ids=lambda ls: ",".join(ls) or "no-labels")
def test_queue_depth_counts_what_claim_takes(env, mixed, labels):
    with env.sessions() as s:
        depth = queue_depth.n_claimable(s, labels)
        demand = queue_depth.n_demand(s, labels)
    assert depth == _claims(env, labels)
    assert demand == depth + _held(env, labels)


def test_expected_counts(env, mixed):
    # plain 3 + capped 1 (2 - 1 held) + leased 1 + expired 2 (one requeued) + finalize 1 + reeval
    # 3 (past the timeout; one requeued); paused, cancelled and timed-out trial tickets never
    # count, labelled studies only for their workers.
    with env.sessions() as s:
        assert queue_depth.n_claimable(s, ()) == 3 + 1 + 1 + 2 + 1 + 3
        assert queue_depth.n_claimable(s, ("gpu",)) == 11 + 2
        assert queue_depth.n_claimable(s, ("gpu", "big")) == 11 + 2 + 2
        # KEDA adds the live leases: capped 1, leased 2 (the expired one is claimable instead).
        assert queue_depth.n_demand(s, ()) == 11 + 1 + 2


def test_metric_reports_the_same_per_study(env, mixed):
    text = generate_latest(registry_for(env.sessions)).decode()
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "rnntune_queue_depth"]
    # (the studies of the test below, if it ran first, are not this fixture's)
    per_study = {s.labels["study"]: s.value for s in family.samples if s.labels["study"].startswith("qd-")}
    assert per_study["qd-plain"] == 3 and per_study["qd-capped"] == 1 and per_study["qd-expired"] == 2
    assert per_study["qd-paused"] == per_study["qd-timeout"] == per_study["qd-cancelled"] == 0
    assert per_study["qd-gpu-big"] == 2 and per_study["qd-finalize"] == 1 and per_study["qd-reeval"] == 3
    # A worker with every label can take the metric's total.
    assert sum(per_study.values()) == _claims(env, ("big", "cpu", "gpu"))


def test_keda_query_refuses_labels_that_would_break_the_sql():
    with pytest.raises(ValueError, match="labels must match"):
        queue_depth.keda_query(["gpu'; DROP TABLE rnntune_tickets; --"])


PLUGIN = "rnntune.models:gru-attention"


@pytest.fixture(scope="module")
def needy(env, mixed):
    """Studies only some workers can run (their stored ``requires``, as routing.requirements
    writes it): a model plugin, a command objective, both. Labelled ``needs`` so that the label
    sets above never see them."""
    requires = {
        "qr-plugin": {"plugins": [PLUGIN]},
        "qr-command": {"command": "train.py"},
        "qr-both": {"plugins": [PLUGIN], "command": "train.py"},
    }
    for name in requires:
        env.create(spec(name, n_trials=2, labels=["needs"]))
    with env.sessions() as s:
        for name, req in requires.items():
            s.execute(sa.update(StudyRow).where(StudyRow.name == name).values(requires=req))
        s.commit()


@pytest.mark.parametrize(
    ("plugin_keys", "commands"),
    [((), False), ((PLUGIN,), False), ((), True), ((PLUGIN,), True), (("rnntune.models:other",), True)],
    ids=["built-ins", "plugin", "commands", "plugin+commands", "other-plugin+commands"],
)
def test_keda_leaves_out_studies_the_pods_cannot_run(env, needy, plugin_keys, commands):
    """KEDA scaling pods for a study they would never claim leaves them idle until cooldown:
    the query counts only what a worker with those plugins (and --allow-commands) claims."""
    labels = ("needs",)
    has_plugin = PLUGIN in plugin_keys
    with env.sessions() as s:
        depth = queue_depth.n_claimable(s, labels, plugins=plugin_keys, commands=commands)
        plain = queue_depth.n_claimable(s, ())
    # the unlabelled studies of the fixture above, plus 2 tickets for each study it can run
    assert depth == plain + 2 * (has_plugin + commands + (has_plugin and commands))
    assert depth == _claims(env, labels, plugin_keys, commands)


def test_keda_query_refuses_plugins_that_would_break_the_sql():
    with pytest.raises(ValueError, match="plugins must be 'group:name'"):
        queue_depth.keda_query(plugins=["rnntune.models:x'; DROP TABLE rnntune_tickets; --"])
