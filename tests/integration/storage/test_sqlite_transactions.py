"""How the store's transactions reach an embedded SQLite file: kept-open connections
that still see every commit, roll back what fails, and a checkpointer thread that
moves the WAL into the database while the connections stay open."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from troupe.storage import database
from troupe.storage.database import Transactions

pytestmark = pytest.mark.integration


@pytest.fixture
async def db_file(tmp_path: Path) -> Path:
    path = tmp_path / "t.db"
    engine = database.create_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    await engine.dispose()
    return path


def _insert(conn: Connection, value: str) -> None:
    conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value})


def _values(conn: Connection) -> list[str]:
    return list(conn.execute(text("SELECT v FROM t ORDER BY id")).scalars())


def _driver_insert(conn: Connection | sqlite3.Connection, value: str) -> None:
    assert isinstance(conn, sqlite3.Connection)  # write_lean on SQLite: the driver's
    conn.execute("INSERT INTO t (v) VALUES (?)", (value,))


def _driver_insert_then_fail(conn: Connection | sqlite3.Connection) -> None:
    _driver_insert(conn, "lost")
    raise RuntimeError("boom")


async def test_each_read_sees_the_latest_commit_of_any_writer(db_file: Path) -> None:
    url = f"sqlite+aiosqlite:///{db_file}"
    first, second = (Transactions(database.create_engine(url)) for _ in range(2))
    try:
        for n in range(3):
            await first.write(_insert, f"v{n}")
            # The reader's connection stays open between reads: no snapshot may linger.
            assert await second.read(_values) == [f"v{i}" for i in range(n + 1)]
            assert await first.read(_values) == [f"v{i}" for i in range(n + 1)]
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_failed_transaction_leaves_nothing_and_the_next_one_works(db_file: Path) -> None:
    tx = Transactions(database.create_engine(f"sqlite+aiosqlite:///{db_file}"))
    try:

        def insert_then_fail(conn: Connection) -> None:
            _insert(conn, "lost")
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            await tx.write(insert_then_fail)
        with pytest.raises(RuntimeError):
            await tx.write_lean(_driver_insert_then_fail)
        await tx.write(_insert, "kept")
        await tx.write_lean(_driver_insert, "driver")
        assert await tx.read(_values) == ["kept", "driver"]
    finally:
        await tx.aclose()


async def test_the_wal_is_checkpointed_while_the_connections_stay_open(db_file: Path) -> None:
    tx = Transactions(database.create_engine(f"sqlite+aiosqlite:///{db_file}"))
    try:
        before = db_file.stat().st_size
        for n in range(200):  # new pages: the database file grows only by a checkpoint
            await tx.write(_insert, "x" * 2000 + str(n))
        async with asyncio.timeout(5):
            while db_file.stat().st_size <= before:
                await asyncio.sleep(0.05)
        assert len(await tx.read(_values)) == 200
    finally:
        await tx.aclose()
    assert str(db_file) not in database._Checkpointer._running  # the last user stopped it
