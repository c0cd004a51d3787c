"""Databases for integration tests: every storage test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.servers import create_database, drop_database
from troupe.storage import database


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a brand-new empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'troupe.db'}"
        return
    server_url: str = request.getfixturevalue("postgres_url")
    url = await create_database(server_url)
    yield url
    await drop_database(url, server_url)


@pytest.fixture
async def migrated_engine(empty_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = database.create_engine(empty_database_url)
    await database.upgrade(engine)
    yield engine
    await engine.dispose()
