"""Engine creation and schema migrations (Alembic, shipped inside the package)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from troupe.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# The newest migration. Start-up compares the database with it without importing
# Alembic (~0.2 s); a test keeps it equal to the migration scripts' head.
SCHEMA_HEAD = "0002"


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """An async engine for SQLite (WAL, foreign keys on) or PostgreSQL."""
    if url.startswith("sqlite"):
        # Few connections: each aiosqlite connection is a thread of its own, and more
        # threads than SQLite can use (one writer, WAL readers) only contend for the GIL.
        engine = create_async_engine(
            url, echo=echo, connect_args={"timeout": 30}, pool_size=2, max_overflow=0
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the schema up to ``revision``."""
    from alembic import command

    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(_alembic_config(c), revision))


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    """Migrate the schema down to ``revision`` (``base`` drops everything)."""
    from alembic import command

    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(_alembic_config(c), revision))


def head_revision() -> str:
    """The head of the migration scripts, as Alembic computes it."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at; None when it was never migrated."""
    try:
        async with engine.connect() as conn:
            version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    except DBAPIError:
        return None  # no alembic_version table yet
    return None if version is None else str(version)


async def ensure_current_schema(engine: AsyncEngine) -> None:
    """Migrate to head unless the database is there already."""
    if await current_revision(engine) != SCHEMA_HEAD:
        await upgrade(engine)


async def require_current_schema(engine: AsyncEngine) -> None:
    """Fail fast when the database is not migrated to this code's head."""
    current = await current_revision(engine)
    if current != SCHEMA_HEAD:
        raise ConfigError(
            f"database schema is at {current or 'empty'}, this code needs {SCHEMA_HEAD}: "
            "run `troupe db upgrade` first"
        )
