"""The enforcement side of policies: ask, count, log for audit, and refuse.

Every enforcement point (the gateway's submit and session access, an agent's tool call
and model choice, the planner's approval check) calls :meth:`Authorizer.require`. A
denial raises :class:`PolicyDenied` with the policy's reason; every decision is counted
(``troupe_policy_decisions_total``) and stored in the decision log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from troupe.domain import Actor
from troupe.observability import metrics
from troupe.policy.base import Action, Decision, PolicyDenied, PolicyEngine, input_digest
from troupe.storage.audit import DecisionLog

# Told of a denial on a task (to write its policy.denied event): (who, task id, action,
# the policy's reason).
DenialSink = Callable[[Actor, str, str, str], Awaitable[None]]


class Authorizer:
    def __init__(
        self,
        engine: PolicyEngine,
        log: DecisionLog | None = None,
        *,
        on_denied: DenialSink | None = None,
    ) -> None:
        self._engine = engine
        self._log = log
        self._on_denied = on_denied

    async def require(
        self,
        action: Action,
        actor: Actor,
        request: dict[str, Any],
        *,
        task_id: str | None = None,
    ) -> Decision:
        """The decision when it allows (maybe with approval); PolicyDenied otherwise."""
        document = {**actor.facts(), "request": request}
        decision = await self._engine.decide(action, document)
        result = (
            "deny" if not decision.allow else ("approval" if decision.require_approval else "allow")
        )
        metrics.POLICY_DECISIONS.labels(action=action, result=result).inc()
        if self._log is not None:
            await self._log.record(
                actor.tenant_id,
                action,
                allowed=decision.allow,
                require_approval=decision.require_approval,
                reason=decision.reason,
                input_digest=input_digest({"action": action, **document}),
                policy_version=decision.policy_version,
                user_id=actor.user_id,
                task_id=task_id,
            )
        if not decision.allow:
            if task_id is not None and self._on_denied is not None:
                await self._on_denied(actor, task_id, action, decision.reason)
            raise PolicyDenied(action, decision.reason)
        return decision

    async def aclose(self) -> None:
        await self._engine.aclose()
