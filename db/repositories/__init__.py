"""Repositories: all SQL lives here. They flush but never commit; the caller owns the transaction."""
