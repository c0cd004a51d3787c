"""FastAPI dependencies as Annotated aliases.

They are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a thread
pool, a thread hop per dependency per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from troupe.app import Services
from troupe.auth.principal import Principal
from troupe.config import Settings
from troupe.errors import RateLimited
from troupe.orchestrator.launcher import TaskLauncher
from troupe.storage.repositories import SqlTaskStore


async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(_services)]


async def _principal(
    services: ServicesDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    """Who the request acts for, once authenticated and within its request rates."""
    principal = await services.authenticator.authenticate(authorization)
    limits = principal.limits
    await _take(services, f"tenant:{principal.tenant_id}", limits.requests_per_s, limits.burst)
    if principal.key_id is not None and limits.key_requests_per_s is not None:
        assert limits.key_burst is not None
        await _take(
            services, f"key:{principal.key_id}", limits.key_requests_per_s, limits.key_burst
        )
    return principal


async def _take(services: Services, bucket: str, rate: float, burst: int) -> None:
    wait = await services.rate_limiter.take(bucket, rate=rate, burst=burst)
    if wait > 0:
        who = "this tenant" if bucket.startswith("tenant:") else "this API key"
        raise RateLimited(
            f"more than {rate:g} requests per second (burst {burst}) for {who}",
            retry_after_s=wait,
        )


PrincipalDep = Annotated[Principal, Depends(_principal)]


async def _tenant(principal: PrincipalDep) -> str:
    return principal.tenant_id


# The tenant of the authenticated caller: every read and write is scoped to it.
TenantDep = Annotated[str, Depends(_tenant)]


async def _store(services: ServicesDep) -> SqlTaskStore:
    return services.store


async def _launcher(services: ServicesDep) -> TaskLauncher:
    return services.launcher


async def _settings(services: ServicesDep) -> Settings:
    return services.settings


StoreDep = Annotated[SqlTaskStore, Depends(_store)]
LauncherDep = Annotated[TaskLauncher, Depends(_launcher)]
SettingsDep = Annotated[Settings, Depends(_settings)]
