"""CircuitBreaker and BreakerRegistry: transitions, permits, listeners, stats, concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Iterator

import pytest

from robust_collector.errors import CircuitOpenError
from robust_collector.resilience import (
    BreakerRegistry,
    BreakerState,
    BreakerStats,
    CircuitBreaker,
    ManualClock,
)

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class Boom(Exception):
    """A failure the breaker counts."""


class Ignored(Exception):
    """A failure listed in ``exclude``."""


def ok(value: object = "ok") -> object:
    return value


def fail(message: str = "boom") -> None:
    raise Boom(message)


def make(clock: ManualClock | None = None, **kwargs: object) -> CircuitBreaker:
    return CircuitBreaker("SPY", clock=clock or ManualClock(), **kwargs)  # type: ignore[arg-type]


def fail_times(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(Boom):
            breaker.call(fail)


def open_breaker(clock: ManualClock, **kwargs: object) -> CircuitBreaker:
    breaker = make(clock, **kwargs)
    fail_times(breaker, breaker.failure_threshold)
    assert breaker.state is OPEN
    return breaker


class Recorder:
    """A listener that remembers every transition."""

    def __init__(self) -> None:
        self.events: list[tuple[str, BreakerState, BreakerState, str]] = []

    def __call__(self, name: str, old: BreakerState, new: BreakerState, reason: str) -> None:
        self.events.append((name, old, new, reason))

    @property
    def transitions(self) -> list[tuple[BreakerState, BreakerState]]:
        return [(old, new) for _, old, new, _ in self.events]


# --------------------------------------------------------------------- states


def test_state_values_are_upper_case_strings_for_storage() -> None:
    assert [s.value for s in BreakerState] == ["CLOSED", "OPEN", "HALF_OPEN"]
    assert BreakerState("HALF_OPEN") is HALF_OPEN
    assert HALF_OPEN == "HALF_OPEN"


def test_starts_closed_and_passes_results_through() -> None:
    breaker = make()
    assert breaker.state is CLOSED
    assert breaker.call(ok, 42) == 42
    assert breaker.call(lambda a, b=0: a + b, 1, b=2) == 3


def test_opens_after_failure_threshold_consecutive_failures() -> None:
    breaker = make(failure_threshold=5)
    fail_times(breaker, 4)
    assert breaker.state is CLOSED
    assert breaker.stats.consecutive_failures == 4
    fail_times(breaker, 1)
    assert breaker.state is OPEN


def test_a_success_resets_the_consecutive_count() -> None:
    breaker = make(failure_threshold=3)
    fail_times(breaker, 2)
    breaker.call(ok)
    assert breaker.stats.consecutive_failures == 0
    fail_times(breaker, 2)
    assert breaker.state is CLOSED
    fail_times(breaker, 1)
    assert breaker.state is OPEN


def test_open_rejects_without_calling_the_function() -> None:
    clock = ManualClock()
    breaker = open_breaker(clock, timeout_seconds=60)
    called = []
    clock.advance(15)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: called.append(1))
    assert called == []
    assert info.value.name == "SPY"
    assert info.value.retry_after == pytest.approx(45)
    assert breaker.stats.rejections == 1


def test_open_reads_half_open_once_the_timeout_has_passed_without_a_call() -> None:
    clock = ManualClock()
    recorder = Recorder()
    breaker = open_breaker(clock, timeout_seconds=60)
    breaker.add_listener(recorder)
    clock.advance(59.9)
    assert breaker.state is OPEN
    clock.advance(0.1)
    assert breaker.state is HALF_OPEN  # the state reflects the clock
    assert recorder.events == [("SPY", OPEN, HALF_OPEN, "timeout 60.0s elapsed")]
    assert breaker.state is HALF_OPEN
    assert len(recorder.events) == 1  # recorded once
    stats = breaker.stats
    assert stats.state_changes == 2
    assert stats.time_in_state == pytest.approx(0.0)


def test_time_in_half_open_counts_from_when_the_timeout_passed() -> None:
    clock = ManualClock()
    breaker = open_breaker(clock, timeout_seconds=10)
    clock.advance(25)
    stats = breaker.stats
    assert stats.state is HALF_OPEN
    assert stats.time_in_state == pytest.approx(15)
    assert stats.opened_at == 0.0


def test_half_open_closes_only_after_success_threshold_successes() -> None:
    clock = ManualClock()
    breaker = open_breaker(clock, timeout_seconds=60, success_threshold=3)
    recorder = Recorder()
    breaker.add_listener(recorder)
    clock.advance(60)
    breaker.call(ok)
    breaker.call(ok)
    assert breaker.state is HALF_OPEN
    breaker.call(ok)
    assert breaker.state is CLOSED
    assert recorder.events[-1] == ("SPY", HALF_OPEN, CLOSED, "3 successes in half-open")
    assert breaker.stats.consecutive_failures == 0


def test_half_open_failure_reopens_for_another_full_timeout() -> None:
    clock = ManualClock()
    breaker = open_breaker(clock, timeout_seconds=60)
    clock.advance(60)
    breaker.call(ok)
    with pytest.raises(Boom):
        breaker.call(fail, "still down")
    assert breaker.state is OPEN
    assert breaker.stats.opened_at == 60
    clock.advance(59)
    assert breaker.state is OPEN
    clock.advance(1)
    assert breaker.state is HALF_OPEN


def test_closing_resets_counters_so_it_takes_a_full_threshold_to_reopen() -> None:
    clock = ManualClock()
    breaker = open_breaker(clock, failure_threshold=2, success_threshold=1, timeout_seconds=1)
    clock.advance(1)
    breaker.call(ok)
    assert breaker.state is CLOSED
    fail_times(breaker, 1)
    assert breaker.state is CLOSED
    fail_times(breaker, 1)
    assert breaker.state is OPEN


def test_half_open_lets_only_max_calls_trials_in_flight() -> None:
    clock = ManualClock()
    breaker = open_breaker(clock, timeout_seconds=5, half_open_max_calls=2, success_threshold=2)
    clock.advance(5)
    first = breaker.before_call()
    second = breaker.before_call()
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_call()
    assert info.value.retry_after == 0.0
    breaker.on_success(first)  # frees a permit
    third = breaker.before_call()
    breaker.on_success(second)
    assert breaker.state is CLOSED  # two successes
    breaker.on_success(third)  # a stale trial: counted, no verdict
    stats = breaker.stats
    assert stats.state is CLOSED
    assert stats.rejections == 1
    assert stats.successes == 3


def test_half_open_needs_half_open_max_calls_successes_even_one_at_a_time() -> None:
    # a sequential driver never has two trials in flight: the setting must still matter
    clock = ManualClock()
    breaker = open_breaker(clock, timeout_seconds=5, half_open_max_calls=3, success_threshold=1)
    recorder = Recorder()
    breaker.add_listener(recorder)
    clock.advance(5)
    breaker.call(ok)
    breaker.call(ok)
    assert breaker.state is HALF_OPEN
    breaker.call(ok)
    assert breaker.state is CLOSED
    assert recorder.events[-1] == ("SPY", HALF_OPEN, CLOSED, "3 successes in half-open")


def test_a_failed_trial_reopens_however_many_succeeded_before() -> None:
    clock = ManualClock()
    breaker = open_breaker(clock, timeout_seconds=5, half_open_max_calls=3, success_threshold=1)
    clock.advance(5)
    breaker.call(ok)
    with pytest.raises(Boom):
        breaker.call(fail)
    assert breaker.state is OPEN
    clock.advance(5)
    breaker.call(ok)
    assert breaker.state is HALF_OPEN  # the count starts again in the new half-open
    assert breaker.stats.state_changes == 4


def test_half_open_refuses_a_trial_beyond_half_open_max_calls() -> None:
    clock = ManualClock()
    breaker = open_breaker(clock, timeout_seconds=5, half_open_max_calls=3, success_threshold=1)
    clock.advance(5)
    tokens = [breaker.before_call() for _ in range(3)]
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    for token in tokens[:2]:
        breaker.on_success(token)
    assert breaker.state is HALF_OPEN
    breaker.on_success(tokens[2])
    assert breaker.state is CLOSED
    assert breaker.stats.rejections == 1


@pytest.mark.parametrize(
    ("success_threshold", "half_open_max_calls", "needed"),
    [(3, 1, 3), (1, 1, 1), (2, 4, 4), (4, 2, 4)],
)
def test_closing_takes_the_larger_of_success_threshold_and_half_open_max_calls(
    success_threshold: int, half_open_max_calls: int, needed: int
) -> None:
    clock = ManualClock()
    breaker = open_breaker(
        clock,
        timeout_seconds=1,
        success_threshold=success_threshold,
        half_open_max_calls=half_open_max_calls,
    )
    clock.advance(1)
    for _ in range(needed - 1):
        breaker.call(ok)
    assert breaker.state is HALF_OPEN
    breaker.call(ok)
    assert breaker.state is CLOSED


def test_excluded_errors_count_as_neither_and_free_the_half_open_permit() -> None:
    clock = ManualClock()
    breaker = make(clock, failure_threshold=2, exclude=(Ignored,), timeout_seconds=1)
    fail_times(breaker, 1)

    def ignored() -> None:
        raise Ignored("not the source's fault")

    for _ in range(5):
        with pytest.raises(Ignored):
            breaker.call(ignored)
    stats = breaker.stats
    assert (stats.state, stats.failures, stats.ignored, stats.consecutive_failures) == (
        CLOSED,
        1,
        5,
        1,
    )
    fail_times(breaker, 1)
    assert breaker.state is OPEN
    clock.advance(1)
    with pytest.raises(Ignored):
        breaker.call(ignored)
    assert breaker.state is HALF_OPEN
    assert breaker.call(ok) == "ok"  # the permit was freed by the excluded error


def test_exclude_rejects_non_exception_types() -> None:
    with pytest.raises(TypeError):
        CircuitBreaker("x", exclude=("ValueError",))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"timeout_seconds": -1},
        {"success_threshold": 0},
        {"half_open_max_calls": 0},
        {"failure_rate_threshold": 50},
        {"failure_rate_threshold": 0.0},
        {"failure_rate_threshold": 0.5, "window_size": 10, "minimum_calls": 11},
        {"window_size": 0},
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", **kwargs)  # type: ignore[arg-type]


def test_cancellation_like_exits_count_as_neither() -> None:
    breaker = make(failure_threshold=1)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupted)
    assert breaker.state is CLOSED
    assert breaker.stats.ignored == 1


# ------------------------------------------------------------ forms of use


def test_decorator_on_a_sync_function() -> None:
    breaker = make(failure_threshold=2)

    @breaker
    def fetch(symbol: str, fail_it: bool = False) -> str:
        """Docstring kept."""
        if fail_it:
            raise Boom(symbol)
        return symbol.lower()

    assert fetch("SPY") == "spy"
    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Docstring kept."
    for _ in range(2):
        with pytest.raises(Boom):
            fetch("SPY", fail_it=True)
    with pytest.raises(CircuitOpenError):
        fetch("SPY")


def test_async_call_and_async_decorator() -> None:
    clock = ManualClock()
    breaker = make(clock, failure_threshold=2, timeout_seconds=1, success_threshold=1)

    @breaker
    async def fetch(fail_it: bool = False) -> str:
        await asyncio.sleep(0)
        if fail_it:
            raise Boom("async")
        return "quote"

    async def scenario() -> None:
        assert asyncio.iscoroutinefunction(fetch)
        assert await fetch() == "quote"
        for _ in range(2):
            with pytest.raises(Boom):
                await fetch(fail_it=True)
        with pytest.raises(CircuitOpenError):
            await fetch()
        clock.advance(1)
        assert await breaker.call_async(fetch.__wrapped__) == "quote"  # type: ignore[attr-defined]
        assert breaker.state is CLOSED

    asyncio.run(scenario())


def test_async_cancellation_frees_the_half_open_permit() -> None:
    clock = ManualClock()
    breaker = open_breaker(clock, timeout_seconds=1)
    clock.advance(1)

    async def scenario() -> None:
        started = asyncio.Event()

        async def slow() -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(breaker.call_async(slow))
        await started.wait()
        with pytest.raises(CircuitOpenError):
            await breaker.call_async(slow)  # the one permit is taken
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert breaker.state is HALF_OPEN
        assert await breaker.call_async(asyncio.sleep, 0, "free again") == "free again"

    asyncio.run(scenario())
    assert breaker.stats.ignored == 1


def test_primitives_before_call_on_success_on_failure() -> None:
    breaker = make(failure_threshold=2, exclude=(Ignored,))
    token = breaker.before_call()
    breaker.on_success(token)
    token = breaker.before_call()
    breaker.on_failure(token, Boom("x"))
    token = breaker.before_call()
    breaker.on_failure(token, Ignored("y"))  # excluded: neither
    token = breaker.before_call()
    breaker.release(token)
    assert breaker.state is CLOSED
    token = breaker.before_call()
    breaker.on_failure(token, TimeoutError("z"))
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    stats = breaker.stats
    assert (stats.calls, stats.successes, stats.failures, stats.ignored, stats.rejections) == (
        5,
        1,
        2,
        2,
        1,
    )


def test_outcome_of_a_call_started_before_a_transition_drives_no_transition() -> None:
    clock = ManualClock()
    breaker = make(clock, failure_threshold=1, timeout_seconds=1, success_threshold=1)
    slow = breaker.before_call()  # started while CLOSED
    fail_times(breaker, 1)
    assert breaker.state is OPEN
    breaker.on_success(slow)  # must not close an OPEN breaker
    assert breaker.state is OPEN
    clock.advance(1)
    trial = breaker.before_call()
    stale = slow
    breaker.on_failure(stale, Boom("late"))  # must not reopen the half-open breaker
    assert breaker.state is HALF_OPEN
    breaker.on_success(trial)
    assert breaker.state is CLOSED
    stats = breaker.stats
    assert (stats.successes, stats.failures) == (2, 2)


# --------------------------------------------------------------- listeners


def test_listeners_get_name_old_new_and_a_readable_reason() -> None:
    clock = ManualClock()
    recorder = Recorder()
    breaker = make(clock, failure_threshold=5, timeout_seconds=60, success_threshold=3)
    breaker.add_listener(recorder)
    for _ in range(5):
        with pytest.raises(TimeoutError):
            breaker.call(_raise, TimeoutError("API timeout after 5s"))
    clock.advance(60)
    for _ in range(3):
        breaker.call(ok)
    breaker.open()
    breaker.close()
    assert [(old, new, reason) for _, old, new, reason in recorder.events] == [
        (CLOSED, OPEN, "5 consecutive failures (TimeoutError: API timeout after 5s)"),
        (OPEN, HALF_OPEN, "timeout 60.0s elapsed"),
        (HALF_OPEN, CLOSED, "3 successes in half-open"),
        (CLOSED, OPEN, "manual open"),
        (OPEN, CLOSED, "manual close"),
    ]
    assert {name for name, *_ in recorder.events} == {"SPY"}


def _raise(exc: BaseException) -> None:
    raise exc


def test_a_raising_listener_is_logged_and_does_not_break_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    breaker = make(failure_threshold=1)

    def broken(*_: object) -> None:
        raise RuntimeError("listener bug")

    breaker.add_listener(broken)
    breaker.add_listener(recorder)
    with caplog.at_level(logging.ERROR, logger="robust_collector.resilience"), pytest.raises(Boom):
        breaker.call(fail)
    assert breaker.state is OPEN
    assert recorder.transitions == [(CLOSED, OPEN)]  # later listeners still run
    assert any("listener bug" in (r.exc_text or "") for r in caplog.records)


def test_listeners_run_outside_the_lock_and_may_use_the_breaker() -> None:
    clock = ManualClock()
    breaker = make(clock, failure_threshold=1, timeout_seconds=1)
    seen: list[tuple[BreakerState, BreakerStats]] = []

    def reentrant(name: str, old: BreakerState, new: BreakerState, reason: str) -> None:
        seen.append((breaker.state, breaker.stats))  # would deadlock under the lock
        if new is OPEN:
            breaker.close("listener closes it")  # a transition from a listener

    breaker.add_listener(reentrant)
    fail_times(breaker, 1)
    assert breaker.state is CLOSED
    assert [(state, s.state_changes) for state, s in seen] == [(OPEN, 1), (CLOSED, 2)]


def test_remove_listener_and_duplicate_add() -> None:
    recorder = Recorder()
    breaker = make(failure_threshold=1)
    breaker.add_listener(recorder)
    breaker.add_listener(recorder)
    breaker.open()
    breaker.remove_listener(recorder)
    breaker.close()
    assert recorder.transitions == [(CLOSED, OPEN)]


# ---------------------------------------------------------- manual control


def test_manual_open_then_half_opens_after_the_timeout() -> None:
    clock = ManualClock()
    breaker = make(clock, timeout_seconds=30)
    breaker.open()
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.advance(20)
    breaker.open()  # opening again restarts the timeout
    clock.advance(20)
    assert breaker.state is OPEN
    clock.advance(10)
    assert breaker.state is HALF_OPEN


def test_manual_close_keeps_stats_and_reset_clears_them() -> None:
    clock = ManualClock()
    breaker = open_breaker(clock, failure_threshold=2)
    breaker.close()
    stats = breaker.stats
    assert (stats.state, stats.failures, stats.consecutive_failures, stats.state_changes) == (
        CLOSED,
        2,
        0,
        2,
    )
    fail_times(breaker, 1)
    breaker.close()  # already CLOSED: clears the consecutive count, no event
    assert breaker.stats.consecutive_failures == 0
    assert breaker.stats.state_changes == 2

    recorder = Recorder()
    breaker.add_listener(recorder)
    breaker.open()
    breaker.reset()
    assert recorder.events[-1][2:] == (CLOSED, "reset")
    assert breaker.stats == BreakerStats(
        name="SPY",
        state=CLOSED,
        calls=0,
        successes=0,
        failures=0,
        ignored=0,
        rejections=0,
        state_changes=0,
        consecutive_failures=0,
        time_in_state=0.0,
        opened_at=None,
        retry_after=0.0,
        last_failure_type=None,
        last_failure_message=None,
        last_failure_at=None,
        failure_rate=None,
    )


def test_calls_in_flight_across_a_reset_are_not_counted() -> None:
    breaker = make()
    token = breaker.before_call()
    breaker.reset()
    breaker.on_failure(token, Boom("old"))
    stats = breaker.stats
    assert (stats.calls, stats.failures, stats.consecutive_failures) == (0, 0, 0)


def test_manual_close_of_a_timed_out_breaker_records_the_half_open_first() -> None:
    clock = ManualClock()
    recorder = Recorder()
    breaker = open_breaker(clock, timeout_seconds=1)
    breaker.add_listener(recorder)
    clock.advance(2)
    breaker.close()
    assert recorder.transitions == [(OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


# ------------------------------------------------------------------ stats


def test_stats_is_a_frozen_snapshot_with_every_counter() -> None:
    clock = ManualClock(100.0)
    breaker = make(clock, failure_threshold=3, timeout_seconds=60)
    breaker.call(ok)
    clock.advance(1)
    fail_times(breaker, 2)
    with pytest.raises(TimeoutError):
        breaker.call(_raise, TimeoutError("API timeout after 5s"))
    clock.advance(10)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    stats = breaker.stats
    assert stats.name == "SPY"
    assert stats.state is OPEN
    assert (stats.calls, stats.successes, stats.failures, stats.rejections) == (4, 1, 3, 1)
    assert stats.state_changes == 1
    assert stats.consecutive_failures == 3
    assert stats.last_failure_type == "TimeoutError"
    assert stats.last_failure_message == "API timeout after 5s"
    assert stats.last_failure_at == 101.0
    assert stats.opened_at == 101.0
    assert stats.time_in_state == pytest.approx(10)
    assert stats.retry_after == pytest.approx(50)
    assert stats.in_flight == 0
    assert stats.failure_rate is None
    with pytest.raises(AttributeError):
        stats.calls = 0  # type: ignore[misc]
    row = stats.as_dict()
    assert row["state"] == "OPEN"
    assert type(row["state"]) is str


def test_repr_mentions_name_and_state() -> None:
    assert repr(make()) == "<CircuitBreaker 'SPY' CLOSED>"


# ----------------------------------------------------------- failure rate


def test_failure_rate_mode_opens_on_a_high_rate_without_a_run_of_failures() -> None:
    recorder = Recorder()
    breaker = make(failure_threshold=5, failure_rate_threshold=0.5, window_size=10, minimum_calls=6)
    breaker.add_listener(recorder)
    # fail, ok, fail, ok ...: never two failures in a row
    for i in range(5):
        if i % 2:
            breaker.call(ok)
        else:
            fail_times(breaker, 1)
    assert breaker.state is CLOSED  # 3 of 5, under minimum_calls
    breaker.call(ok)
    assert breaker.state is CLOSED  # 3 of 6 but only failures are checked
    fail_times(breaker, 1)
    assert breaker.state is OPEN
    assert recorder.events[-1][3] == "failure rate 57% over last 7 calls (Boom: boom)"


def test_failure_rate_mode_window_slides() -> None:
    breaker = make(
        failure_threshold=100, failure_rate_threshold=0.5, window_size=4, minimum_calls=4
    )
    fail_times(breaker, 1)
    for _ in range(4):
        breaker.call(ok)  # the early failure slides out
    assert breaker.stats.failure_rate == 0.0
    fail_times(breaker, 1)
    assert breaker.state is CLOSED  # 1 of 4
    assert breaker.stats.failure_rate == 0.25
    fail_times(breaker, 1)
    assert breaker.state is OPEN  # 2 of 4


def test_failure_rate_mode_through_the_decorator() -> None:
    breaker = make(
        failure_threshold=100, failure_rate_threshold=0.5, window_size=4, minimum_calls=4
    )

    @breaker
    def fetch(fail_it: bool) -> str:
        if fail_it:
            raise Boom("x")
        return "ok"

    for fail_it in (False, True, False):
        with contextlib.suppress(Boom):
            fetch(fail_it)
    assert breaker.stats.failure_rate == pytest.approx(1 / 3)
    with pytest.raises(Boom):
        fetch(True)
    assert breaker.state is OPEN


def test_failure_rate_mode_still_opens_on_consecutive_failures() -> None:
    breaker = make(
        failure_threshold=2, failure_rate_threshold=0.9, window_size=20, minimum_calls=20
    )
    fail_times(breaker, 2)
    assert breaker.state is OPEN


def test_failure_rate_window_restarts_after_closing() -> None:
    clock = ManualClock()
    breaker = make(
        clock,
        failure_threshold=100,
        failure_rate_threshold=0.5,
        window_size=4,
        minimum_calls=2,
        success_threshold=1,
        timeout_seconds=1,
    )
    fail_times(breaker, 2)
    assert breaker.state is OPEN
    clock.advance(1)
    breaker.call(ok)
    assert breaker.state is CLOSED
    assert breaker.stats.failure_rate is None
    fail_times(breaker, 1)
    assert breaker.state is CLOSED  # one call in the new window, under minimum_calls


# ---------------------------------------------------------------- registry


def test_registry_creates_one_breaker_per_key_with_shared_defaults() -> None:
    clock = ManualClock()
    registry = BreakerRegistry(failure_threshold=2, timeout_seconds=30, clock=clock)
    spy = registry.get("SPY")
    assert registry["SPY"] is spy
    assert spy.name == "SPY"
    assert (spy.failure_threshold, spy.timeout_seconds) == (2, 30.0)
    qqq = registry["QQQ"]
    assert list(registry) == [spy, qqq]
    assert registry.keys() == ["SPY", "QQQ"]
    assert len(registry) == 2
    assert "SPY" in registry
    assert "IWM" not in registry
    assert registry.defaults == {"failure_threshold": 2, "timeout_seconds": 30, "clock": clock}


def test_registry_isolates_symbols() -> None:
    clock = ManualClock()
    registry = BreakerRegistry(failure_threshold=2, clock=clock)
    for _ in range(2):
        with pytest.raises(Boom):
            registry["SPY"].call(fail)
    assert registry["QQQ"].call(ok) == "ok"
    assert registry.states() == {"SPY": OPEN, "QQQ": CLOSED}
    stats = registry.stats()
    assert stats["QQQ"].failures == 0
    assert stats["SPY"].failures == 2
    registry.reset_all()
    assert registry.states() == {"SPY": CLOSED, "QQQ": CLOSED}


def test_registry_listeners_reach_existing_and_future_breakers() -> None:
    recorder = Recorder()
    registry = BreakerRegistry(failure_threshold=1, clock=ManualClock())
    registry.get("SPY")
    registry.add_listener(recorder)
    registry.get("QQQ")
    for key in ("SPY", "QQQ"):
        with pytest.raises(Boom):
            registry[key].call(fail)
    assert [(name, new) for name, _, new, _ in recorder.events] == [("SPY", OPEN), ("QQQ", OPEN)]
    registry.remove_listener(recorder)
    registry.reset_all()
    assert len(recorder.events) == 2


def test_registry_validates_defaults_at_once() -> None:
    with pytest.raises(ValueError):
        BreakerRegistry(failure_threshold=0)
    with pytest.raises(TypeError):
        BreakerRegistry(name="x")
    with pytest.raises(TypeError):
        BreakerRegistry(no_such_option=1)


def test_registry_get_is_thread_safe() -> None:
    registry = BreakerRegistry()
    barrier = threading.Barrier(8, timeout=5)
    got: list[CircuitBreaker] = []

    def worker() -> None:
        barrier.wait()
        got.append(registry.get("SPY"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(b) for b in got}) == 1


# ------------------------------------------------------------- concurrency


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Make the GIL switch threads every microsecond so races actually interleave."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def test_counters_add_up_exactly_under_threads(fast_switching: None) -> None:
    breaker = CircuitBreaker("SPY", failure_threshold=10**9)
    n_threads, n_calls = 8, 2000
    barrier = threading.Barrier(n_threads, timeout=5)

    def worker(seed: int) -> None:
        barrier.wait()
        for i in range(n_calls):
            if (i + seed) % 3 == 0:
                with contextlib.suppress(Boom):
                    breaker.call(fail)
            else:
                breaker.call(ok)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = breaker.stats
    expected_failures = sum(1 for s in range(n_threads) for i in range(n_calls) if (i + s) % 3 == 0)
    assert stats.calls == n_threads * n_calls
    assert stats.failures == expected_failures
    assert stats.successes == n_threads * n_calls - expected_failures
    assert stats.state is CLOSED


def test_counters_add_up_under_threads_through_transitions(fast_switching: None) -> None:
    breaker = CircuitBreaker("SPY", failure_threshold=3, timeout_seconds=0.0, success_threshold=2)
    n_threads, n_calls = 8, 500
    barrier = threading.Barrier(n_threads, timeout=5)
    outcomes = {"rejected": 0}
    lock = threading.Lock()

    def worker(seed: int) -> None:
        barrier.wait()
        rejected = 0
        for i in range(n_calls):
            try:
                breaker.call(fail if (i * 7 + seed) % 4 == 0 else ok)
            except Boom:
                pass
            except CircuitOpenError:
                rejected += 1
        with lock:
            outcomes["rejected"] += rejected

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = breaker.stats
    assert stats.calls + stats.rejections == n_threads * n_calls
    assert stats.rejections == outcomes["rejected"]
    assert stats.calls == stats.successes + stats.failures
    assert stats.in_flight == 0


def test_sync_calls_run_concurrently_not_serialised() -> None:
    n = 6
    breaker = CircuitBreaker("SPY")
    barrier = threading.Barrier(n, timeout=5)
    errors: list[BaseException] = []

    def inside() -> int:
        return barrier.wait()  # only returns when all n calls are inside at once

    def worker() -> None:
        try:
            breaker.call(inside)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert breaker.stats.successes == n


def test_half_open_max_calls_lets_that_many_trials_overlap() -> None:
    clock = ManualClock()
    n = 3
    breaker = open_breaker(clock, half_open_max_calls=n, success_threshold=n, timeout_seconds=1)
    clock.advance(1)
    barrier = threading.Barrier(n, timeout=5)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            breaker.call(barrier.wait)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert breaker.state is CLOSED


def test_async_calls_run_concurrently_not_serialised() -> None:
    n = 20
    breaker = CircuitBreaker("SPY")

    async def scenario() -> None:
        arrived = 0
        all_in = asyncio.Event()

        async def inside() -> None:
            nonlocal arrived
            arrived += 1
            if arrived == n:
                all_in.set()
            await asyncio.wait_for(all_in.wait(), timeout=5)

        await asyncio.gather(*(breaker.call_async(inside) for _ in range(n)))

    asyncio.run(scenario())
    assert breaker.stats.successes == n
