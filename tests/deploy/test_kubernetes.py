"""deploy/kubernetes renders, validates, and agrees with the code it deploys.

Every overlay is rendered by ``kubectl kustomize`` (scripts/test.sh installs Debian's
kubernetes-client where no kubectl is on PATH) and each rendered object is validated, strictly,
against the Kubernetes JSON schemas that the kubernetes-validate package bundles (offline).
KEDA's ScaledObject and TriggerAuthentication are custom resources that those schemas do not
cover: they are checked here field by field against what KEDA's PostgreSQL scaler reads.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from configparser import ConfigParser
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient

from rnntune.service.api.app import create_app
from rnntune.service.api.security import OPEN_PATHS
from rnntune.service.config import Settings
from rnntune.service.queue import depth as queue_depth

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE = REPO / "deploy" / "kubernetes"
OVERLAYS = ["cpu", "gpu", "cpu-with-postgres"]
DOCKERFILE = (REPO / "Dockerfile").read_text()
# Kubernetes versions whose schemas the package bundles: the oldest and the newest.
K8S_VERSIONS = sorted({kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()})
K8S_VERSIONS = [K8S_VERSIONS[0], K8S_VERSIONS[-1]]
# The fields KEDA's PostgreSQL scaler reads (pkg/scalers/postgresql_scaler.go, postgreSQLMetadata:
# trigger metadata, or auth params from a TriggerAuthentication; *FromEnv: from the target's env).
KEDA_PG_METADATA = {"targetQueryValue", "activationTargetQueryValue", "query", "host", "port", "userName", "dbName"}
KEDA_PG_METADATA |= {"sslmode", "connectionFromEnv", "passwordFromEnv"}
KEDA_PG_AUTH = {"connection", "password", "host", "port", "userName", "dbName", "sslmode"}
# Worker stop on SIGTERM mid-trial, measured (docs/deploy.md "Running on Kubernetes"): under 5 s here,
# asserted by tests/test_queue.py's SIGTERM test; a GPU batch or a slow database adds seconds.
WORKER_STOP_BOUND_S = 5


def render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render deploy/kubernetes: scripts/test.sh installs kubernetes-client"
    r = subprocess.run([kubectl, "kustomize", str(KUSTOMIZE / "overlays" / overlay)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [doc for doc in yaml.safe_load_all(r.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict], kind: str, name: str) -> dict:
    (obj,) = find(objects, kind, name)
    return obj


def containers(deployment: dict) -> list[dict]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_every_object_validates_against_the_kubernetes_schemas(rendered):
    _, objects = rendered
    native = [o for o in objects if not o["apiVersion"].startswith("keda.sh/")]
    assert len(native) >= 10
    for version in K8S_VERSIONS:
        for obj in native:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} on Kubernetes {version}: {exc.message}")


def test_a_broken_object_fails_validation():
    (deployment,) = find(render("cpu"), "Deployment", "rnntune-worker")
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "sixty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def _worker_args(objects: list[dict]) -> list[str]:
    (worker,) = [c for c in containers(one(objects, "Deployment", "rnntune-worker")) if c["name"] == "worker"]
    return worker["command"] + worker.get("args", [])


def _worker_labels(objects: list[dict]) -> list[str]:
    args = _worker_args(objects)
    return [args[i + 1] for i, a in enumerate(args) if a == "--label"]


def test_keda_scaled_object_matches_keda_and_the_queue(rendered):
    """Structural checks of the custom resources, and the query is queue_depth's for the
    worker's own labels."""
    _, objects = rendered
    (scaled,) = find(objects, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval"} | {
        "cooldownPeriod",
        "advanced",
        "triggers",
    }
    assert spec["scaleTargetRef"]["name"] == "rnntune-worker" and find(objects, "Deployment", "rnntune-worker")
    assert spec["minReplicaCount"] == 0 < spec["maxReplicaCount"], "workers scale from and back to zero"
    assert all(isinstance(spec[k], int) and spec[k] > 0 for k in ("pollingInterval", "cooldownPeriod"))
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "postgresql"
    meta = trigger["metadata"]
    assert set(meta) <= KEDA_PG_METADATA and all(isinstance(v, str) for v in meta.values())
    assert float(meta["targetQueryValue"]) > 0 and float(meta["activationTargetQueryValue"]) == 0
    # The image installs no plugins; pods run command trials only with --allow-commands.
    commands = "--allow-commands" in _worker_args(objects)
    assert meta["query"] == queue_depth.keda_query(_worker_labels(objects), commands=commands)
    # The connection comes from a TriggerAuthentication that reads an existing Secret key.
    auth = one(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] in KEDA_PG_AUTH
    secret = one(objects, "Secret", ref["name"])
    assert ref["key"] in secret["stringData"]
    # pgx through PgBouncer in transaction mode: no prepared statements.
    assert "default_query_exec_mode=simple_protocol" in secret["stringData"][ref["key"]]
    if "gpu" in _worker_labels(objects):
        assert "'[\"gpu\"]'::jsonb" in meta["query"]


