"""/api/v1/policy/decisions: the tenant's policy decision log (admins only)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from troupe.errors import Forbidden
from troupe.gateway.deps import PrincipalDep, ServicesDep
from troupe.gateway.routes.tasks import ERRORS
from troupe.gateway.schemas import DecisionPageView, DecisionView
from troupe.policy.base import Action

router = APIRouter(prefix="/api/v1/policy", tags=["policy"])


@router.get("/decisions", response_model=DecisionPageView, responses=ERRORS)
async def decisions(
    principal: PrincipalDep,
    services: ServicesDep,
    action: Action | None = None,
    allowed: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> DecisionPageView:
    """The tenant's policy decisions, newest first: what was asked (a digest of the
    input), what the policy version in force answered, for whom. Admins only."""
    if not principal.is_admin:
        raise Forbidden("only an admin key or token may read the decision log", code="admin_only")
    rows = await services.decisions.page(
        principal.tenant_id,
        action=action,
        allowed=allowed,
        limit=limit + 1,
        before=int(cursor) if cursor else None,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    items = [DecisionView(**{k: v for k, v in asdict(r).items() if k != "tenant_id"}) for r in rows]
    return DecisionPageView(items=items, next_cursor=str(rows[-1].id) if more else None)
