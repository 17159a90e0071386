#!/usr/bin/env bash
# Quick start, command two: install what the tests need, start PostgreSQL if it is installed
# but down, and run the linters (scripts/lint.sh) and the whole suite. Extra arguments go to pytest.
source "$(dirname "$0")/_env.sh"

# docker-compose v1 validates docker-compose.yml offline (no engine needed).
if ! command -v docker-compose >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose) >/dev/null 2>&1 \
    || echo "warning: could not install docker-compose; the compose test will fail" >&2
fi

# kubectl renders deploy/kubernetes (tests/deploy/test_kubernetes.py); a real PgBouncer fronts
# the test database in tests/deploy/test_pgbouncer.py; faketime runs a worker with its clock off by
# hours (tests/lifecycle: leases use the database's clock). Debian's packages, installed the same way.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
  command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
  command -v faketime >/dev/null 2>&1 || missing+=(faketime)
  if [ "${#missing[@]}" -gt 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1 \
      || echo "warning: could not install ${missing[*]}; the Kubernetes / PgBouncer / clock-skew tests will fail" >&2
  fi
fi

# The Postgres tests use the real server on 127.0.0.1:5432 (RNNTUNE_TEST_PG to point elsewhere).
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    for version in $(ls /etc/postgresql 2>/dev/null); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
  pg_isready -h 127.0.0.1 -p 5432 || { echo "error: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
fi

# Linters first: they take seconds and a red one fails CI like a red test.
bash scripts/lint.sh

exec .venv/bin/python -m pytest "$@"
