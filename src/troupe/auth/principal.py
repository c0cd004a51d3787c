"""The principal a request acts for, and the limits that apply to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["admin", "member"]
ROLES: tuple[Role, ...] = ("admin", "member")


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits resolved for one principal: the tenant's own values over configuration;
    ``key_*`` None when the key has no limit of its own beyond the tenant's."""

    requests_per_s: float
    burst: int
    max_concurrent_tasks: int
    max_task_tokens: int
    max_task_micro_usd: int | None
    daily_tokens: int | None
    daily_micro_usd: int | None
    key_requests_per_s: float | None
    key_burst: int | None
    key_max_concurrent_tasks: int | None


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    role: Role
    via: Literal["api_key", "jwt"]
    limits: Limits
    # The tenant's plan: what the policy lets it use.
    plan: str = "standard"
    # A key's user, or a JWT's subject; None for a key that belongs to no user.
    user_id: str | None = None
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"
