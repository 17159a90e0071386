"""GET /v1/workers and `rnntune workers`, on PostgreSQL and SQLite: what each worker runs, which
went silent (lost), which deregistered. tests/test_queue.py checks the same view of real worker
processes, killed and stopped."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
import sqlalchemy as sa

from rnntune.service import queue
from rnntune.service.store.tables import WorkerRow, utcnow
from tests.api_server import serving
from tests.conftest import REPO, make_settings

SPEC = {
    "name": "workers-view",
    "data": {"name": "sine", "params": {"n_series": 8, "length": 20, "seed": 0}, "window": 6},
    "search_space": {"hidden_size": {"type": "int", "low": 4, "high": 8}},
    "budget": {"n_trials": 2, "max_epochs": 1},
}


@pytest.fixture(scope="module")
def settings(db_url, tmp_path_factory):
    return make_settings(db_url, tmp_path_factory.mktemp("data"), lease_s=30)


def test_workers_listing(client):
    sessions = client.app.state.sessions
    assert client.post("/v1/studies", json=SPEC).status_code == 201
    with sessions() as s:
        queue.register_worker(s, "ancient-1", device="cpu", labels=set(), pid=100)
        s.execute(
            sa.update(WorkerRow).where(WorkerRow.id == "ancient-1").values(last_heartbeat=utcnow() - timedelta(days=8))
        )
        s.commit()
        # a starting worker drops the rows of workers silent for a week
        for wid, labels in (("busy-1", {"gpu-a100"}), ("idle-1", set()), ("gone-1", set()), ("dead-1", set())):
            queue.register_worker(s, wid, device="cpu", labels=labels, pid=100)
        claim = queue.claim(s, "busy-1", labels={"gpu-a100"}, lease_s=30)
        assert claim is not None and claim.study_name == SPEC["name"]
        queue.worker_heartbeat(s, "busy-1", claim.ticket_id, 0)
        queue.worker_heartbeat(s, "idle-1", None, 7)  # idle: a stale trial number is not kept
        queue.deregister_worker(s, "gone-1")
        # dead-1 stopped beating 40 s ago (lease 30 s) without deregistering: killed
        s.execute(
            sa.update(WorkerRow).where(WorkerRow.id == "dead-1").values(last_heartbeat=utcnow() - timedelta(seconds=40))
        )
        s.commit()

    r = client.get("/v1/workers")
    assert r.status_code == 200
    rows = {w["id"]: w for w in r.json()["items"]}
    assert set(rows) == {"busy-1", "idle-1", "dead-1"}  # stopped ones hidden, the week-old row gone
    busy = rows["busy-1"]
    assert busy["state"] == "busy" and busy["study"] == SPEC["name"]
    assert busy["ticket_id"] == claim.ticket_id and busy["trial_number"] == 0
    assert busy["labels"] == ["gpu-a100"] and busy["device"] == "cpu" and busy["heartbeat_age_s"] < 10
    assert (
        rows["idle-1"]["state"] == "idle" and rows["idle-1"]["study"] is None and rows["idle-1"]["trial_number"] is None
    )
    assert rows["dead-1"]["state"] == "lost" and rows["dead-1"]["heartbeat_age_s"] >= 40

    everyone = {w["id"]: w for w in client.get("/v1/workers", params={"include_stopped": True}).json()["items"]}
    assert set(everyone) == {"busy-1", "idle-1", "dead-1", "gone-1"}
    assert everyone["gone-1"]["state"] == "stopped"
    assert client.get("/v1/workers", params={"include_stopped": "maybe"}).status_code == 422

    # the CLI prints the same, one line a worker
    with serving(client.app) as url:
        cli = [sys.executable, "-m", "rnntune.service.cli", "workers", "--api-url", url]
        out = subprocess.run(cli, capture_output=True, text=True, cwd=REPO, timeout=60)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.strip().splitlines()
        assert len(lines) == 3
        assert f"busy-1: busy on {SPEC['name']} (ticket {claim.ticket_id}, trial 0); cpu labels gpu-a100" in out.stdout
        assert "dead-1: lost" in out.stdout
        out = subprocess.run([*cli, "--all"], capture_output=True, text=True, cwd=REPO, timeout=60)
        assert out.returncode == 0 and "gone-1: stopped" in out.stdout
