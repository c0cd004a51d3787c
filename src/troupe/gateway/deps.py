"""FastAPI dependencies as Annotated aliases.

They are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a thread
pool, a thread hop per dependency per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from troupe.app import Services
from troupe.config import Settings
from troupe.errors import RateLimited
from troupe.orchestrator.launcher import TaskLauncher
from troupe.storage.repositories import SqlTaskStore

# Until authentication arrives every request acts for the embedded local tenant.
LOCAL_TENANT = "local"


async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(_services)]


async def _tenant(services: ServicesDep) -> str:
    """The tenant a request acts for, once it is within the tenant's request rate."""
    tenant = LOCAL_TENANT
    limits = services.settings.limits
    wait = await services.rate_limiter.take(
        f"tenant:{tenant}", rate=limits.requests_per_s, burst=limits.burst
    )
    if wait > 0:
        raise RateLimited(
            f"more than {limits.requests_per_s:g} requests per second "
            f"(burst {limits.burst}) for this tenant",
            retry_after_s=wait,
        )
    return tenant


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
