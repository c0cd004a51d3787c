"""Engine creation and schema migrations (Alembic, shipped inside the package)."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Concatenate, ParamSpec, TypeVar

import sqlalchemy
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from troupe.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# The newest migration. Start-up compares the database with it without importing
# Alembic (~0.2 s); a test keeps it equal to the migration scripts' head.
SCHEMA_HEAD = "0013"


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
    # No checkpoints by the writers: SQLite's automatic one (every 1,000 pages) copies
    # and syncs while the committing writer holds the write lock, which stalled the
    # budget ledger's writers for milliseconds several times a second. A thread of
    # each process checkpoints instead (``_Checkpointer``); the WAL file is cut back
    # to 64 MB when one completes.
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.execute(f"PRAGMA journal_size_limit={64 * 1024 * 1024}")
    cursor.close()


class _Checkpointer:
    """Checkpoints one SQLite file's WAL every ``INTERVAL_S`` from a thread of its own.

    A passive checkpoint copies committed pages into the database without blocking
    readers or writers, and the driver releases the GIL meanwhile, so neither the
    event loop nor a transaction waits for it. One per file per process, shared by its
    ``Transactions`` and stopped when the last of them closes.
    """

    INTERVAL_S = 0.5
    _running: ClassVar[dict[str, _Checkpointer]] = {}
    _lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self._path = path
        self._users = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"sqlite-checkpoint {path}", daemon=True
        )

    @classmethod
    def acquire(cls, path: str) -> None:
        with cls._lock:
            checkpointer = cls._running.get(path)
            if checkpointer is None:
                checkpointer = cls._running[path] = _Checkpointer(path)
                checkpointer._thread.start()
            checkpointer._users += 1

    @classmethod
    def release(cls, path: str) -> None:
        with cls._lock:
            checkpointer = cls._running.get(path)
            if checkpointer is None:
                return
            checkpointer._users -= 1
            if checkpointer._users > 0:
                return
            del cls._running[path]
        checkpointer._stop.set()
        checkpointer._thread.join()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, timeout=30, isolation_level=None)
        try:
            while not self._stop.wait(self.INTERVAL_S):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # e.g. the file went away under a test
                    logger.warning("SQLite checkpoint of %s failed: %s", self._path, exc)
        finally:
            db.close()


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
        # SQLite: one connection for writers and one for readers, each kept open, so a
        # transaction costs no pool checkout, connection setup or reset-on-return.
        self._writer: Connection | None = None
        self._reader: Connection | None = None
        self._checkpointed: str | None = None  # the file whose checkpointer this shares
        if engine.dialect.name == "sqlite":
            self._inline = sqlalchemy.create_engine(
                engine.url.set(drivername="sqlite"),
                connect_args={"timeout": 30, "check_same_thread": False},
                pool_size=2,
                max_overflow=0,
            )
            event.listen(self._inline, "connect", _sqlite_inline_connect)
            event.listen(self._inline, "begin", _sqlite_begin)
            path = engine.url.database
            if path and path != ":memory:":
                _Checkpointer.acquire(path)
                self._checkpointed = path

    async def write(
        self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kw: _P.kwargs
    ) -> _T:
        """Run ``fn`` in a write transaction, committed when it returns."""
        if self._inline is not None:
            writer = self._writer_connection(self._inline)
            with writer.begin():
                return fn(writer, *args, **kw)
        async with self._async.begin() as aconn:
            return await aconn.run_sync(fn, *args, **kw)

    async def write_lean(
        self,
        fn: Callable[Concatenate[Connection | sqlite3.Connection, _P], _T],
        *args: _P.args,
        **kw: _P.kwargs,
    ) -> _T:
        """A write with the least overhead, for the budget ledger's hot path on SQLite
        (two per LLM call, on the same few rows for everyone): ``fn`` gets the driver's
        connection (the stdlib ``sqlite3`` API), and the transaction is begun and
        committed on it directly, without SQLAlchemy's bookkeeping (a fifth of the
        ledger's cost). PostgreSQL: as ``write`` (the ledger batches there instead)."""
        if self._inline is None:
            return await self.write(fn, *args, **kw)
        db = self._writer_connection(self._inline).connection.driver_connection
        assert isinstance(db, sqlite3.Connection)
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db, *args, **kw)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return result

    def _writer_connection(self, inline: Engine) -> Connection:
        if self._writer is None:
            self._writer = inline.connect()
        return self._writer

    async def read(
        self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kw: _P.kwargs
    ) -> _T:
        """Run ``fn``, which must only read; on SQLite each of its statements sees the
        latest commit, as under PostgreSQL's read committed."""
        if self._inline is not None:
            if self._reader is None:
                self._reader = self._inline.connect().execution_options(**_READ_ONLY)
            # Begun and ended like a write, so nothing stays open between reads; on
            # SQLite a reader's begin is no statement at all (``_sqlite_begin``).
            with self._reader.begin():
                return fn(self._reader, *args, **kw)
        async with self._async.connect() as aconn:
            return await aconn.run_sync(fn, *args, **kw)

    @property
    def dialect(self) -> str:
        return self._async.dialect.name

    async def aclose(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()
        self._writer = self._reader = None
        if self._inline is not None:
            self._inline.dispose()
        if self._checkpointed is not None:
            _Checkpointer.release(self._checkpointed)
            self._checkpointed = None
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
