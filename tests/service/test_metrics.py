"""GET /metrics after a tiny real study (one trial complete, one pruned), on PostgreSQL and SQLite."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from rnntune.service import queue
from rnntune.service.worker import Worker

REPO = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((REPO / "studies" / "sine-lstm.yaml").read_text())
SPEC["name"] = "metrics-sine"
SPEC["data"]["params"] = {"n_series": 60, "length": 30, "noise": 0.05, "seed": 0}
SPEC["data"]["window"] = 16
GOOD = SPEC["initial_trials"][0]
# Plain SGD at lr 1e-4 barely moves in 3 epochs: the median pruner (one start-up trial, no
# warm-up) stops it at its first epoch, behind the good trial.
BAD = GOOD | {"hidden_size": 8, "lr": 1.0e-4, "optimizer": "sgd", "momentum": 0.0}
SPEC["initial_trials"] = [GOOD, BAD]
SPEC["pruner"] = {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0, "interval_steps": 1}
SPEC["budget"] = {"n_trials": 2, "max_epochs": 3}
SPEC["priority"] = 10


@pytest.fixture(scope="module")
def scraped(client, settings):
    assert client.post("/v1/studies", json=SPEC).status_code == 201
    Worker(settings, exit_when_idle=True, threads=1).run()  # 2 trials + finalize
    queued = copy.deepcopy(SPEC) | {"name": "metrics-queued", "priority": 0}
    assert client.post("/v1/studies", json=queued).status_code == 201  # after the worker: stays queued
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    return families, client.get(f"/v1/studies/{SPEC['name']}").json()


def samples(family, name: str | None = None, **labels) -> list:
    return [
        s
        for s in family.samples
        if (name is None or s.name == name) and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def one(family, name: str | None = None, **labels) -> float:
    found = samples(family, name, **labels)
    assert len(found) == 1, (family.name, name, labels, family.samples)
    return found[0].value


def test_trial_counts_match_the_api(scraped):
    families, study = scraped
    assert study["state"] == "done", study
    api = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
    for state, key in api.items():
        assert one(families["rnntune_trials"], study=SPEC["name"], state=state) == study["counts"][key]
    assert study["counts"]["pruned"] >= 1, "the BAD initial trial was expected to be pruned"
    assert one(families["rnntune_trials"], study="metrics-queued", state="COMPLETE") == 0
    assert one(families["rnntune_studies"], state="done") == 1 and one(families["rnntune_studies"], state="queued") == 1
    assert one(families["rnntune_database_up"]) == 1


def test_histograms_count_finished_trials_and_their_epochs(scraped, client):
    families, study = scraped
    trials = client.get(f"/v1/studies/{SPEC['name']}/trials").json()["items"]
    finished = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED")]
    assert len(finished) == study["finished"] == 2
    h = families["rnntune_trial_duration_seconds"]
    assert one(h, "rnntune_trial_duration_seconds_count", study=SPEC["name"]) == study["finished"]
    assert one(h, "rnntune_trial_duration_seconds_bucket", study=SPEC["name"], le="+Inf") == study["finished"]
    assert one(h, "rnntune_trial_duration_seconds_sum", study=SPEC["name"]) == pytest.approx(
        sum(t["duration_s"] for t in finished), abs=0.01
    )
    buckets = [s.value for s in samples(h, "rnntune_trial_duration_seconds_bucket", study=SPEC["name"])]
    assert buckets == sorted(buckets)  # cumulative
    e = families["rnntune_epoch_duration_seconds"]
    assert one(e, "rnntune_epoch_duration_seconds_count", study=SPEC["name"]) == sum(t["epochs"] for t in finished)
    assert (
        0 < one(e, "rnntune_epoch_duration_seconds_sum", study=SPEC["name"]) <= sum(t["duration_s"] for t in finished)
    )


def test_epochs_saved_by_pruning(scraped, client):
    families, _ = scraped
    trials = client.get(f"/v1/studies/{SPEC['name']}/trials").json()["items"]
    expected = sum(SPEC["budget"]["max_epochs"] - t["epochs"] for t in trials if t["state"] == "PRUNED")
    saved = one(
        families["rnntune_epochs_saved_by_pruning"], "rnntune_epochs_saved_by_pruning_total", study=SPEC["name"]
    )
    assert saved == expected > 0


def test_queue_depth_and_live_workers(scraped, client, settings):
    families, _ = scraped
    assert one(families["rnntune_queue_depth"], study=SPEC["name"]) == 0
    assert one(families["rnntune_queue_depth"], study="metrics-queued") == SPEC["budget"]["n_trials"]
    assert one(families["rnntune_workers_live"]) == 0  # the worker above has stopped
    with client.app.state.sessions() as s:
        queue.register_worker(s, "metrics-test-worker", device="cpu", labels=set(), pid=1)
    live = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}["rnntune_workers_live"]
    assert one(live) == 1
    with client.app.state.sessions() as s:
        queue.deregister_worker(s, "metrics-test-worker")