def test_worker_pods_get_the_database_url_and_nothing_else_secret(rendered):
    _, objects = rendered
    worker = one(objects, "Deployment", "rnntune-worker")
    pod = worker["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False, "no Kubernetes API token either"
    assert not any(v.get("secret") or v.get("projected") for v in pod.get("volumes", []))
    refs = []
    for c in containers(worker):
        assert "envFrom" not in c
        refs += [
            (e["name"], e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        ]
        assert not [e for e in c.get("env", []) if "TOKEN" in e["name"]]
    assert refs == [("RNNTUNE_DATABASE_URL", "rnntune-database", "url")]
    assert set(one(objects, "Secret", "rnntune-database")["stringData"]) == {"url"}
    # The API gets the tokens; the token Secret is its own.
    api_env = {e["name"] for c in containers(one(objects, "Deployment", "rnntune-api")) for e in c.get("env", [])}
    assert "RNNTUNE_API_TOKENS" in api_env


def test_probes_point_at_real_open_routes(rendered, tmp_path):
    _, objects = rendered
    (api,) = one(objects, "Deployment", "rnntune-api")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    probes = {kind: api[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz" and probes["livenessProbe"]["path"] == "/healthz"
    port = api["command"][api["command"].index("--port") + 1]
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", api_tokens="t" * 32)
    with TestClient(create_app(settings, dashboard=False)) as client:
        for probe in probes.values():
            assert ports[probe["port"]] == int(port), "the probe's port is the one the API listens on"
            assert probe["path"] in OPEN_PATHS, "probes carry no token"
            assert client.get(probe["path"]).status_code == 200, probe["path"]


def test_images_and_commands_match_the_dockerfile_and_the_cli(rendered):
    overlay, objects = rendered
    uid = int(re.search(r"useradd .*--uid (\d+) rnntune", DOCKERFILE).group(1))
    exposed = int(re.search(r"^EXPOSE (\d+)", DOCKERFILE, re.M).group(1))
    data_dir = re.search(r"RNNTUNE_DATA_DIR=(\S+)", DOCKERFILE).group(1)
    tags = {"cpu": "cpu", "cpu-with-postgres": "cpu", "gpu": "cuda"}
    commands = []
    for deployment in find(objects, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for c in containers(deployment):
            if not c["image"].startswith("rnntune"):
                continue
            # the image the Dockerfile builds (docker build -t rnntune:cpu / rnntune:cuda)
            assert c["image"] == f"rnntune:{tags[overlay]}" and f"-t rnntune:{tags[overlay]}" in DOCKERFILE
            assert pod["securityContext"]["runAsUser"] == uid
            assert c["name"] == "migrate" or [m["mountPath"] for m in c["volumeMounts"]] == [data_dir]
            if "ports" in c:
                assert [p["containerPort"] for p in c["ports"]] == [exposed]
            assert c["command"][0] == "rnntune"  # the console script on the image's PATH
            commands.append(c["command"])
    assert {tuple(c[:2]) for c in commands} == {("rnntune", "migrate"), ("rnntune", "api"), ("rnntune", "worker")}
    for command in commands:
        r = subprocess.run(
            [sys.executable, "-m", "rnntune.service.cli", *command[1:], "--help"], capture_output=True, text=True
        )
        assert r.returncode == 0, f"{shlex.join(command)}: {r.stderr}"


def test_gpu_overlay_requests_one_gpu_per_worker_pod():
    objects = render("gpu")
    (worker,) = one(objects, "Deployment", "rnntune-worker")["spec"]["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["command"][worker["command"].index("--device") + 1] == "cuda"
    # The several-workers-per-GPU variant its comment offers parses too.
    comment = (KUSTOMIZE / "overlays" / "gpu" / "worker-gpu.yaml").read_text()
    variant = yaml.safe_load(re.search(r"#\s+(\[\"rnntune\", \"worker\", \"--per-gpu\".*\])", comment).group(1))
    r = subprocess.run([sys.executable, "-m", "rnntune.service.cli", *variant[1:], "--help"], capture_output=True)
    assert r.returncode == 0
    for overlay in ("cpu", "cpu-with-postgres"):
        cpu = one(render(overlay), "Deployment", "rnntune-worker")["spec"]["template"]["spec"]["containers"][0]
        assert "nvidia.com/gpu" not in str(cpu["resources"])


def test_workers_stop_cleanly_within_their_grace_period_and_disruptions_are_bounded(rendered):
    _, objects = rendered
    worker = one(objects, "Deployment", "rnntune-worker")
    assert "replicas" not in worker["spec"], "KEDA owns the worker count; a fixed one would fight it"
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 10 * WORKER_STOP_BOUND_S
    for name in ("rnntune-api", "rnntune-worker"):
        pdb = one(objects, "PodDisruptionBudget", name)
        assert pdb["spec"]["maxUnavailable"] == 1
        assert (
            pdb["spec"]["selector"]["matchLabels"]
            == one(objects, "Deployment", name)["spec"]["selector"]["matchLabels"]
        )


def test_everything_reaches_the_database_through_pgbouncer_in_transaction_mode(rendered):
    overlay, objects = rendered
    (config,) = find(objects, "ConfigMap")
    ini = ConfigParser()
    ini.read_string(config["data"]["pgbouncer.ini"])
    assert ini["pgbouncer"]["pool_mode"] == "transaction"
    port = ini["pgbouncer"]["listen_port"]
    service = one(objects, "Service", "rnntune-pgbouncer")
    assert str(service["spec"]["ports"][0]["port"]) == port
    url = one(objects, "Secret", "rnntune-database")["stringData"]["url"]
    assert url.startswith("postgresql+psycopg2://") and f"@rnntune-pgbouncer:{port}/" in url
    # The users PgBouncer accepts include the one in the URL.
    user = url.split("://", 1)[1].split(":", 1)[0]
    assert f'"{user}"' in one(objects, "Secret", "rnntune-pgbouncer-auth")["stringData"]["userlist.txt"]
    if overlay == "cpu-with-postgres":
        # The in-cluster database is where PgBouncer points, with one password everywhere.
        postgres = one(objects, "Service", "rnntune-postgres")
        host = ini["databases"]["rnntune"]
        assert f"host={postgres['metadata']['name']}" in host and f"port={postgres['spec']['ports'][0]['port']}" in host
        password = one(objects, "Secret", "rnntune-postgres")["stringData"]["password"]
        assert f":{password}@" in url and password in one(objects, "Secret", "rnntune-keda")["stringData"]["connection"]
    else:
        assert "REPLACE-ME" in url, "the base ships no usable credentials"
