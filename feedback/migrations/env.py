"""Alembic environment for the feedback tables; run programmatically by `feedback.db.migrate` (no alembic.ini).

`migrate` passes an open connection in `config.attributes["connection"]`; the revisions run inside its
transaction, so the caller decides when they commit.
"""

from __future__ import annotations

from alembic import context

from feedback.models import TABLES, SQLModel

config = context.config
VERSION_TABLE = config.attributes.get("version_table", "feedback_alembic_version")
OUR_TABLES = {t.name for t in TABLES}


def _include_object(obj, name, type_, reflected, compare_to) -> bool:  # noqa: ANN001
    # Other packages may keep their own tables in the same database; autogenerate looks at ours only.
    return type_ != "table" or name in OUR_TABLES


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("feedback migrations run through feedback.db.migrate(), which passes a connection")
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        version_table=VERSION_TABLE,
        include_object=_include_object,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
