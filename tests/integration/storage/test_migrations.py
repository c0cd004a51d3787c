"""Migrations go up from empty and down to empty, and match the models, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from troupe.errors import ConfigError
from troupe.storage import database
from troupe.storage.tables import Base

pytestmark = pytest.mark.integration

TABLES = {
    "tenants",
    "users",
    "api_keys",
    "budget_reservations",
    "tenant_days",
    "tasks",
    "sessions",
    "events",
    "token_usage",
    "task_nodes",
}


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names()) - {"alembic_version"}


def _model_diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


async def test_upgrade_creates_every_table_and_downgrade_removes_them(
    empty_database_url: str,
) -> None:
    engine = database.create_engine(empty_database_url)
    try:
        await database.upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == TABLES
        assert await database.current_revision(engine) == database.head_revision()

        await database.downgrade(engine, "base")
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == set()
        assert await database.current_revision(engine) is None
    finally:
        await engine.dispose()


async def test_migrated_schema_matches_the_models(empty_database_url: str) -> None:
    engine = database.create_engine(empty_database_url)
    try:
        await database.upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_model_diff) == []
    finally:
        await engine.dispose()


def test_the_start_up_head_constant_is_the_scripts_head() -> None:
    assert database.head_revision() == database.SCHEMA_HEAD


async def test_ensure_current_schema_migrates_once(empty_database_url: str) -> None:
    engine = database.create_engine(empty_database_url)
    try:
        await database.ensure_current_schema(engine)
        assert await database.current_revision(engine) == database.SCHEMA_HEAD
        await database.ensure_current_schema(engine)  # already current: a no-op
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == TABLES
    finally:
        await engine.dispose()


async def test_unmigrated_database_is_refused_with_the_fix(empty_database_url: str) -> None:
    engine = database.create_engine(empty_database_url)
    try:
        with pytest.raises(ConfigError, match="troupe db upgrade"):
            await database.require_current_schema(engine)
    finally:
        await engine.dispose()
