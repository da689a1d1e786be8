"""Worker tests reuse the API fixtures: real Postgres, the app, two tenants."""

from tests.api.conftest import (  # noqa: F401  (re-exported fixtures)
    admin_headers,
    alice,
    bob,
    client,
    data_dir,
    enqueued,
    screens,
    validations,
)
