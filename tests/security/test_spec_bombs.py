"""Attack 2: a YAML alias bomb (a few hundred bytes that expand to megabytes), and big specs.

Anchors and aliases are refused outright (a spec never needs them) and the parsed spec's size is
capped (``RNNTUNE_MAX_SPEC_KB``), so nothing large is ever built or stored.
"""

from __future__ import annotations

import pytest

from rnntune.service.spec import SpecError, load_spec
from tests.conftest import make_settings

YAML = {"Content-Type": "application/yaml"}
BOMB = """\
name: bomb
data:
  name: sine
  params:
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
search_space: {lr: {type: float, low: 0.001, high: 0.01}}
budget: {n_trials: 2}
"""


@pytest.fixture(scope="module")
def settings(sqlite_url, tmp_path_factory):
    return make_settings(sqlite_url, tmp_path_factory.mktemp("data"), max_spec_kb=16)


def test_an_alias_bomb_is_refused_before_it_expands(client):
    assert len(BOMB) < 600
    r = client.post("/v1/studies", content=BOMB, headers=YAML)
    assert r.status_code == 422, r.text
    assert "anchors (&name) and aliases (*name) are not allowed" in r.text
    assert client.get("/v1/studies/bomb").status_code == 404


def test_a_plain_alias_is_refused_too(client, tmp_path):
    spec = "name: a\nx: &v 1\ndata: {name: sine}\nbudget: {n_trials: *v}\n"
    assert client.post("/v1/studies", content=spec, headers=YAML).status_code == 422
    (tmp_path / "s.yaml").write_text(spec)
    with pytest.raises(SpecError, match="anchors"):
        load_spec(tmp_path / "s.yaml")  # the CLI reads files the same way


def test_a_spec_over_the_size_limit_is_422_naming_it(client):
    spec = {
        "name": "big",
        "data": {"name": "sine"},
        "description": "x" * 20_000,  # well under the 1 MiB body limit, over RNNTUNE_MAX_SPEC_KB=16
        "search_space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2}},
        "budget": {"n_trials": 2},
    }
    r = client.post("/v1/studies", json=spec)
    assert r.status_code == 422, r.text
    msg = r.json()["detail"][0]["msg"]
    assert "RNNTUNE_MAX_SPEC_KB=16" in msg and "bytes" in msg
