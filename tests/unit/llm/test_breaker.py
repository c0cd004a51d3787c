"""The circuit breaker as pure logic, on a fake clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from troupe.llm.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _state(breaker: CircuitBreaker) -> BreakerState:
    # A function call: mypy would otherwise keep a property narrowed across calls.
    return breaker.state


def _breaker(clock: Clock, threshold: int = 3) -> CircuitBreaker:
    return CircuitBreaker(threshold=threshold, window_s=10, cooldown_s=5, clock=clock)


def test_opens_after_threshold_failures_and_refuses_calls() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(2):
        breaker.record_failure()
    assert _state(breaker) == "closed"
    assert breaker.allow()
    breaker.record_failure()
    assert _state(breaker) == "open"
    assert not breaker.allow()


def test_failures_outside_the_window_do_not_count() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 10.5
    breaker.record_failure()
    assert _state(breaker) == "closed"
    assert breaker.recent_failures == 1


def test_after_the_cooldown_one_probe_goes_and_success_closes() -> None:
    clock = Clock()
    breaker = _breaker(clock, threshold=1)
    breaker.record_failure()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert _state(breaker) == "half_open"
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # no second call while the probe is out
    breaker.record_success()
    assert _state(breaker) == "closed"
    assert breaker.allow()


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    clock = Clock()
    breaker = _breaker(clock, threshold=1)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure()
    assert _state(breaker) == "open"
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()


def test_an_abandoned_probe_lets_the_next_one_go() -> None:
    clock = Clock()
    breaker = _breaker(clock, threshold=1)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.abandon()
    assert breaker.allow()


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("advance"), st.floats(min_value=0, max_value=8)),
            st.tuples(st.just("fail"), st.just(0.0)),
            st.tuples(st.just("succeed"), st.just(0.0)),
            st.tuples(st.just("allow"), st.just(0.0)),
        ),
        max_size=60,
    )
)
def test_no_call_goes_out_while_open_and_one_probe_at_a_time(
    steps: list[tuple[str, float]],
) -> None:
    clock = Clock()
    breaker = _breaker(clock)
    probes_out = 0
    for action, amount in steps:
        if action == "advance":
            clock.now += amount
        elif action == "fail":
            breaker.record_failure()
            probes_out = 0
        elif action == "succeed":
            breaker.record_success()
            probes_out = 0
        else:
            state_before = _state(breaker)
            allowed = breaker.allow()
            if state_before == "open":
                assert not allowed
            if state_before == "half_open" and allowed:
                probes_out += 1
                assert probes_out == 1
        if _state(breaker) == "closed":
            assert breaker.recent_failures < 3
