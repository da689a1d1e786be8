#!/usr/bin/env bash
# Start PostgreSQL and Redis when they are down; fail with a clear message if that is impossible.
set -euo pipefail
PGHOST=${KEEL_TEST_PGHOST:-127.0.0.1}
if ! pg_isready -h "$PGHOST" -p 5432 -q 2>/dev/null; then
  echo "PostgreSQL is down; starting it" >&2
  if ls /etc/postgresql >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_isready -h "$PGHOST" -p 5432 -q && break; sleep 1; done
  pg_isready -h "$PGHOST" -p 5432 -q || { echo "ERROR: PostgreSQL is not reachable on $PGHOST:5432 and could not be started" >&2; exit 1; }
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "Redis is down; starting it" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
  for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { echo "ERROR: Redis is not reachable on 127.0.0.1:6379 and could not be started" >&2; exit 1; }
fi
echo "PostgreSQL and Redis are up"
