"""API keys: ``trp_<prefix>_<secret>``.

The prefix (12 hex digits) is public and finds the key's row; the secret is 256 random
bits. Storage keeps only the prefix and a SHA-256 of the whole key. A fast hash is
enough here: a password hash slows down guessing a weak secret, and these secrets are
random and too long to guess.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_SCHEME = "trp_"
_KEY = re.compile(r"^trp_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class KeyParts:
    prefix: str
    secret_hash: str


def new_key() -> tuple[str, KeyParts]:
    """A fresh key and what storage keeps of it."""
    key = f"{KEY_SCHEME}{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    parts = parse_key(key)
    assert parts is not None
    return key, parts


def parse_key(key: str) -> KeyParts | None:
    """The stored parts of a well-formed key; None when it is not one."""
    match = _KEY.match(key)
    if match is None:
        return None
    return KeyParts(prefix=match.group(1), secret_hash=hash_key(key))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    """Constant-time: the comparison's duration says nothing about the stored hash."""
    return hmac.compare_digest(a.encode(), b.encode())
