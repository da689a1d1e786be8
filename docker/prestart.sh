#!/usr/bin/env sh
# One-shot `migrate` service: wait for Postgres, apply migrations, create the bucket if missing.
set -e
for i in $(seq 1 60); do
  python -c "import sqlalchemy as s, os; s.create_engine(os.environ['KEEL_DATABASE_URL']).connect().close()" && break
  echo "waiting for the database ($i)"; sleep 1
done
alembic upgrade head
if [ -n "${KEEL_BLOB_URL:-}" ]; then
  for i in $(seq 1 60); do
    python -c "from db.blob_config import BlobSettings; BlobSettings().blob_store().ensure_bucket()" && break
    echo "waiting for the object store ($i)"; sleep 1
  done
fi
