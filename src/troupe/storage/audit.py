"""The policy decision log: every decision, for audit, per tenant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from troupe.storage.database import Transactions
from troupe.storage.tables import policy_decisions


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    id: int
    tenant_id: str
    action: str
    allowed: bool
    require_approval: bool
    reason: str
    input_digest: str
    policy_version: str
    user_id: str | None
    task_id: str | None
    created_at: datetime


# Built once: building it per call re-derives its cache key every time.
_INSERT_DECISION = insert(policy_decisions)


class DecisionLog:
    def __init__(self, engine: AsyncEngine) -> None:
        self._tx = Transactions(engine)

    async def record(
        self,
        tenant_id: str,
        action: str,
        *,
        allowed: bool,
        require_approval: bool,
        reason: str,
        input_digest: str,
        policy_version: str,
        user_id: str | None = None,
        task_id: str | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "tenant_id": tenant_id,
            "action": action,
            "allowed": allowed,
            "require_approval": require_approval,
            "reason": reason,
            "input_digest": input_digest,
            "policy_version": policy_version,
            "user_id": user_id,
            "task_id": task_id,
            "created_at": datetime.now(UTC),
        }
        await self._tx.write(lambda conn: conn.execute(_INSERT_DECISION, values))

    async def page(
        self,
        tenant_id: str,
        *,
        action: str | None = None,
        allowed: bool | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[DecisionRecord]:
        """The tenant's decisions, newest first; ``before``: an id from a previous page."""
        query = select(policy_decisions).where(policy_decisions.c.tenant_id == tenant_id)
        if action is not None:
            query = query.where(policy_decisions.c.action == action)
        if allowed is not None:
            query = query.where(policy_decisions.c.allowed == allowed)
        if before is not None:
            query = query.where(policy_decisions.c.id < before)
        query = query.order_by(policy_decisions.c.id.desc()).limit(limit)
        rows = await self._tx.read(lambda conn: conn.execute(query).all())
        return [DecisionRecord(**row._mapping) for row in rows]

    async def aclose(self) -> None:
        await self._tx.aclose()
