"""Persistence: SQLAlchemy tables, engines and the queries the runtime needs. SQL is the source of truth."""
