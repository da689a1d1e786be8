"""Shared fixtures. Database fixtures are lazy: only tests that ask for them touch Postgres."""

from tests.fixtures.db import engine, keel_env, session  # noqa: F401  (re-exported fixtures)
