"""A circuit breaker per provider: stop calling a provider that keeps failing.

closed     calls flow; failures within ``window_s`` are counted, and ``threshold`` of
           them open the breaker.
open       no calls for ``cooldown_s``; the router goes straight to the next candidate.
half_open  after the cooldown, one probe call is let through: success closes the
           breaker, failure opens it for another cooldown.
Only failures that say something about the provider's health count (rate limits, server
errors, timeouts); a request the provider rejects as invalid does not.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int,
        window_s: float,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = threshold
        self._window_s = window_s
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._failures: deque[float] = deque()
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() >= self._opened_at + self._cooldown_s:
            return "half_open"
        return "open"

    @property
    def recent_failures(self) -> int:
        self._forget_old(self._clock())
        return len(self._failures)

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one probe at a time may."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self._probing:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        self._failures.clear()
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        now = self._clock()
        if self._opened_at is not None:  # the probe failed (or a call from before opening)
            self._opened_at = now
            self._probing = False
            return
        self._failures.append(now)
        self._forget_old(now)
        if len(self._failures) >= self._threshold:
            self._opened_at = now
            self._failures.clear()

    def abandon(self) -> None:
        """A call that was let through ended without a verdict (it was cancelled)."""
        self._probing = False

    def _forget_old(self, now: float) -> None:
        while self._failures and self._failures[0] <= now - self._window_s:
            self._failures.popleft()
