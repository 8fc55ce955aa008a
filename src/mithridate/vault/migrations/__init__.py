"""Alembic migrations of the vault catalog (run by :meth:`mithridate.vault.db.Database.migrate`)."""
