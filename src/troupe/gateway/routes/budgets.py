"""/api/v1/budgets: the tenant's daily token budget today, and the per-task limits."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from fastapi import APIRouter

from troupe.gateway.deps import PrincipalDep, SettingsDep, StoreDep
from troupe.gateway.routes.tasks import ERRORS
from troupe.gateway.schemas import BudgetsView, DayBudgetView, TaskBudgetView

router = APIRouter(prefix="/api/v1/budgets", tags=["budgets"])


@router.get("", response_model=BudgetsView, responses=ERRORS)
async def budgets(principal: PrincipalDep, store: StoreDep, settings: SettingsDep) -> BudgetsView:
    """Today's tokens of the tenant (used, reserved by calls in flight, left) against its
    daily budget, which resets at midnight UTC; and what one task may ask for."""
    status = await store.day_budget(principal.tenant_id)
    day = date.fromisoformat(status.day)
    limit = status.limit
    return BudgetsView(
        tenant_daily=DayBudgetView(
            day=day,
            limit_tokens=limit,
            used_tokens=status.used,
            reserved_tokens=status.reserved,
            remaining_tokens=None
            if limit is None
            else max(0, limit - status.used - status.reserved),
            resets_at=datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC),
            alert_threshold=status.alert_threshold,
            alerting=limit is not None and status.used >= status.alert_threshold * limit,
        ),
        task=TaskBudgetView(
            default_token_budget=min(
                settings.tasks.default_token_budget, principal.limits.max_task_tokens
            ),
            max_token_budget=principal.limits.max_task_tokens,
        ),
    )
