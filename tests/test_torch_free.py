"""A torch-free core: the API process and the client commands never import torch.

torch takes seconds and hundreds of MB to import; the API, ``rnntune submit`` and ``rnntune status``
need only the spec, the allowed values and the file checks, which ``rnntune.models`` keeps in
torch-free modules. Each check runs in a fresh interpreter, since pytest's own may hold torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from rnntune.service.api.app import create_app
from rnntune.service.config import Settings
from tests.api_server import serving

REPO = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((REPO / "studies" / "sine-lstm.yaml").read_text()) | {"name": "torch-free", "priority": 0}


def _python(code: str, *args: str, tmp_path: Path) -> dict:
    """Run code in a fresh interpreter from an empty folder; it prints one JSON line last."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_import_models_and_its_values_without_torch(tmp_path):
    """The allowed values, the configs and the numeric data sets need no torch."""
    out = _python(
        """
        import json, sys
        import rnntune.models
        from rnntune.models import CELLS, OPTIMIZERS, SCHEDULERS, TASKS, BUILTIN_DATASETS, ModelConfig, TrainConfig
        from rnntune.models.config import DATASETS, FILE_DATASETS
        from rnntune.models.data import load_dataset
        ModelConfig(input_size=1, output_size=1)
        TrainConfig(lr=0.01)
        load_dataset("sine", {"n_series": 5, "length": 10}, window=4)  # numpy only
        print(json.dumps({"torch": "torch" in sys.modules, "cells": list(CELLS), "datasets": list(DATASETS)}))
        """,
        tmp_path=tmp_path,
    )
    assert out["torch"] is False
    assert out["cells"] == ["rnn", "lstm", "gru"] and "sine" in out["datasets"]


def test_the_api_never_imports_torch(tmp_path, pg_url):
    """create_app, then the routes a client uses: health, a valid and a rejected spec, lists and
    a study, an upload (the file checks) and a bad one, the workers and the metrics."""
    out = _python(
        """
        import json, sys
        from fastapi.testclient import TestClient
        from rnntune.service.api.app import create_app
        from rnntune.service.config import Settings

        spec = json.loads(sys.argv[2])
        codes = {}
        with TestClient(create_app(Settings(database_url=sys.argv[1]))) as client:
            codes["healthz"] = client.get("/healthz").status_code
            codes["readyz"] = client.get("/readyz").status_code
            codes["create"] = client.post("/v1/studies", json=spec).status_code
            bad = spec | {"name": "torch-free-bad", "model": {"cell": "transformer"}}
            codes["bad_spec"] = client.post("/v1/studies", json=bad).status_code
            codes["list"] = client.get("/v1/studies").status_code
            codes["get"] = client.get(f"/v1/studies/{spec['name']}").status_code
            codes["trials"] = client.get(f"/v1/studies/{spec['name']}/trials").status_code
            csv = b"t,value\\n" + b"".join(f"{i},{i * 0.5}\\n".encode() for i in range(40))
            codes["upload"] = client.post("/v1/datasets", files={"file": ("series.csv", csv)}).status_code
            codes["bad_upload"] = client.post("/v1/datasets", files={"file": ("bad.csv", b"a,b\\n")}).status_code
            codes["datasets"] = client.get("/v1/datasets").status_code
            codes["workers"] = client.get("/v1/workers").status_code
            codes["metrics"] = client.get("/metrics").status_code
        print(json.dumps({"codes": codes, "torch": "torch" in sys.modules}))
        """,
        pg_url,
        json.dumps(SPEC),
        tmp_path=tmp_path,
    )
    assert out["codes"] == {
        "healthz": 200,
        "readyz": 200,
        "create": 201,
        "bad_spec": 422,
        "list": 200,
        "get": 200,
        "trials": 200,
        "upload": 201,
        "bad_upload": 422,
        "datasets": 200,
        "workers": 200,
        "metrics": 200,
    }, out
    assert out["torch"] is False, "the API process imported torch"


def test_submit_and_status_never_import_torch(tmp_path, pg_url):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC | {"name": "torch-free-cli"}))
    code = """
        import atexit, json, sys
        # the CLI exits through SystemExit; report what it loaded on the way out
        atexit.register(lambda: print(json.dumps({"torch": "torch" in sys.modules})))
        from rnntune.service.cli import main
        sys.argv = ["rnntune", *sys.argv[1:]]
        main()
        """
    with serving(create_app(Settings(database_url=pg_url), dashboard=False)) as url:
        for args in (["submit", str(spec_path)], ["status"], ["status", "torch-free-cli"]):
            out = _python(code, *args, "--api-url", url, tmp_path=tmp_path)
            assert out["torch"] is False, f"rnntune {' '.join(args)} imported torch"
