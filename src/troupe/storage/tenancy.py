"""Tenants, their users and API keys (operators manage them with ``troupe tenant|key``).

A key is returned in full once, by :meth:`TenantDirectory.create_key`; storage keeps
its public prefix and a hash (``troupe.auth.keys``). Authentication finds a key by its
prefix, with its tenant, in one query.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from troupe.auth.keys import new_key
from troupe.auth.principal import ROLES, Role
from troupe.errors import Conflict, InvalidInput, NotFound
from troupe.storage.database import Transactions
from troupe.storage.tables import api_keys, tenants, users

TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
TENANT_STATUSES = ("active", "suspended")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """A tenant's own limits; None keeps the configured default."""

    daily_tokens: int | None = None
    daily_micro_usd: int | None = None
    max_task_tokens: int | None = None
    max_task_micro_usd: int | None = None
    requests_per_s: float | None = None
    burst: int | None = None
    max_concurrent_tasks: int | None = None


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """A key's own limits, on top of its tenant's; None: none of its own."""

    requests_per_s: float | None = None
    burst: int | None = None
    max_concurrent_tasks: int | None = None


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    status: str
    created_at: datetime
    limits: TenantLimits
    plan: str = "standard"

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    tenant_id: str
    name: str
    role: Role
    prefix: str
    created_at: datetime
    limits: KeyLimits
    user_id: str | None = None
    user_name: str | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: ``secret`` is the whole key, shown once and never stored."""

    key: ApiKey
    secret: str


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key found by its prefix, with what authentication needs to judge it."""

    key: ApiKey
    secret_hash: str
    tenant: Tenant


