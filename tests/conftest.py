"""Shared fixtures. Database fixtures are lazy: only tests that ask for them touch Postgres."""

from tests.fixtures.db import engine, keel_env, session  # noqa: F401  (re-exported fixtures)
from tests.fixtures.object_store import object_store  # noqa: F401  (a real S3 server, lazy)
