"""The one error tree of Troupe.

Every error a client or operator can see is a :class:`TroupeError` with a stable
``code``, a human ``message`` and a ``retryable`` flag (Temporal retries an activity
only when it is true). ``gateway/errors.py`` is the only place that maps them to HTTP.

    TroupeError
    ├── ConfigError          invalid settings; fails at start-up
    ├── InvalidInput         the request is wrong; fix it and retry
    ├── Unauthenticated      no credentials, or not valid ones
    ├── Forbidden            valid credentials, but not allowed
    ├── NotFound             no such thing (or not yours)
    ├── Conflict             the thing is in a state that forbids the action
    ├── Unavailable          a dependency (database, Temporal) cannot be reached now
    ├── BudgetExceeded       the call or task would spend more than allowed
    └── ProviderError        an LLM provider failed
"""

from __future__ import annotations


class TroupeError(Exception):
    """Root of every Troupe error: a stable code, a message, and whether to retry."""

    code: str = "internal_error"
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None, retryable: bool | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ConfigError(TroupeError):
    code = "config_invalid"


class InvalidInput(TroupeError):
    code = "invalid_request"


class Unauthenticated(TroupeError):
    code = "auth_required"


class Forbidden(TroupeError):
    code = "forbidden"


class NotFound(TroupeError):
    code = "not_found"


class Conflict(TroupeError):
    code = "conflict"


class Unavailable(TroupeError):
    code = "unavailable"
    retryable = True


class RateLimited(TroupeError):
    """Over a rate or concurrency limit; ``retry_after_s``: when to try again."""

    code = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class BudgetExceeded(TroupeError):
    code = "budget_exceeded"


class ProviderError(TroupeError):
    """A model provider failed a call. ``retryable``: a later attempt may succeed
    (rate limit, server error, timeout); ``retry_after_s``: the provider said when."""

    code = "provider_error"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        retry_after_s: float | None = None,
    ):
        super().__init__(message, code=code, retryable=retryable)
        self.retry_after_s = retry_after_s
