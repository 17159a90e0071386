"""One import name: the wheel installs only ``rnntune`` (with ``rnntune.service``, ``rnntune.models``
and the example specs as package data), and ``rnntune serve --demo`` works from an empty folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import httpx2
import pytest

from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[1]


def test_every_source_package_is_listed():
    """pyproject lists packages by hand (package-dir maps them): a new folder must not be left out."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    for prefix, folder in cfg["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            name = ".".join([prefix, *rel.parts])
            assert name in listed, f"{name} ({init.parent}) is missing from [tool.setuptools] packages"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (whl,) = out.glob("rnntune-*.whl")
    return whl


def test_wheel_has_one_top_level_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("rnntune-")}
    assert tops == {"rnntune"}, tops
    assert "rnntune/studies/sine-lstm.yaml" in names
    assert "rnntune/service/store/migrations/script.py.mako" in names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta


@pytest.mark.slow
def test_wheel_serves_the_demo_from_an_empty_folder(wheel, tmp_path):
    """A fresh venv that sees this one's dependencies (so nothing is downloaded) but not the
    checkout: the installed wheel alone must serve the demo study."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=False, with_pip=False)
    py = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # dependencies come from the test venv's site-packages, but not its editable rnntune
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "deps.pth").write_text("\n".join(deps) + "\n")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", site, str(wheel)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    check = subprocess.run(
        [
            str(py),
            "-c",
            "import rnntune, rnntune.service.cli, sys; print(rnntune.__file__); print('torch' in sys.modules)",
        ],
        cwd=empty,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.splitlines() == [f"{site}/rnntune/__init__.py", "False"]

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {
        **os.environ,
        "PYTHONPATH": "",
        "RNNTUNE_DATA_DIR": str(empty / "data"),
        "RNNTUNE_DATABASE_URL": f"sqlite:///{empty}/rnntune.db",
    }
    proc = subprocess.Popen(
        [str(py), "-m", "rnntune.service.cli", "serve", "--demo", "--workers", "0", "--port", str(port)],
        cwd=empty,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def listed():
            try:
                return httpx2.get(f"http://127.0.0.1:{port}/v1/studies", timeout=2).json()["items"]
            except (httpx2.HTTPError, ValueError):
                return None

        items = wait_for(listed, 60, what="the demo study")
        assert [s["name"] for s in items] == ["sine-lstm"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
