"""Bearer JWTs from an identity provider (``auth.jwt``), verified with PyJWT.

A token must be signed with the configured algorithm and key, carry ``exp``, match the
configured issuer and audience (when set), and name its tenant in ``tenant_claim``.
HS256's secret is read from the environment variable ``secret_env`` names, never from
the configuration; RS256 reads the identity provider's public key from a PEM file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from troupe.auth.principal import Role
from troupe.config import JwtSettings
from troupe.errors import ConfigError, Unauthenticated


@dataclass(frozen=True, slots=True)
class TokenClaims:
    tenant_id: str
    subject: str | None
    role: Role


class JwtVerifier:
    def __init__(self, settings: JwtSettings, environ: Mapping[str, str] = os.environ) -> None:
        self._settings = settings
        self._key = _verification_key(settings, environ)

    def verify(self, token: str) -> TokenClaims:
        """The claims of a valid token; Unauthenticated saying what is wrong otherwise."""
        s = self._settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[s.algorithm],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"require": ["exp"], "verify_aud": s.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired", code="auth_expired") from None
        except jwt.InvalidTokenError as exc:
            # PyJWT's messages name the failed check, never the key or the token.
            raise Unauthenticated(f"the token is not valid: {exc}", code="auth_invalid") from None
        tenant = claims.get(s.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise Unauthenticated(
                f"the token has no {s.tenant_claim!r} claim naming its tenant",
                code="auth_invalid",
            )
        roles = claims.get(s.roles_claim) or []
        role: Role = "admin" if isinstance(roles, list) and "admin" in roles else "member"
        subject = claims.get("sub")
        return TokenClaims(
            tenant_id=tenant, subject=subject if isinstance(subject, str) else None, role=role
        )


def _verification_key(settings: JwtSettings, environ: Mapping[str, str]) -> str:
    if settings.algorithm == "RS256":
        assert settings.public_key_file is not None  # the settings validate this
        try:
            return settings.public_key_file.read_text()
        except OSError as exc:
            raise ConfigError(
                f"auth.jwt.public_key_file {settings.public_key_file}: cannot read it "
                f"({exc.strerror})"
            ) from None
    secret = environ.get(settings.secret_env)
    if not secret:
        raise ConfigError(
            f"auth.jwt is enabled with HS256 but {settings.secret_env} is not set: "
            "put the shared secret there (auth.jwt.secret_env names the variable)"
        )
    if len(secret) < 32:
        raise ConfigError(f"{settings.secret_env}: an HS256 secret needs at least 32 characters")
    return secret
