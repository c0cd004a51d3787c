"""API key format and JWT verification, without a server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from troupe.auth.keys import hash_key, new_key, parse_key
from troupe.auth.tokens import JwtVerifier
from troupe.config import JwtSettings
from troupe.errors import ConfigError, Unauthenticated

SECRET = "s" * 40
ENV = {"TROUPE_JWT_SECRET": SECRET}


def test_a_new_key_parses_back_to_its_stored_parts() -> None:
    key, parts = new_key()
    assert key.startswith(f"trp_{parts.prefix}_")
    assert parse_key(key) == parts
    assert parts.secret_hash == hash_key(key)
    assert key not in parts.secret_hash


def test_keys_are_unique() -> None:
    issued = [new_key() for _ in range(200)]
    assert len({key for key, _ in issued}) == 200
    assert len({parts.prefix for _, parts in issued}) == 200


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "trp_",
        "trp_0123456789ab",
        "trp_0123456789ab_short",
        "trp_0123456789AB_" + "a" * 43,  # the prefix is lowercase hex
        "trp_0123456789ab_" + "a" * 44,
        "trp_0123456789ab_" + "a" * 42 + "!",
        "sk-0123456789ab_" + "a" * 43,
    ],
)
def test_malformed_keys_do_not_parse(bad: str) -> None:
    assert parse_key(bad) is None


def _hs256(**claims: Any) -> str:
    # Long-lived: the parametrized cases are made at collection, minutes before they run.
    return jwt.encode({"exp": int(time.time()) + 86400, **claims}, SECRET, algorithm="HS256")


def test_a_valid_hs256_token_names_tenant_subject_and_role() -> None:
    verifier = JwtVerifier(JwtSettings(enabled=True), ENV)
    claims = verifier.verify(_hs256(tenant="acme", sub="alice", roles=["admin", "x"]))
    assert (claims.tenant_id, claims.subject, claims.role) == ("acme", "alice", "admin")
    assert verifier.verify(_hs256(tenant="acme")).role == "member"


@pytest.mark.parametrize(
    ("token", "code", "words"),
    [
        (_hs256(tenant="acme", exp=int(time.time()) - 3600), "auth_expired", "expired"),
        (jwt.encode({"tenant": "acme"}, SECRET, algorithm="HS256"), "auth_invalid", "exp"),
        (_hs256(sub="alice"), "auth_invalid", "'tenant' claim"),
        (_hs256(tenant=""), "auth_invalid", "'tenant' claim"),
        (
            jwt.encode(
                {"tenant": "acme", "exp": int(time.time()) + 86400}, "t" * 40, algorithm="HS256"
            ),
            "auth_invalid",
            "Signature",
        ),
        ("not.a.token", "auth_invalid", "not valid"),
    ],
    ids=["expired", "no-exp", "no-tenant", "blank-tenant", "wrong-secret", "garbage"],
)
def test_a_bad_token_is_refused_with_a_clear_code(token: str, code: str, words: str) -> None:
    verifier = JwtVerifier(JwtSettings(enabled=True), ENV)
    with pytest.raises(Unauthenticated) as refused:
        verifier.verify(token)
    assert refused.value.code == code
    assert words in refused.value.message
    assert SECRET not in refused.value.message


def test_issuer_and_audience_are_checked_when_configured() -> None:
    settings = JwtSettings(enabled=True, issuer="https://idp.example", audience="troupe")
    verifier = JwtVerifier(settings, ENV)
    good = _hs256(tenant="acme", iss="https://idp.example", aud="troupe")
    assert verifier.verify(good).tenant_id == "acme"
    for token in (
        _hs256(tenant="acme", iss="https://evil.example", aud="troupe"),
        _hs256(tenant="acme", iss="https://idp.example", aud="someone-else"),
        _hs256(tenant="acme"),
    ):
        with pytest.raises(Unauthenticated) as refused:
            verifier.verify(token)
        assert refused.value.code == "auth_invalid"


def test_an_hs256_token_cannot_pass_as_rs256(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_file = tmp_path / "idp.pem"
    public_file.write_bytes(pem)
    verifier = JwtVerifier(
        JwtSettings(enabled=True, algorithm="RS256", public_key_file=public_file), {}
    )
    exp = int(time.time()) + 60
    signed = jwt.encode({"tenant": "acme", "sub": "bob", "exp": exp}, private, algorithm="RS256")
    assert verifier.verify(signed).subject == "bob"
    # The classic confusion attack: HS256 "signed" with the public key as the secret.
    forged = jwt.encode({"tenant": "acme", "exp": exp}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated) as refused:
        verifier.verify(forged)
    assert refused.value.code == "auth_invalid"


def test_a_missing_or_short_secret_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="TROUPE_JWT_SECRET is not set"):
        JwtVerifier(JwtSettings(enabled=True), {})
    with pytest.raises(ConfigError, match="at least 32"):
        JwtVerifier(JwtSettings(enabled=True), {"TROUPE_JWT_SECRET": "short"})
    with pytest.raises(ValueError, match="RS256 needs public_key_file"):
        JwtSettings(enabled=True, algorithm="RS256")
