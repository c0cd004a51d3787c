"""From an ``Authorization`` header to the principal a request acts for.

There is no anonymous access and no bypass: a request without valid credentials is
refused (401), whatever the deployment. Each refusal has its own code, so a client can
tell a typo from a revoked or expired key; "revoked" and "expired" are only said to a
caller who holds the whole key, so they reveal nothing to a guesser.
"""

from __future__ import annotations

from datetime import UTC, datetime

from troupe.auth.keys import KEY_SCHEME, parse_key, same_hash
from troupe.auth.principal import Limits, Principal
from troupe.auth.tokens import JwtVerifier
from troupe.config import Settings
from troupe.errors import Forbidden, NotFound, Unauthenticated
from troupe.storage.tenancy import KeyLimits, Tenant, TenantDirectory


class Authenticator:
    def __init__(
        self, directory: TenantDirectory, settings: Settings, jwt: JwtVerifier | None = None
    ) -> None:
        self._directory = directory
        self._settings = settings
        self._jwt = jwt

    @classmethod
    def from_settings(cls, directory: TenantDirectory, settings: Settings) -> Authenticator:
        jwt = JwtVerifier(settings.auth.jwt) if settings.auth.jwt.enabled else None
        return cls(directory, settings, jwt)

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated(
                "this endpoint needs credentials: send 'Authorization: Bearer <API key or token>'",
                code="auth_required",
            )
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated(
                "the Authorization header must be 'Bearer <API key or token>'",
                code="auth_malformed",
            )
        if credential.startswith(KEY_SCHEME):
            return await self._by_key(credential)
        if self._jwt is None:
            raise Unauthenticated(
                f"not an API key (they start with {KEY_SCHEME}); bearer tokens are not "
                "enabled on this server",
                code="auth_malformed",
            )
        return await self._by_token(credential, self._jwt)

    async def _by_key(self, key: str) -> Principal:
        parts = parse_key(key)
        if parts is None:
            raise Unauthenticated(
                f"malformed API key: expected {KEY_SCHEME}<12 hex digits>_<43 characters>",
                code="auth_malformed",
            )
        record = await self._directory.key_by_prefix(parts.prefix)
        if record is None or not same_hash(record.secret_hash, parts.secret_hash):
            raise Unauthenticated("the API key is not valid", code="auth_invalid")
        state = record.key.state(datetime.now(UTC))
        if state == "revoked":
            raise Unauthenticated("the API key has been revoked", code="auth_revoked")
        if state == "expired":
            raise Unauthenticated("the API key has expired", code="auth_expired")
        _require_active(record.tenant)
        return Principal(
            tenant_id=record.tenant.id,
            role=record.key.role,
            via="api_key",
            limits=self._limits(record.tenant, record.key.limits),
            plan=record.tenant.plan,
            user_id=record.key.user_id,
            key_id=record.key.id,
        )

    async def _by_token(self, token: str, verifier: JwtVerifier) -> Principal:
        claims = verifier.verify(token)
        try:
            tenant = await self._directory.get_tenant(claims.tenant_id)
        except NotFound:
            raise Unauthenticated(
                "the token names a tenant this server does not know", code="auth_invalid"
            ) from None
        _require_active(tenant)
        return Principal(
            tenant_id=tenant.id,
            role=claims.role,
            via="jwt",
            limits=self._limits(tenant, KeyLimits()),
            plan=tenant.plan,
            user_id=claims.subject,
        )

    def _limits(self, tenant: Tenant, key: KeyLimits) -> Limits:
        config = self._settings.limits
        own = tenant.limits
        key_rate = key.requests_per_s or config.key_requests_per_s
        return Limits(
            requests_per_s=own.requests_per_s or config.requests_per_s,
            burst=own.burst or config.burst,
            max_concurrent_tasks=own.max_concurrent_tasks or config.max_concurrent_tasks,
            max_task_tokens=own.max_task_tokens or self._settings.tasks.max_token_budget,
            max_task_micro_usd=own.max_task_micro_usd
            or self._settings.tasks.max_cost_budget_micro_usd,
            daily_tokens=own.daily_tokens or self._settings.budgets.tenant_daily_tokens,
            daily_micro_usd=own.daily_micro_usd or self._settings.budgets.tenant_daily_micro_usd,
            key_requests_per_s=key_rate,
            key_burst=(key.burst or config.key_burst or max(1, int(key_rate * 2)))
            if key_rate
            else None,
            key_max_concurrent_tasks=key.max_concurrent_tasks or config.key_max_concurrent_tasks,
        )


def _require_active(tenant: Tenant) -> None:
    if not tenant.active:
        raise Forbidden(f"tenant {tenant.id} is {tenant.status}", code="tenant_suspended")