class TenantDirectory:
    def __init__(self, engine: AsyncEngine) -> None:
        self._tx = Transactions(engine)

    async def aclose(self) -> None:
        await self._tx.aclose()

    async def create_tenant(
        self,
        tenant_id: str,
        *,
        name: str | None = None,
        limits: TenantLimits | None = None,
        plan: str = "standard",
    ) -> Tenant:
        """A new active tenant; Conflict (``tenant_exists``) when the id is taken."""
        if not TENANT_ID.match(tenant_id):
            raise InvalidInput(
                f"tenant id {tenant_id[:80]!r}: use 1-63 lowercase letters, digits and "
                "hyphens, starting with a letter or digit",
                code="tenant_id_invalid",
            )
        values = {
            "id": tenant_id,
            "name": name or tenant_id,
            "status": "active",
            "plan": plan,
            "created_at": _now(),
            **_limit_values(limits or TenantLimits()),
        }
        try:
            await self._tx.write(lambda conn: conn.execute(insert(tenants), values))
        except IntegrityError:
            raise Conflict(f"tenant {tenant_id} exists already", code="tenant_exists") from None
        return await self.get_tenant(tenant_id)

    async def get_tenant(self, tenant_id: str) -> Tenant:
        row = await self._tx.read(
            lambda conn: conn.execute(_TENANT, {"p_tenant": tenant_id}).one_or_none()
        )
        if row is None:
            raise NotFound(f"tenant {tenant_id} not found", code="tenant_not_found")
        return _tenant(row)

    async def list_tenants(self) -> list[Tenant]:
        query = select(tenants).order_by(tenants.c.id)
        return [_tenant(r) for r in await self._tx.read(lambda conn: list(conn.execute(query)))]

    async def update_tenant(
        self,
        tenant_id: str,
        *,
        status: str | None = None,
        limits: TenantLimits | None = None,
        plan: str | None = None,
    ) -> Tenant:
        """Change a tenant's status or plan, or set limits (the limits given replace the
        old)."""
        values: dict[str, Any] = {}
        if plan is not None:
            values["plan"] = plan
        if status is not None:
            if status not in TENANT_STATUSES:
                raise InvalidInput(
                    f"status must be one of {', '.join(TENANT_STATUSES)}", code="status_invalid"
                )
            values["status"] = status
        if limits is not None:
            values.update(_limit_values(limits))
        if values:
            statement = update(tenants).where(tenants.c.id == tenant_id).values(values)
            changed = await self._tx.write(lambda conn: conn.execute(statement).rowcount)
            if not changed:
                raise NotFound(f"tenant {tenant_id} not found", code="tenant_not_found")
        return await self.get_tenant(tenant_id)

    async def create_key(
        self,
        tenant_id: str,
        *,
        name: str,
        role: Role = "member",
        user: str | None = None,
        expires_at: datetime | None = None,
        limits: KeyLimits | None = None,
    ) -> IssuedKey:
        """A new key for the tenant (for ``user``, made on first use, if named)."""
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}", code="role_invalid")
        await self.get_tenant(tenant_id)
        secret, parts = new_key()
        values = {
            "id": "key_" + secrets.token_hex(10),
            "tenant_id": tenant_id,
            "name": name,
            "role": role,
            "prefix": parts.prefix,
            "secret_hash": parts.secret_hash,
            "created_at": _now(),
            "expires_at": expires_at,
            **_limit_values(limits or KeyLimits()),
        }
        await self._tx.write(_insert_key, values, user)
        return IssuedKey(key=await self._key(values["id"]), secret=secret)

    async def list_keys(self, tenant_id: str) -> list[ApiKey]:
        query = _KEYS.where(api_keys.c.tenant_id == tenant_id).order_by(api_keys.c.created_at)
        return [_key(r) for r in await self._tx.read(lambda conn: list(conn.execute(query)))]

    async def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key for good (revoking it again keeps the first time)."""
        statement = (
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=_now())
        )
        await self._tx.write(lambda conn: conn.execute(statement))
        return await self._key(key_id)

    async def key_by_prefix(self, prefix: str) -> KeyRecord | None:
        row = await self._tx.read(
            lambda conn: conn.execute(_KEY_BY_PREFIX, {"p_prefix": prefix}).one_or_none()
        )
        if row is None:
            return None
        return KeyRecord(key=_key(row), secret_hash=row.secret_hash, tenant=_tenant_of_key(row))

    async def _key(self, key_id: str) -> ApiKey:
        query = _KEYS.where(api_keys.c.id == key_id)
        row = await self._tx.read(lambda conn: conn.execute(query).one_or_none())
        if row is None:
            raise NotFound(f"key {key_id} not found", code="key_not_found")
        return _key(row)


_TENANT = select(tenants).where(tenants.c.id == bindparam("p_tenant"))
_KEYS = select(api_keys, users.c.name.label("user_name")).outerjoin(
    users, users.c.id == api_keys.c.user_id
)
_TENANT_COLUMNS = [c.label(f"t_{c.name}") for c in tenants.c]
_KEY_BY_PREFIX = (
    _KEYS.add_columns(*_TENANT_COLUMNS)
    .join(tenants, tenants.c.id == api_keys.c.tenant_id)
    .where(api_keys.c.prefix == bindparam("p_prefix"))
)


def _insert_key(conn: Connection, values: dict[str, Any], user: str | None) -> None:
    if user is not None:
        values = {**values, "user_id": _user_id(conn, values["tenant_id"], user, values["role"])}
    conn.execute(insert(api_keys), values)


def _user_id(conn: Connection, tenant_id: str, name: str, role: str) -> str:
    """The tenant's user of that name, made now if new."""
    found = conn.execute(
        select(users.c.id).where(users.c.tenant_id == tenant_id, users.c.name == name)
    ).scalar_one_or_none()
    if found is not None:
        return str(found)
    user_id = "usr_" + secrets.token_hex(10)
    conn.execute(
        insert(users),
        {"id": user_id, "tenant_id": tenant_id, "name": name, "role": role, "created_at": _now()},
    )
    return user_id


def _limit_values(limits: TenantLimits | KeyLimits) -> dict[str, Any]:
    return {f.name: getattr(limits, f.name) for f in fields(limits)}


def _tenant(row: Row[Any], prefix: str = "") -> Tenant:
    m = row._mapping
    return Tenant(
        id=m[prefix + "id"],
        name=m[prefix + "name"],
        status=m[prefix + "status"],
        created_at=m[prefix + "created_at"],
        plan=m[prefix + "plan"],
        limits=TenantLimits(**{f.name: m[prefix + f.name] for f in fields(TenantLimits)}),
    )


def _tenant_of_key(row: Row[Any]) -> Tenant:
    return _tenant(row, prefix="t_")


def _key(row: Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        role=row.role,
        prefix=row.prefix,
        created_at=row.created_at,
        limits=KeyLimits(**{f.name: getattr(row, f.name) for f in fields(KeyLimits)}),
        user_id=row.user_id,
        user_name=row.user_name,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )
