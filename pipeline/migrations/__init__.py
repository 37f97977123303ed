"""Alembic migrations for the Rubot tables (run with ``rubot migrate``)."""
