"""The budgets a request's task gets: its own asks within the caller's limits."""

from __future__ import annotations

from datetime import UTC, datetime

from troupe.auth.principal import Principal
from troupe.config import Settings
from troupe.domain import TaskBudgets
from troupe.errors import InvalidInput
from troupe.storage.ledger import Budget
from troupe.storage.repositories import day_counter


def today_budget(principal: Principal) -> Budget:
    """The caller's tenant's budget for the current UTC day, with its limits."""
    today = datetime.now(UTC).date().isoformat()
    limits = principal.limits
    return Budget(
        day_counter(principal.tenant_id, today), limits.daily_tokens, limits.daily_micro_usd
    )


def default_budgets(principal: Principal, token_budget: int, settings: Settings) -> TaskBudgets:
    """The budgets of a task whose request names only ``token_budget`` (or nothing)."""
    limits = principal.limits
    cost = settings.tasks.default_cost_budget_micro_usd
    if cost is not None and limits.max_task_micro_usd is not None:
        cost = min(cost, limits.max_task_micro_usd)
    task_tokens = min(token_budget, limits.max_task_tokens)
    node = settings.budgets.node_tokens
    return TaskBudgets(
        task_tokens=task_tokens,
        task_micro_usd=cost,
        node_tokens=min(node, task_tokens) if node is not None else None,
        session_tokens=settings.budgets.session_tokens,
        session_micro_usd=settings.budgets.session_micro_usd,
        day_tokens=limits.daily_tokens,
        day_micro_usd=limits.daily_micro_usd,
    )


def requested_budgets(
    principal: Principal,
    settings: Settings,
    *,
    token_budget: int | None,
    cost_budget_micro_usd: int | None,
    node_token_budget: int | None,
) -> TaskBudgets:
    """A task's budgets: what the request asks for, never above the tenant's caps (422
    ``budget_too_large`` when it asks for more), the defaults for the rest."""
    limits = principal.limits
    if token_budget is not None and token_budget > limits.max_task_tokens:
        raise InvalidInput(
            f"token_budget {token_budget} exceeds this tenant's maximum of "
            f"{limits.max_task_tokens}",
            code="budget_too_large",
        )
    cost_cap = limits.max_task_micro_usd
    if (
        cost_budget_micro_usd is not None
        and cost_cap is not None
        and cost_budget_micro_usd > cost_cap
    ):
        raise InvalidInput(
            f"cost_budget_micro_usd {cost_budget_micro_usd} exceeds this tenant's maximum "
            f"of {cost_cap}",
            code="budget_too_large",
        )
    budgets = default_budgets(
        principal, token_budget or settings.tasks.default_token_budget, settings
    )
    if node_token_budget is not None and node_token_budget > budgets.task_tokens:
        raise InvalidInput(
            f"node_token_budget {node_token_budget} exceeds the task's token_budget "
            f"{budgets.task_tokens}",
            code="budget_too_large",
        )
    changes: dict[str, int] = {}
    if cost_budget_micro_usd is not None:
        changes["task_micro_usd"] = cost_budget_micro_usd
    if node_token_budget is not None:
        changes["node_tokens"] = node_token_budget
    return budgets.model_copy(update=changes)
