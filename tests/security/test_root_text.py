"""Attack 7: a file under a data root leaked through the model. A text study naming a server file
with ``label_column: password`` stored the passwords as label names, and the file's words as the
vocabulary, in the model file anyone with a token downloads.

A text study on a path-named file now needs the operator's consent (``RNNTUNE_ALLOW_ROOT_TEXT``,
off by default): a 422 naming the field and the setting at submit, and the worker refuses it
too. An uploaded file is its user's own and trains as before."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from rnntune.service.api.app import create_app
from rnntune.service.config import Settings
from rnntune.service.data.data_cache import DataCache, StudyDataError
from rnntune.service.spec import parse_spec

PASSWORDS = ("hunter2-pw", "correct-horse-pw", "letmein-pw")
USERS = "user,comment,password\n" + "".join(
    f"u{i},the account of someone {i % 5},{PASSWORDS[i % 3]}\n" for i in range(60)
)


def study(name: str, data: dict) -> dict:
    return {
        "name": name,
        "metric": "val_accuracy",
        "data": data,
        "search_space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        "budget": {"n_trials": 1, "max_epochs": 1},
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("root")
    (path / "users.csv").write_text(USERS)
    return path


def text_data(root, **params) -> dict:
    return {
        "name": "text",
        "path": str(root / "users.csv"),
        "params": {"text_column": "comment", "label_column": "password", **params},
    }


def _client(pg_url, root, **settings):
    return TestClient(create_app(Settings(database_url=pg_url, data_roots=str(root), **settings), dashboard=False))


def test_a_text_study_on_a_root_file_needs_the_operator_s_consent(pg_url, root):
    with _client(pg_url, root) as client:
        for name, data in (
            ("pw-path", text_data(root)),
            (
                "pw-params-path",
                {"name": "text", "params": {**text_data(root)["params"], "path": str(root / "users.csv")}},
            ),
        ):
            r = client.post("/v1/studies", json=study(name, data))
            assert r.status_code == 422, r.text
            [error] = r.json()["detail"]
            field = "data.path" if "path" in data else "data.params.path"
            assert ".".join(error["loc"][1:]) == field
            assert "RNNTUNE_ALLOW_ROOT_TEXT" in error["msg"] and "POST /v1/datasets" in error["msg"]
            assert not any(pw in r.text for pw in PASSWORDS)
            assert client.get(f"/v1/studies/{name}").status_code == 404

        # the user's own upload of the same file trains as before
        r = client.post("/v1/datasets", files={"file": ("users.csv", USERS.encode())}, data={"format": "text"})
        assert r.status_code == 201, r.text
        uploaded = {"name": "text", "dataset": "users", "params": text_data(root)["params"]}
        assert client.post("/v1/studies", json=study("pw-upload", uploaded)).status_code == 201


def test_the_operator_may_consent(pg_url, root):
    with _client(pg_url, root, allow_root_text=True) as client:
        assert client.post("/v1/studies", json=study("pw-allowed", text_data(root))).status_code == 201


def test_the_worker_refuses_it_too(root):
    """A spec stored under other settings (or written into the table) is checked by the worker's
    own setting before it reads a word of the file."""
    spec = parse_spec(study("w", text_data(root)))
    with pytest.raises(StudyDataError) as refused:
        DataCache(data_roots=[root]).get(spec, None)
    assert str(refused.value).startswith("data.path:") and "RNNTUNE_ALLOW_ROOT_TEXT" in str(refused.value)
    assert not any(pw in str(refused.value) for pw in PASSWORDS)
    consented = DataCache(data_roots=[root], allow_root_text=True).get(spec, None)
    assert sorted(consented.text["labels"]) == sorted(PASSWORDS)  # what consent lets into the model file
