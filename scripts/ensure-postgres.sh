#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on GRADPILOT_TEST_PG (default 127.0.0.1:5432).
# Starts the local cluster if it is installed but stopped. Under CI=true a missing
# PostgreSQL is an error; on a developer machine the Postgres tests are skipped instead.
set -u
host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }
if ready; then exit 0; fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  for version in $(ls /etc/postgresql); do
    echo "starting PostgreSQL $version…"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  done
  for _ in $(seq 1 30); do ready && exit 0; sleep 1; done
fi
if [ "${CI:-}" = "true" ]; then
  echo "PostgreSQL is not reachable on $host:$port and could not be started (required under CI)." >&2
  exit 1
fi
echo "PostgreSQL is not reachable on $host:$port: the Postgres tests will be skipped." >&2
exit 0
