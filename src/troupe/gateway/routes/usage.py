"""/api/v1/usage: what the tenant's model calls used and cost, by day, model, session."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from troupe.errors import InvalidInput
from troupe.gateway.deps import StoreDep, TenantDep
from troupe.gateway.routes.tasks import ERRORS
from troupe.gateway.schemas import (
    DayUsageView,
    ModelUsageView,
    SessionUsageView,
    UsageLineView,
    UsageReportView,
)
from troupe.storage.repositories import UsageLine

router = APIRouter(prefix="/api/v1/usage", tags=["usage"])

DEFAULT_DAYS = 30
MAX_DAYS = 366


@router.get("", response_model=UsageReportView, responses=ERRORS)
async def usage(
    tenant: TenantDep,
    store: StoreDep,
    since: Annotated[
        date | None, Query(description=f"First UTC day (default: {DEFAULT_DAYS} days back)")
    ] = None,
    until: Annotated[date | None, Query(description="Last UTC day (default: today)")] = None,
) -> UsageReportView:
    """Every metered call of the tenant from `since` to `until` (UTC days, both included),
    with the tokens and cost its provider reported (prompt cache hits count as calls, at
    zero tokens)."""
    last = until or datetime.now(UTC).date()
    first = since or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise InvalidInput(f"since ({first}) is after until ({last})", code="invalid_range")
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidInput(
            f"{(last - first).days + 1} days asked; at most {MAX_DAYS} at once",
            code="invalid_range",
        )
    summary = await store.usage_summary(tenant, first, last)
    return UsageReportView(
        since=first,
        until=last,
        total=UsageLineView(**_measures(summary.total)),
        by_day=[DayUsageView(day=str(x.key[0]), **_measures(x)) for x in summary.by_day],
        by_model=[
            ModelUsageView(provider=str(x.key[0]), model=str(x.key[1]), **_measures(x))
            for x in summary.by_model
        ],
        by_session=[
            SessionUsageView(session_id=x.key[0], **_measures(x)) for x in summary.by_session
        ],
    )


def _measures(line: UsageLine) -> dict[str, int]:
    return {
        "calls": line.calls,
        "cache_hits": line.cache_hits,
        "prompt_tokens": line.prompt_tokens,
        "completion_tokens": line.completion_tokens,
        "total_tokens": line.prompt_tokens + line.completion_tokens,
        "cost_micro_usd": line.cost_micro_usd,
    }
