"""Engine creation and schema migrations (Alembic, shipped inside the package)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from troupe.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# The newest migration. Start-up compares the database with it without importing
# Alembic (~0.2 s); a test keeps it equal to the migration scripts' head.
SCHEMA_HEAD = "0012"


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """An async engine for SQLite (WAL, foreign keys on) or PostgreSQL."""
    if url.startswith("sqlite"):
        # The async engine only migrates and checks the schema; the store's
        # transactions run inline (``Transactions``), so one connection is plenty.
        engine = create_async_engine(
            url, echo=echo, connect_args={"timeout": 30}, pool_size=1, max_overflow=0
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


_P = ParamSpec("_P")
_T = TypeVar("_T")


class Transactions:
    """Runs a function of a synchronous ``Connection`` as one transaction.

    The store's logic is written once, as plain functions of a ``Connection``; this
    decides how they reach the database. PostgreSQL: through the async engine, the
    function running in SQLAlchemy's greenlet bridge (``run_sync``). SQLite: inline on
    the calling thread through the stdlib driver. A WAL SQLite statement takes tens of
    microseconds, less than a single hop to aiosqlite's driver thread, and a function
    that never yields cannot interleave with another: no lock, no pool of threads.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._async = engine
        self._inline: Engine | None = None
        if engine.dialect.name == "sqlite":
            self._inline = sqlalchemy.create_engine(
                engine.url.set(drivername="sqlite"),
                connect_args={"timeout": 30, "check_same_thread": False},
                pool_size=1,
                max_overflow=0,
            )
            event.listen(self._inline, "connect", _sqlite_inline_connect)
            event.listen(self._inline, "begin", _sqlite_begin)

    async def write(
        self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kw: _P.kwargs
    ) -> _T:
        """Run ``fn`` in a write transaction, committed when it returns."""
        if self._inline is not None:
            with self._inline.begin() as conn:
                return fn(conn, *args, **kw)
        async with self._async.begin() as aconn:
            return await aconn.run_sync(fn, *args, **kw)

    async def read(
        self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kw: _P.kwargs
    ) -> _T:
        """Run ``fn`` in a transaction that is rolled back (it must only read)."""
        if self._inline is not None:
            with self._inline.connect().execution_options(**_READ_ONLY) as conn:
                return fn(conn, *args, **kw)
        async with self._async.connect() as aconn:
            return await aconn.run_sync(fn, *args, **kw)

    @property
    def dialect(self) -> str:
        return self._async.dialect.name

    async def aclose(self) -> None:
        if self._inline is not None:
            self._inline.dispose()
        await self._async.dispose()


def _sqlite_inline_connect(dbapi_connection: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_connection, record)
    # The driver's own implicit BEGIN comes only before a write statement, so a
    # transaction's reads could see a state another process then changes before its
    # first write. Transactions are begun explicitly instead (below).
    dbapi_connection.isolation_level = None


_READ_ONLY = {"troupe_read_only": True}


def _sqlite_begin(conn: Connection) -> None:
    # A writer takes the write lock up front, so a read-then-write transaction cannot
    # be overtaken by another process's writer between its read and its write. A
    # reader begins nothing: each of its statements sees the latest commit, as under
    # PostgreSQL's read committed, and never waits for a writer (WAL).
    if not conn.get_execution_options().get("troupe_read_only", False):
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]


def _alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the schema up to ``revision``."""
    from alembic import command

    await _migrate(engine, lambda c: command.upgrade(_alembic_config(c), revision))


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    """Migrate the schema down to ``revision`` (``base`` drops everything)."""
    from alembic import command

    await _migrate(engine, lambda c: command.downgrade(_alembic_config(c), revision))


async def _migrate(engine: AsyncEngine, run: Callable[[Connection], None]) -> None:
    """Run migrations in one transaction. On SQLite, foreign keys are off meanwhile: a
    batch migration rebuilds a table (copy, drop the old one, rename), and dropping the
    old ``tasks`` with foreign keys on would cascade-delete every event, usage row and
    node of every task. The pragma only takes effect outside a transaction, so it is
    set before the migration's transaction begins, and the result is checked after."""
    async with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            await conn.commit()
        try:
            await conn.run_sync(run)
            await conn.commit()
            if sqlite:
                broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                if broken:
                    raise ConfigError(f"the migration left broken references: {broken[:5]}")
        finally:
            if sqlite:
                await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                await conn.commit()


def head_revision() -> str:
    """The head of the migration scripts, as Alembic computes it."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    """Every revision of the migration scripts."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    return {script.revision for script in scripts.walk_revisions()}


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
