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
    "messages",
    "users",
    "api_keys",
    "budget_reservations",
    "budget_counters",
    "policy_decisions",
    "tasks",
    "sessions",
    "events",
    "token_usage",
    "task_nodes",
    "agent_steps",
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


async def test_budgets_in_flight_carry_over_into_counters(empty_database_url: str) -> None:
    """0007: an unfinished task's use and reservation, and its tenant's day, become
    counters; the reservation still settles exactly once afterwards."""
    from datetime import UTC, datetime

    from troupe.domain import Usage
    from troupe.storage.repositories import LLMCallRecord, SqlTaskStore, day_counter

    engine = database.create_engine(empty_database_url)
    day = datetime.now(UTC).date().isoformat()
    now = datetime.now(UTC).isoformat(sep=" ")
    try:
        await database.upgrade(engine, "0006")
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO tasks (id, tenant_id, query, strategy, status, token_budget, "
                "prompt_tokens, completion_tokens, cost_micro_usd, workflow_id, "
                "reserved_tokens, event_seq, created_at) VALUES ('tsk_1', 'acme', 'q', "
                f"'simple', 'running', 1000, 100, 20, 7, 'task-tsk_1', 300, 0, '{now}')"
            )
            await conn.exec_driver_sql(
                "INSERT INTO tenant_days (tenant_id, day, used_tokens, reserved_tokens) "
                f"VALUES ('acme', '{day}', 120, 300)"
            )
            await conn.exec_driver_sql(
                "INSERT INTO budget_reservations (call_key, task_id, tenant_id, tokens, day, "
                f"created_at) VALUES ('k1', 'tsk_1', 'acme', 300, '{day}', '{now}')"
            )
        await database.upgrade(engine)
        store = SqlTaskStore(engine)
        status = await store.day_budget("acme")
        assert (status.used_tokens, status.reserved_tokens) == (120, 300)
        call = LLMCallRecord(
            call_key="k1",
            provider="simulation",
            model="sim-small",
            usage=Usage(prompt_tokens=200, completion_tokens=50, cost_micro_usd=3),
            cached_tokens=0,
            latency_ms=1,
        )
        assert await store.record_llm_call("acme", "tsk_1", call)
        status = await store.day_budget("acme")
        assert (status.used_tokens, status.reserved_tokens) == (370, 0)
        async with engine.connect() as conn:
            task_counter = (
                await conn.exec_driver_sql(
                    "SELECT used_tokens, reserved_tokens FROM budget_counters "
                    "WHERE id = 'task:tsk_1'"
                )
            ).one()
        assert tuple(task_counter) == (370, 0)
        assert day_counter("acme", day) == f"day:acme:{day}"
    finally:
        await engine.dispose()
