"""Connecting to the feedback database (SQLite by default, PostgreSQL by URL) and migrating it to the head schema."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

__all__ = ["HEAD", "VERSION_TABLE", "current_revision", "database_url", "dialect_insert", "make_engine", "migrate"]

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "feedback_alembic_version"
# Any constant: it only has to be the same for every process migrating one PostgreSQL database.
_PG_MIGRATION_LOCK = 0x4B41495A454E


def database_url(*, data_dir: Path, url: str = "") -> sa.URL:
    """The configured URL, or SQLite at `data_dir/kaizen.db`; bare `postgresql://` means psycopg 3."""
    if not url:
        return sa.URL.create("sqlite", database=str(Path(data_dir) / "kaizen.db"))
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as e:
        raise ValueError(f"KAIZEN_DATABASE_URL is not a database URL ({e}); e.g. postgresql://u:pw@host/db") from e
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: sa.URL, *, busy_timeout_s: float = 30.0, connect_timeout_s: int = 5) -> sa.Engine:
    """An engine with the settings concurrent writers need: WAL, foreign keys and a busy timeout on SQLite."""
    match url.get_backend_name():
        case "sqlite":
            if url.database and url.database != ":memory:":
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(url, connect_args={"timeout": busy_timeout_s})

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
                # WAL lets readers and one writer work at once; SQLite leaves foreign keys off unless asked.
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

            return engine
        case "postgresql":
            # pre_ping: a connection broken by a database restart is replaced instead of failing a write.
            return sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": connect_timeout_s})
        case other:
            raise ValueError(f"unsupported database {other!r} in KAIZEN_DATABASE_URL; use sqlite or postgresql")


def dialect_insert(engine: sa.Engine) -> Callable[..., Any]:
    """The dialect's own `insert` (SQLite or PostgreSQL), which has `on_conflict_do_nothing/do_update`.
    Raises ValueError for any other database."""
    match engine.dialect.name:
        case "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        case "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        case other:
            raise ValueError(f"unsupported database dialect {other!r}")
    return insert


def _config(connection: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    cfg.attributes["version_table"] = VERSION_TABLE
    return cfg


HEAD: str = ScriptDirectory(str(MIGRATIONS)).get_current_head() or ""


@contextmanager
def _sqlite_file_lock(url: sa.URL) -> Iterator[None]:
    # Two processes opening a fresh SQLite file must not both create the tables.
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        yield
        return
    with open(f"{url.database}.migrate-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(engine: sa.Engine, *, revision: str = "head") -> None:
    """Upgrade the database to `revision` (head by default); safe when several processes start at once."""
    with _sqlite_file_lock(engine.url), engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # Held until the commit below, so a second process waits and then finds nothing to do.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        before = _revision_of(conn)
        command.upgrade(_config(conn), revision)
        conn.commit()
        after = _revision_of(conn)
    if before != after:
        logger.info("feedback database migrated from %s to %s", before or "empty", after)


def _revision_of(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return _revision_of(conn)
