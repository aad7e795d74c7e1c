"""Postgres read models: migrations, the projector, and read-model queries."""
