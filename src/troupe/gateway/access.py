"""The gateway's policy checks: submitting a task, and reaching a session's tasks."""

from __future__ import annotations

from typing import Literal

from troupe.app import Services
from troupe.auth.principal import Principal
from troupe.domain import Actor

SessionOperation = Literal["read", "write", "stream", "replay", "cancel"]


def actor_of(principal: Principal) -> Actor:
    return Actor(
        tenant_id=principal.tenant_id,
        plan=principal.plan,
        user_id=principal.user_id,
        role=principal.role,
    )


async def check_session(
    services: Services,
    principal: Principal,
    session_id: str | None,
    operation: SessionOperation,
) -> bool:
    """PolicyDenied unless the caller may ``operation`` the session (nothing to check
    for no session, or one not begun yet: the caller will own it). True when the
    tenant has the session."""
    if session_id is None:
        return False
    owner = await services.store.session_owner(principal.tenant_id, session_id)
    if owner is None:
        return False
    session = {"id": session_id, "tenant": principal.tenant_id, "owner": owner.user_id}
    await services.authorizer.require(
        "session.access",
        actor_of(principal),
        {"operation": operation, "session": session},
    )
    return True
