"""Alembic environment: migrations run on the connection :meth:`Database.migrate` hands over."""

from alembic import context

from mithridate.vault.db import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
context.run_migrations()
