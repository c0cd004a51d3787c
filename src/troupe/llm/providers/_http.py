"""What the HTTP-based providers share: error mapping, secret scrubbing, proxy choice."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from troupe.errors import ProviderError

# Statuses a later attempt may get past: timeout, conflict, too early, rate limit, and
# every server-side failure (Anthropic answers 529 when overloaded).
_RETRYABLE_STATUSES = {408, 409, 425, 429}


def _status_error(
    provider: str,
    status: int,
    detail: str,
    *,
    retry_after: str | None,
    secret: SecretStr | None,
) -> ProviderError:
    """A ProviderError for an HTTP error answer, with a stable code."""
    message = scrub(f"{provider} answered HTTP {status}: {detail}", secret)
    if status == 429:
        return ProviderError(
            message,
            code="provider_rate_limited",
            retryable=True,
            retry_after_s=_seconds(retry_after),
        )
    if status in (401, 403):
        return ProviderError(message, code="provider_auth_failed", retryable=False)
    if status >= 500 or status in _RETRYABLE_STATUSES:
        return ProviderError(
            message,
            code="provider_unavailable",
            retryable=True,
            retry_after_s=_seconds(retry_after),
        )
    return ProviderError(message, code="provider_rejected", retryable=False)


def _transport_error(
    provider: str, *, timed_out: bool, detail: str, secret: SecretStr | None
) -> ProviderError:
    """A ProviderError for a call that got no HTTP answer."""
    if timed_out:
        return ProviderError(
            scrub(f"{provider} did not answer in time: {detail}", secret),
            code="provider_timeout",
        )
    return ProviderError(
        scrub(f"{provider} is unreachable: {detail}", secret), code="provider_unreachable"
    )


@contextmanager
def sdk_failures(provider: str, sdk: Any, secret: SecretStr | None) -> Iterator[None]:
    """Turn the exceptions of an official SDK (``openai`` or ``anthropic``: generated
    alike, their classes have the same names and fields) into ProviderErrors."""
    try:
        yield
    except sdk.APIStatusError as exc:
        raise _status_error(
            provider,
            exc.status_code,
            exc.message,
            retry_after=exc.response.headers.get("retry-after"),
            secret=secret,
        ) from None
    except sdk.APIConnectionError as exc:
        raise _transport_error(
            provider,
            timed_out=isinstance(exc, sdk.APITimeoutError),
            detail=str(exc),
            secret=secret,
        ) from None
    except sdk.APIError as exc:  # e.g. an error event in the middle of a stream
        raise ProviderError(
            scrub(f"{provider} failed: {exc.message}", secret), code="provider_unavailable"
        ) from None


def scrub(text: str, secret: SecretStr | None) -> str:
    """The text with the secret (should a server echo it) replaced by ``***``."""
    if secret is None:
        return text
    value = secret.get_secret_value()
    return text.replace(value, "***") if value else text


def trust_env_proxies(base_url: str | None) -> bool:
    """Whether the HTTP client may use proxy variables: never for a loopback server, which
    no proxy can reach on our behalf."""
    if base_url is None:
        return True
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from model APIs; the normal backoff applies
