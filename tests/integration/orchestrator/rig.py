"""The orchestrator test rig: a worker in this process on the real Temporal dev server,
a SQLite store and a launcher."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from troupe.app import build_sandbox, build_tools, connect_temporal
from troupe.config import Settings, load_settings
from troupe.domain import AgentStep, EventType, Strategy, Task, TaskEvent, TaskStatus
from troupe.llm.base import LLMProvider
from troupe.orchestrator.journal import TaskJournal
from troupe.orchestrator.launcher import TaskLauncher
from troupe.orchestrator.worker import build_worker
from troupe.storage import database
from troupe.storage.kv.memory import MemoryEventFanout
from troupe.storage.repositories import SqlTaskStore
from troupe.testing import routed

TENANT = "acme"


@dataclass
class Rig:
    engine: AsyncEngine
    store: SqlTaskStore
    launcher: TaskLauncher

    async def submit(
        self,
        query: str = "what is 2+2?",
        *,
        budget: int = 5000,
        strategy: Strategy = Strategy.SIMPLE,
        require_approval: bool = False,
    ) -> Task:
        return await self.launcher.submit(
            tenant_id=TENANT,
            query=query,
            session_id=None,
            strategy=strategy,
            token_budget=budget,
            require_approval=require_approval,
        )

    async def until_ended(self, task_id: str, timeout_s: float = 30) -> Task:
        async with asyncio.timeout(timeout_s):
            while not (task := await self.store.get_task(TENANT, task_id)).status.terminal:
                await asyncio.sleep(0.02)
        return task

    async def until_status(self, task_id: str, status: TaskStatus) -> None:
        async with asyncio.timeout(30):
            while (await self.store.get_task(TENANT, task_id)).status is not status:
                await asyncio.sleep(0.02)

    async def events(self, task_id: str) -> list[TaskEvent]:
        return list(await self.store.events_after(TENANT, task_id, 0))

    async def steps(self, task_id: str) -> list[AgentStep]:
        return await self.store.agent_steps(TENANT, task_id)

    async def event_types(self, task_id: str) -> list[EventType]:
        return [e.type for e in await self.events(task_id)]


# A rig for a provider, with optional settings overrides (e.g. orchestrator={...}).
RigFactory = Callable[..., AbstractAsyncContextManager[Rig]]


@pytest.fixture
def rig(temporal_address: str, tmp_path: Path) -> RigFactory:
    """A worker on its own task queue, a SQLite store, and a launcher; built per provider."""

    @asynccontextmanager
    async def build(provider: LLMProvider, **overrides: Any) -> AsyncIterator[Rig]:
        settings: Settings = load_settings(
            None,
            data_dir=str(tmp_path),
            temporal={"task_queue": f"test-{secrets.token_hex(4)}"},
            # A cancel reaches a running local step within 0.8 s.
            tasks={"max_attempts": 2, "heartbeat_timeout_s": 1, "workflow_task_timeout_s": 1},
            # A provider error reaches Temporal at once: these tests are about the
            # orchestrator's retries; the router's own have tests of their own.
            llm={"retry": {"attempts": 1}, **overrides.pop("llm", {})},
            # The workflow code runs under the sandbox's determinism checks here.
            orchestrator={"workflow_sandbox": True, **overrides.pop("orchestrator", {})},
            **overrides,
        )
        engine = database.create_engine(settings.database_url)
        await database.upgrade(engine)
        store = SqlTaskStore(engine)
        fanout = MemoryEventFanout()
        journal = TaskJournal(store, fanout)
        client = await connect_temporal(temporal_address, namespace="default", timeout_s=10)
        launcher = TaskLauncher(
            client=client, store=store, journal=journal, fanout=fanout, settings=settings
        )
        sandbox = build_sandbox(settings)
        worker = build_worker(
            client,
            settings,
            router=routed(provider, settings.llm),
            journal=journal,
            tools=build_tools(settings, sandbox),
        )
        try:
            async with worker:
                yield Rig(engine=engine, store=store, launcher=launcher)
        finally:
            await sandbox.aclose()
            await store.aclose()

    return build
