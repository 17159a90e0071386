"""Attack 10: no ownership. Every token could cancel, pause or delete any study or data set.

Tokens now carry a name and a role (``name:role:secret`` in ``RNNTUNE_API_TOKENS``); a study and a
data set belong to the token name that created them; ``user`` changes only its own, ``read`` only
reads, ``admin`` anything. Bare secrets keep working, and without named tokens (or with
``RNNTUNE_ACCESS=shared``) every token is equal, as before."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from rnntune.service.api.app import create_app
from rnntune.service.config import Settings

ALICE, BOB, READER, ADMIN, PLAIN = (
    "alice-secret-0123456789",
    "bob-secret-0123456789ab",
    "reader-secret-012345678",
    "admin-secret-0123456789",
    "plain-secret-0123456789",
)
TOKENS = f"alice:user:{ALICE},bob:user:{BOB},carol:read:{READER},root:admin:{ADMIN},{PLAIN}"


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def study(name: str) -> dict:
    return {
        "name": name,
        "data": {"name": "sine", "params": {"n_series": 20, "length": 20}, "window": 8},
        "search_space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        "budget": {"n_trials": 2, "max_epochs": 1},
    }


def upload(client, name: str, token: str):
    return client.post(
        "/v1/datasets", files={"file": (f"{name}.csv", b"value\n1\n2\n3\n4\n5\n6\n")}, headers=auth(token)
    )


@pytest.fixture(scope="module")
def client(pg_url, tmp_path_factory):
    settings = Settings(database_url=pg_url, api_tokens=TOKENS, data_dir=tmp_path_factory.mktemp("data"))
    with TestClient(create_app(settings, dashboard=False)) as c:
        yield c


def test_a_user_changes_only_its_own_studies(client):
    r = client.post("/v1/studies", json=study("alices"), headers=auth(ALICE))
    assert r.status_code == 201, r.text
    assert r.json()["owner"] == "alice"
    listed = {s["name"]: s["owner"] for s in client.get("/v1/studies", headers=auth(READER)).json()["items"]}
    assert listed["alices"] == "alice"  # everyone reads everything

    for action in ("pause", "cancel"):
        r = client.post(f"/v1/studies/alices/{action}", headers=auth(BOB))
        assert r.status_code == 403, r.text
        assert "'alice'" in r.json()["detail"] and "'bob'" in r.json()["detail"]
    assert client.get("/v1/studies/alices", headers=auth(BOB)).json()["state"] == "queued"  # untouched
    assert client.post("/v1/studies/alices/pause", headers=auth(ALICE)).json()["state"] == "paused"
    assert client.post("/v1/studies/alices/resume", headers=auth(ALICE)).status_code == 200
    assert client.post("/v1/studies/nobody/cancel", headers=auth(BOB)).status_code == 404


def test_a_read_token_only_reads(client):
    assert client.get("/v1/studies", headers=auth(READER)).status_code == 200
    for method, path, kwargs in (
        ("POST", "/v1/studies", {"json": study("carols")}),
        ("POST", "/v1/studies/alices/cancel", {}),
        ("POST", "/v1/datasets", {"files": {"file": ("c.csv", b"value\n1\n2\n")}}),
    ):
        r = client.request(method, path, headers=auth(READER), **kwargs)
        assert r.status_code == 403, (path, r.text)
        assert "'read'" in r.json()["detail"]
    assert client.get("/v1/studies/carols", headers=auth(ADMIN)).status_code == 404


def test_an_admin_changes_anything_and_bare_secrets_are_admins(client):
    assert client.post("/v1/studies", json=study("bobs"), headers=auth(BOB)).status_code == 201
    assert client.post("/v1/studies/bobs/pause", headers=auth(ADMIN)).status_code == 200
    assert client.post("/v1/studies/bobs/resume", headers=auth(PLAIN)).status_code == 200
    r = client.post("/v1/studies", json=study("plains"), headers=auth(PLAIN))
    assert r.status_code == 201 and r.json()["owner"] is None
    r = client.post("/v1/studies/plains/cancel", headers=auth(ALICE))  # no owner: admins only
    assert r.status_code == 403 and "has no owner" in r.json()["detail"]


def test_extend_and_delete_are_the_owners_and_a_warm_start_may_read_anyone(client):
    assert client.post("/v1/studies", json=study("alices-ext"), headers=auth(ALICE)).status_code == 201
    for method, path, kwargs in (
        ("POST", "/v1/studies/alices-ext/extend", {"json": {"n_trials": 1}}),
        ("DELETE", "/v1/studies/alices-ext", {}),
    ):
        r = client.request(method, path, headers=auth(BOB), **kwargs)
        assert r.status_code == 403 and "'alice'" in r.json()["detail"], (path, r.text)
        r = client.request(method, path, headers=auth(READER), **kwargs)
        assert r.status_code == 403 and "'read'" in r.json()["detail"], (path, r.text)
    assert client.get("/v1/studies/alices-ext/models", headers=auth(READER)).json()["items"] == []
    r = client.post("/v1/studies/alices-ext/extend", json={"n_trials": 1}, headers=auth(ALICE))
    assert r.status_code == 200 and r.json()["n_trials"] == 3
    # reading is everyone's: bob may start his study from alice's (her trials' params he can list anyway)
    warm = {**study("bobs-warm"), "warm_start": {"from": ["alices-ext"], "top_k": 1}}
    assert client.post("/v1/studies", json=warm, headers=auth(BOB)).status_code == 201
    assert client.delete("/v1/studies/bobs-warm", headers=auth(ADMIN)).status_code == 204
    assert client.delete("/v1/studies/alices-ext", headers=auth(ALICE)).status_code == 204
    assert client.get("/v1/studies/alices-ext", headers=auth(ALICE)).status_code == 404


def test_data_sets_belong_to_their_uploader(client):
    r = upload(client, "alices-data", ALICE)
    assert r.status_code == 201 and r.json()["owner"] == "alice"
    assert client.get("/v1/datasets/alices-data", headers=auth(BOB)).json()["owner"] == "alice"
    r = client.delete("/v1/datasets/alices-data", headers=auth(BOB))
    assert r.status_code == 403 and "'alice'" in r.json()["detail"]
    assert (
        client.delete(f"/v1/datasets/{upload(client, 'bobs-data', BOB).json()['id']}", headers=auth(BOB)).status_code
        == 204
    )
    assert client.delete("/v1/datasets/alices-data", headers=auth(ALICE)).status_code == 204


def test_all_tokens_equal_without_named_tokens_or_when_shared(pg_url, tmp_path):
    """Single-user installs: bare secrets only (today's configuration), or RNNTUNE_ACCESS=shared."""
    for tokens, access in ((f"{PLAIN},{ADMIN}", "auto"), (TOKENS, "shared")):
        settings = Settings(database_url=pg_url, api_tokens=tokens, access=access, data_dir=tmp_path)
        with TestClient(create_app(settings, dashboard=False)) as c:
            name = f"equal-{access}"
            first, second = (ALICE, BOB) if access == "shared" else (PLAIN, ADMIN)
            assert c.post("/v1/studies", json=study(name), headers=auth(first)).status_code == 201
            assert c.post(f"/v1/studies/{name}/cancel", headers=auth(second)).status_code == 200
            r = c.post(f"/v1/studies/{name}/extend", json={"n_trials": 1}, headers=auth(second))
            assert r.status_code == 200, r.text
            assert c.delete(f"/v1/studies/{name}", headers=auth(second)).status_code == 204
            if access == "shared":  # roles are ignored too
                r = c.post("/v1/studies", json=study(f"{name}-r"), headers=auth(READER))
                assert r.status_code == 201, r.text


def test_token_entries():
    from rnntune.service.config import parse_tokens

    tokens = parse_tokens(f"alice:user:{ALICE},{PLAIN},legacy:with:colons-0123456789")
    assert [(t.name, t.role) for t in tokens] == [("alice", "user"), (None, "admin"), (None, "admin")]
    assert tokens[2].secret == "legacy:with:colons-0123456789"  # not a role in the middle: a bare secret
    assert ALICE not in repr(tokens)
    with pytest.raises(ValueError, match="two roles"):
        parse_tokens(f"alice:user:{ALICE},alice:admin:{ADMIN}")
    with pytest.raises(ValueError, match="RNNTUNE_API_TOKENS"):
        Settings(access="owners")


def test_the_cli_shows_owners_and_refusals(pg_url, tmp_path):
    import subprocess

    from tests.api_server import serving
    from tests.conftest import rnntune

    settings = Settings(database_url=pg_url, api_tokens=TOKENS, data_dir=tmp_path)
    with serving(create_app(settings, dashboard=False)) as url:

        def cli(*args: str, token: str) -> subprocess.CompletedProcess:
            proc = rnntune(*args, "--api-url", url, env={"RNNTUNE_API_TOKEN": token}, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)  # fmt: skip
            out, _ = proc.communicate(timeout=60)
            return subprocess.CompletedProcess(args, proc.returncode, out)

        spec = tmp_path / "cli.json"
        spec.write_text(__import__("json").dumps(study("cli-owned")))
        assert cli("submit", str(spec), token=ALICE).returncode == 0
        listed = cli("status", token=READER)
        assert listed.returncode == 0 and "cli-owned:" in listed.stdout and "owner alice" in listed.stdout
        refused = cli("cancel", "cli-owned", token=BOB)
        assert refused.returncode == 1 and "403" in refused.stdout and "belongs to 'alice'" in refused.stdout
        for command in (("extend", "cli-owned", "--trials", "2"), ("delete", "cli-owned", "--force")):
            refused = cli(*command, token=BOB)
            assert refused.returncode == 1 and "belongs to 'alice'" in refused.stdout, refused.stdout
        extended = cli("extend", "cli-owned", "--trials", "2", token=ALICE)
        assert extended.returncode == 0 and "0/4 finished" in extended.stdout, extended.stdout
        listed = cli("models", "cli-owned", token=READER)
        assert listed.returncode == 0 and "no model stored yet" in listed.stdout, listed.stdout
        assert cli("delete", "cli-owned", token=ALICE).returncode == 0
        gone = cli("delete", "cli-owned", token=ALICE)
        assert gone.returncode == 1 and "no study named 'cli-owned'" in gone.stdout


def test_only_an_admin_writes_through_the_dashboard(pg_url, tmp_path):
    """The dashboard's write routes cannot tell whose study they change: admins only, with roles on."""
    settings = Settings(database_url=pg_url, api_tokens=TOKENS, data_dir=tmp_path, dashboard_writable=True)
    with TestClient(create_app(settings)) as c:
        r = c.post(
            "/api/studies", json={"study_name": "via-dashboard", "directions": ["minimize"]}, headers=auth(ALICE)
        )
        assert r.status_code == 403 and "only an admin" in r.json()["detail"], r.text
        assert c.get("/api/studies", headers=auth(READER)).status_code == 200
        r = c.post(
            "/api/studies", json={"study_name": "via-dashboard", "directions": ["minimize"]}, headers=auth(ADMIN)
        )
        assert r.status_code != 403, r.text
