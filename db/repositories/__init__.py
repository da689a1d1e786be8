"""Repositories hold all SQL. They flush but never commit: the caller owns the transaction."""
