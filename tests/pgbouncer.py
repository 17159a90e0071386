"""A real PgBouncer (Debian's ``pgbouncer``) in transaction pooling mode in front of the test
PostgreSQL, for the tests and for ``benchmarks/queue_throughput.py --pgbouncer``.

It runs as the ``postgres`` user (PgBouncer refuses root) on a free port, with its own ini in a
temporary folder, and forwards every database name to the server on 127.0.0.1:5432 (``*``), so
a URL becomes a PgBouncer one by changing its port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
import sqlalchemy as sa

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"

INI = """\
[databases]
* = host={host} port={port} user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = {pool_size}
max_db_connections = {pool_size}
reserve_pool_size = 0
min_pool_size = 0
max_client_conn = 1000
admin_users = postgres
ignore_startup_parameters = extra_float_digits
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
"""


class PgBouncer:
    """``with PgBouncer(pool_size=16) as bouncer: bouncer.url_for(url)``."""

    def __init__(self, *, pool_size: int = 16, upstream_host: str = "127.0.0.1", upstream_port: int = 5432):
        if not Path(PGBOUNCER).exists():
            raise RuntimeError("pgbouncer is not installed (scripts/test.sh installs Debian's package)")
        self.dir = Path(tempfile.mkdtemp(prefix="rnntune-pgbouncer-", dir="/tmp"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            INI.format(host=upstream_host, port=upstream_port, listen_port=self.port, pool_size=pool_size, dir=self.dir)
        )
        shutil.chown(self.dir, "postgres")
        shutil.chown(ini, "postgres")
        # -d: daemonise once listening; its pid is in the pidfile.
        cmd = [PGBOUNCER, "-d", str(ini)]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = int(self._wait_for(lambda: (self.dir / "pgbouncer.pid").read_text().strip() or None))

    def _wait_for(self, read, timeout_s: float = 10.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                value = read()
                if value:
                    return value
            except (OSError, sa.exc.OperationalError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not start: {(self.dir / 'pgbouncer.log').read_text()[-2000:]}")

    def url_for(self, url: str) -> str:
        """The same database through PgBouncer."""
        parsed = sa.engine.make_url(url)
        return parsed.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def show(self, what: str) -> list[dict]:
        """PgBouncer's admin console: ``SHOW POOLS``, ``SHOW STATS``, ..."""
        # The admin console speaks only simple queries, no BEGIN: plain psycopg2 in autocommit.
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="pgbouncer")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"SHOW {what}")
                names = [c.name for c in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            conn.close()

    def n_transactions(self, database: str) -> int:
        return sum(int(row["total_xact_count"]) for row in self.show("STATS") if row["database"] == database)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGINT)  # immediate shutdown
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
