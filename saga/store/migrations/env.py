"""Alembic environment: runs on the connection SQLStore.migrate() hands over.

There is no ini file and no URL here on purpose: the store owns the engine (pool,
SQLite pragmas, retries), so migrations always run the way the application connects.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from saga.store.tables import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("saga migrations run through SQLStore.migrate() (`saga db upgrade`)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
