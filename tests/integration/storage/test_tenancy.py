"""Tenants, users and keys in storage, and authentication over them, on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from troupe.auth.authenticator import Authenticator
from troupe.config import Settings
from troupe.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from troupe.storage.tenancy import KeyLimits, TenantDirectory, TenantLimits

pytestmark = pytest.mark.integration


@pytest.fixture
async def directory(migrated_engine: AsyncEngine) -> AsyncIterator[TenantDirectory]:
    d = TenantDirectory(migrated_engine)
    yield d
    await d.aclose()


async def test_tenants_are_created_once_and_listed(directory: TenantDirectory) -> None:
    acme = await directory.create_tenant("acme", name="Acme", limits=TenantLimits(burst=7))
    await directory.create_tenant("globex")
    assert (acme.name, acme.status, acme.limits.burst) == ("Acme", "active", 7)
    assert acme.limits.daily_tokens is None
    with pytest.raises(Conflict) as taken:
        await directory.create_tenant("acme")
    assert taken.value.code == "tenant_exists"
    with pytest.raises(InvalidInput):
        await directory.create_tenant("Not Valid!")
    assert [t.id for t in await directory.list_tenants()] == ["acme", "globex"]
    with pytest.raises(NotFound):
        await directory.get_tenant("initech")


async def test_a_key_is_found_by_its_prefix_and_only_its_hash_is_stored(
    directory: TenantDirectory, migrated_engine: AsyncEngine
) -> None:
    await directory.create_tenant("acme")
    issued = await directory.create_key("acme", name="ci", role="admin", user="alice")
    prefix = issued.secret.split("_")[1]
    record = await directory.key_by_prefix(prefix)
    assert record is not None
    assert (record.key.id, record.key.role, record.key.user_name) == (
        issued.key.id,
        "admin",
        "alice",
    )
    assert record.tenant.id == "acme"
    assert await directory.key_by_prefix("0" * 12) is None
    # The same user gets a second key; the user is not duplicated.
    second = await directory.create_key("acme", name="laptop", user="alice")
    assert second.key.user_id == issued.key.user_id
    # Nothing in the database holds the key itself.
    async with migrated_engine.connect() as conn:
        rows = (await conn.exec_driver_sql("SELECT * FROM api_keys")).all()
    assert rows
    assert not any(issued.secret in str(value) for row in rows for value in row)


async def test_revoked_expired_and_suspended_are_refused_with_their_own_codes(
    directory: TenantDirectory,
) -> None:
    await directory.create_tenant("acme")
    auth = Authenticator(directory, Settings())
    live = await directory.create_key("acme", name="live", limits=KeyLimits(requests_per_s=5))
    revoked = await directory.create_key("acme", name="old")
    expired = await directory.create_key(
        "acme", name="temp", expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    await directory.revoke_key(revoked.key.id)

    principal = await auth.authenticate(f"Bearer {live.secret}")
    assert (principal.tenant_id, principal.key_id, principal.via) == (
        "acme",
        live.key.id,
        "api_key",
    )
    assert principal.limits.key_requests_per_s == 5
    assert principal.limits.key_burst == 10

    wrong_secret = live.secret[:-4] + ("AAAA" if not live.secret.endswith("AAAA") else "BBBB")
    for header, code in [
        (None, "auth_required"),
        ("Basic abc", "auth_malformed"),
        ("Bearer ", "auth_malformed"),
        ("Bearer trp_nope", "auth_malformed"),
        ("Bearer eyJhbGciOi.x.y", "auth_malformed"),  # JWTs are off by default
        (f"Bearer {wrong_secret}", "auth_invalid"),
        (f"Bearer {revoked.secret}", "auth_revoked"),
        (f"Bearer {expired.secret}", "auth_expired"),
    ]:
        with pytest.raises(Unauthenticated) as refused:
            await auth.authenticate(header)
        assert refused.value.code == code, header

    await directory.update_tenant("acme", status="suspended")
    with pytest.raises(Forbidden) as suspended:
        await auth.authenticate(f"Bearer {live.secret}")
    assert suspended.value.code == "tenant_suspended"


async def test_a_tenants_own_limits_replace_the_configured_ones(
    directory: TenantDirectory,
) -> None:
    await directory.create_tenant("small", limits=TenantLimits(requests_per_s=2, burst=3))
    await directory.create_tenant("default")
    settings = Settings()
    auth = Authenticator(directory, settings)
    small = await auth.authenticate(
        f"Bearer {(await directory.create_key('small', name='k')).secret}"
    )
    default = await auth.authenticate(
        f"Bearer {(await directory.create_key('default', name='k')).secret}"
    )
    assert (small.limits.requests_per_s, small.limits.burst) == (2, 3)
    assert default.limits.requests_per_s == settings.limits.requests_per_s
    assert default.limits.key_requests_per_s is None  # no per-key limit configured
    updated = await directory.update_tenant(
        "small", limits=TenantLimits(max_task_tokens=500, daily_tokens=1000)
    )
    assert (updated.limits.max_task_tokens, updated.limits.requests_per_s) == (500, None)
