"""/api/v1/budgets: the tenant's daily budget today, and the task and session limits."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from fastapi import APIRouter

from troupe.gateway.deps import PrincipalDep, ServicesDep, SettingsDep
from troupe.gateway.limits import default_budgets, today_budget
from troupe.gateway.routes.tasks import ERRORS
from troupe.gateway.schemas import (
    BudgetsView,
    DayBudgetView,
    SessionBudgetView,
    TaskBudgetView,
)

router = APIRouter(prefix="/api/v1/budgets", tags=["budgets"])


@router.get("", response_model=BudgetsView, responses=ERRORS)
async def budgets(
    principal: PrincipalDep, services: ServicesDep, settings: SettingsDep
) -> BudgetsView:
    """Today's tokens and money of the tenant (used, reserved by calls in flight, left)
    against its daily limits, which reset at midnight UTC; and what one task, one plan
    node and one session may use."""
    status = await services.journal.day_status(principal.tenant_id, today_budget(principal))
    day = date.fromisoformat(status.day)
    defaults = default_budgets(principal, settings.tasks.default_token_budget, settings)
    return BudgetsView(
        tenant_daily=DayBudgetView(
            day=day,
            limit_tokens=status.limit_tokens,
            used_tokens=status.used_tokens,
            reserved_tokens=status.reserved_tokens,
            remaining_tokens=_left(status.limit_tokens, status.used_tokens, status.reserved_tokens),
            limit_micro_usd=status.limit_micro_usd,
            used_micro_usd=status.used_micro_usd,
            reserved_micro_usd=status.reserved_micro_usd,
            remaining_micro_usd=_left(
                status.limit_micro_usd, status.used_micro_usd, status.reserved_micro_usd
            ),
            resets_at=datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC),
            alert_threshold=status.alert_threshold,
            alerting=(status.utilization or 0) >= status.alert_threshold,
        ),
        task=TaskBudgetView(
            default_token_budget=defaults.task_tokens,
            max_token_budget=principal.limits.max_task_tokens,
            default_cost_budget_micro_usd=defaults.task_micro_usd,
            max_cost_budget_micro_usd=principal.limits.max_task_micro_usd,
            default_node_token_budget=defaults.node_tokens,
        ),
        session=SessionBudgetView(
            tokens=settings.budgets.session_tokens, micro_usd=settings.budgets.session_micro_usd
        ),
    )


def _left(limit: int | None, used: int, reserved: int) -> int | None:
    return None if limit is None else max(0, limit - used - reserved)
