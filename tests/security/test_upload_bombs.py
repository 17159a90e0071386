"""Attack 4: upload bombs. A small .npz that expands to hundreds of MB, an array header that
claims billions of values, and a large CSV must not blow up the API's memory.

The API runs as a real subprocess; its peak RSS (``VmHWM``) is read from /proc before and after.
"""

from __future__ import annotations

import io
import zipfile

import httpx2
import numpy as np
import pytest

from rnntune.models.files import FileCheckError, FileLimits, check_npz
from tests.api_server import free_port
from tests.conftest import rnntune, wait_for

MB = 2**20


def npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def bomb_npz(n_bytes: int = 400 * MB) -> bytes:
    """A deflated .npz whose X (N, 1000, 1000) float32 is ``n_bytes`` of zeros, built a chunk at a time."""
    n = n_bytes // (1000 * 1000 * 4)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("X.npy", "w", force_zip64=True) as member:
            member.write(npy_header((n, 1000, 1000)))
            zeros = bytes(MB)
            for _ in range(n_bytes // MB):
                member.write(zeros)
        buffer = io.BytesIO()
        np.save(buffer, np.arange(n) % 2)
        archive.writestr("y.npy", buffer.getvalue())
    return out.getvalue()


def lying_npz() -> bytes:
    """Stored (not compressed): X's header claims 10^10 values, and the file holds none of them."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("X.npy", npy_header((10**6, 10**3, 10)))
        archive.writestr("y.npy", npy_header((10**6,), "<i8"))
    return out.getvalue()


def big_csv(n_bytes: int = int(4.8 * MB)) -> bytes:
    row = ",".join(f"{i}.25" for i in range(12)) + "\n"
    header = ",".join(f"c{i}" for i in range(12)) + "\n"
    return (header + row * (n_bytes // len(row))).encode()


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


@pytest.fixture(scope="module")
def api(pg_url):
    port = free_port()
    proc = rnntune("api", "--port", str(port), "--no-dashboard", env={"RNNTUNE_DATABASE_URL": pg_url})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(base), 60, 0.2, "the API to start")
        with httpx2.Client(base_url=base, timeout=120) as client:
            yield client, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _up(base: str) -> bool:
    try:
        return httpx2.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx2.HTTPError:
        return False


def upload(client, content: bytes, filename: str):
    return client.post("/v1/datasets", files={"file": (filename, content)})


def test_upload_bombs_are_refused_and_the_api_stays_small(api):
    client, pid = api
    ok = io.BytesIO()
    np.savez_compressed(ok, X=np.ones((8, 3, 2)), y=np.arange(8) % 2)
    assert upload(client, ok.getvalue(), "warm.npz").status_code == 201  # first-use imports are baseline
    assert upload(client, b"v\n1\n2\n", "warm-csv.csv").status_code == 201
    before = peak_rss_mb(pid)

    bomb = bomb_npz()
    assert len(bomb) < 1 * MB  # ~0.4 MB on the wire, 400 MB unpacked
    r = upload(client, bomb, "bomb.npz")
    assert r.status_code == 422, r.text
    assert "RNNTUNE_MAX_COMPRESSION_RATIO" in r.json()["detail"]
    r = upload(client, lying_npz(), "lying.npz")
    assert r.status_code == 422, r.text
    assert "RNNTUNE_MAX_UPLOAD_ELEMENTS" in r.json()["detail"]
    grown = peak_rss_mb(pid) - before
    assert grown < 50, f"the API's peak RSS grew by {grown:.0f} MB on .npz bombs"

    # A 4.8 MiB CSV is checked as a stream: what remains is the request and the database insert
    # (psycopg2 sends bytea as an escaped literal), a small multiple of the file's size.
    csv, before = big_csv(), peak_rss_mb(pid)
    r = upload(client, csv, "big.csv")
    assert r.status_code == 201, r.text
    assert r.json()["info"]["rows"] > 80_000 and len(r.json()["info"]["numeric_columns"]) == 12
    grown = peak_rss_mb(pid) - before
    assert grown < 12 * len(csv) / MB, f"the API's peak RSS grew by {grown:.0f} MB on a {len(csv) / MB:.1f} MB CSV"


def test_csv_and_text_are_checked_as_streams():
    """The checks keep counts and column names, never the rows: well under 1 MB for 4.8 MB."""
    import tracemalloc

    from rnntune.service.data.datasets import inspect_file

    content = big_csv()
    text = b"text,label\n" + b"a short example text,pos\n" * (len(content) // 25)
    tracemalloc.start()
    try:
        assert inspect_file(content, "csv")["rows"] > 80_000
        assert inspect_file(text, "text")["rows"] > 80_000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 * MB, f"{peak / MB:.1f} MB"


def test_headers_are_checked_before_values():
    """The same checks on the worker's side: nothing is decompressed past the headers."""
    with pytest.raises(FileCheckError, match="expands"):
        check_npz(bomb_npz(40 * MB), FileLimits(max_compression_ratio=100))
    with pytest.raises(FileCheckError, match="holds 10000000000 values"):
        check_npz(lying_npz())
    small = io.BytesIO()
    np.savez(small, X=np.zeros((4, 3, 2), dtype=np.float32), y=np.array([0, 1, 0, 1]))
    assert check_npz(small.getvalue()) == {"X": [4, 3, 2], "y": [4], "task": "classification", "n_classes": 2}


def test_a_large_valid_upload_costs_a_small_multiple_of_its_size(api, pg_url):
    """An 88 MB upload cost the API +780 MB: the file went to memory whole, twice, then escaped.
    It now stays where the multipart parser spooled it (disk), is checked from there and is sent
    to PostgreSQL in chunks: the API's peak grows by less than 2x the file plus a fixed margin."""
    client, pid = api
    assert upload(client, big_csv(2 * MB), "warm-big.csv").status_code == 201  # first-use growth
    content, before = big_csv(32 * MB), peak_rss_mb(pid)
    r = upload(client, content, "large.csv")
    assert r.status_code == 201, r.text
    assert r.json()["size"] == len(content)
    grown = peak_rss_mb(pid) - before
    size_mb = len(content) / MB
    assert grown < 2 * size_mb + 32, f"the API's peak RSS grew by {grown:.0f} MB on a {size_mb:.0f} MB upload"
    import hashlib

    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:  # the chunks add up to the file, byte for byte
        stored = conn.scalar(
            sa.text("SELECT encode(sha256(content), 'hex') FROM rnntune_datasets WHERE name = 'large'")
        )
    engine.dispose()
    assert stored == hashlib.sha256(content).hexdigest() == r.json()["sha256"]
    print(f"API peak RSS +{grown:.0f} MB for a {size_mb:.0f} MB upload")
