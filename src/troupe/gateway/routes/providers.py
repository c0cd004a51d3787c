"""/api/v1/providers: the model providers, their circuit breakers, and the tiers."""

from __future__ import annotations

from fastapi import APIRouter

from troupe.gateway.deps import ServicesDep, TenantDep
from troupe.gateway.routes.tasks import ERRORS
from troupe.gateway.schemas import ProvidersView, ProviderView, TierCandidateView

router = APIRouter(prefix="/api/v1/providers", tags=["providers"])


@router.get("", response_model=ProvidersView, responses=ERRORS)
async def list_providers(services: ServicesDep, _tenant: TenantDep) -> ProvidersView:
    """Every provider's breaker state as this process sees it (in `troupe serve` that is
    the worker's own view; a separate API process only sees its own calls: none), and
    the candidates of each tier in priority order. Keys are never shown."""
    llm = services.settings.llm
    return ProvidersView(
        providers=[
            ProviderView(
                name=status.name,
                kind=status.kind,
                breaker=status.breaker,
                recent_failures=status.recent_failures,
                healthy=status.breaker == "closed",
            )
            for status in services.router.statuses()
        ],
        tiers={
            tier: [
                TierCandidateView(
                    provider=c.provider, model=c.model, priority=c.priority, weight=c.weight
                )
                for c in sorted(candidates, key=lambda c: c.priority)
            ]
            for tier, candidates in llm.tiers.items()
        },
        fallback_to_lower_tier=llm.fallback_to_lower_tier,
    )
