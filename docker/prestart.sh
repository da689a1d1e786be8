#!/usr/bin/env sh
# One-shot `migrate` service: wait for Postgres, then apply migrations.
set -e
for i in $(seq 1 60); do
  python -c "import sqlalchemy as s, os; s.create_engine(os.environ['KEEL_DATABASE_URL']).connect().close()" && break
  echo "waiting for the database ($i)"; sleep 1
done
alembic upgrade head
