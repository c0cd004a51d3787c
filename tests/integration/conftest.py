"""Databases for integration tests: every storage test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from troupe.storage import database


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a brand-new empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'troupe.db'}"
        return
    server_url: str = request.getfixturevalue("postgres_url")
    name = "t_" + secrets.token_hex(6)
    admin = database.create_engine(server_url)
    async with admin.connect() as conn:
        await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(
            text(f"CREATE DATABASE {name}")
        )
    await admin.dispose()
    base, _, query = server_url.partition("?")
    yield f"{base.rsplit('/', 1)[0]}/{name}?{query}"
    admin = database.create_engine(server_url)
    async with admin.connect() as conn:
        await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(
            text(f"DROP DATABASE {name} WITH (FORCE)")
        )
    await admin.dispose()


@pytest.fixture
async def migrated_engine(empty_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = database.create_engine(empty_database_url)
    await database.upgrade(engine)
    yield engine
    await engine.dispose()
