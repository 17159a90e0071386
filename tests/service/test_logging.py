"""``--log-json``: every line a worker writes to stderr is one JSON object with its ids."""

from __future__ import annotations

import json
import logging
import sys

from rnntune.service import logs
from rnntune.service.config import Settings
from rnntune.service.spec import parse_spec
from rnntune.service.store.db import init_db, make_engine, make_storage, session_factory
from tests.conftest import rnntune

SPEC = {
    "name": "log-sine",
    "data": {"name": "sine", "params": {"n_series": 40, "length": 24, "seed": 0}, "window": 8},
    "search_space": {"hidden_size": {"type": "int", "low": 4, "high": 8}},
    "pruner": {"name": "none"},
    "budget": {"n_trials": 1, "max_epochs": 2},
}


def test_formatter_writes_ids_and_traceback():
    logger = logging.getLogger("rnntune.test")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(
            "rnntune.test",
            logging.ERROR,
            __file__,
            1,
            "trial %d broke",
            (3,),
            sys.exc_info(),
            extra={"trial": 3, "study": "s"},
        )
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert out["msg"] == "trial 3 broke" and out["level"] == "ERROR" and out["logger"] == "rnntune.test"
    assert out["trial"] == 3 and out["study"] == "s" and "ValueError: boom" in out["exc"] and out["ts"].endswith("Z")


def test_worker_subprocess_logs_json_lines_with_its_ids(tmp_path):
    url = f"sqlite:///{tmp_path / 'rnntune.db'}"
    settings = Settings(database_url=url)
    engine = make_engine(settings)
    init_db(engine)
    from rnntune.service.studies import registry

    with session_factory(engine)() as s:
        registry.create_study(s, make_storage(settings), parse_spec(SPEC))
    engine.dispose()
    proc = rnntune(
        "--log-json",
        "worker",
        "--exit-when-idle",
        "--device",
        "cpu",
        "--threads",
        "1",
        env={"RNNTUNE_DATABASE_URL": url, "RNNTUNE_DATA_DIR": str(tmp_path)},
        stdout=-1,
        stderr=-1,
        text=True,
    )
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines()]  # every line parses
    assert len(lines) >= 3
    workers = {line.get("worker") for line in lines}
    assert len(workers) == 1 and None not in workers, lines  # every line names the one worker
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    assert any(line.get("study") == "log-sine" and line.get("trial") == 0 for line in lines), lines
    assert any(line["logger"].startswith("optuna") for line in lines), lines  # Optuna's own lines too
