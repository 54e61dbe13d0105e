"""RetryPolicy: schedules, jitter, retry_after, deadline, what is never retried,
interruption, stats, and the retry-outside-breaker ordering. No real sleeping."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from robust_collector.errors import (
    CircuitOpenError,
    PermanentSourceError,
    RateLimitError,
    TransientSourceError,
)
from robust_collector.resilience import (
    BreakerState,
    CircuitBreaker,
    ManualClock,
    RateLimitGate,
    RetryInterrupted,
    RetryPolicy,
    RetryStats,
)


def policy(clock: ManualClock, **kwargs: object) -> RetryPolicy:
    return RetryPolicy(
        clock=clock,
        sleep=clock.sleep,
        async_sleep=clock.async_sleep,
        **kwargs,  # type: ignore[arg-type]
    )


class Flaky:
    """Fails with ``errors`` in turn, then returns ``value``; records call times."""

    def __init__(self, clock: ManualClock, *errors: BaseException, value: object = "ok") -> None:
        self.clock = clock
        self.errors = list(errors)
        self.value = value
        self.times: list[float] = []

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.times.append(self.clock())
        if self.errors:
            raise self.errors.pop(0)
        return self.value

    async def run_async(self) -> object:
        await asyncio.sleep(0)
        return self()


def transient(n: int) -> list[BaseException]:
    return [TransientSourceError(f"glitch {i}") for i in range(n)]


# --------------------------------------------------------------- schedule


def test_default_schedule_is_the_seeds_three_attempts_1s_then_2s() -> None:
    clock = ManualClock()
    fn = Flaky(clock, *transient(2))
    assert policy(clock).call(fn) == "ok"
    assert fn.times == [0.0, 1.0, 3.0]
    assert clock.sleeps == [1.0, 2.0]


def test_exact_exponential_schedule_is_capped_by_max_delay() -> None:
    p = RetryPolicy(max_retries=10, retry_delay=1.0, max_delay=60.0)
    assert p.delays() == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert p.compute_delay(1) == 1.0
    assert p.compute_delay(4) == 8.0
    assert p.compute_delay(5000) == 60.0  # no overflow


def test_constant_delay_without_exponential_backoff() -> None:
    p = RetryPolicy(max_retries=5, retry_delay=2.5, exponential_backoff=False)
    assert p.delays() == [2.5, 2.5, 2.5, 2.5]


@pytest.mark.parametrize("max_retries", [0, 1])
def test_zero_or_one_means_a_single_attempt(max_retries: int) -> None:
    clock = ManualClock()
    fn = Flaky(clock, *transient(1))
    p = policy(clock, max_retries=max_retries)
    assert p.max_attempts == 1
    assert p.delays() == []
    with pytest.raises(TransientSourceError) as info:
        p.call(fn)
    assert len(fn.times) == 1
    assert not getattr(info.value, "__notes__", [])


def test_full_jitter_stays_within_zero_and_the_exponential_bound() -> None:
    p = RetryPolicy(max_retries=9, jitter="full", max_delay=60, rng=random.Random(7))
    for _ in range(50):
        for attempt, delay in enumerate(p.delays(), start=1):
            assert 0.0 <= delay <= min(60.0, 2.0 ** (attempt - 1))


def test_equal_jitter_keeps_at_least_half_the_bound() -> None:
    p = RetryPolicy(max_retries=9, jitter="equal", max_delay=60, rng=random.Random(7))
    for _ in range(50):
        for attempt, delay in enumerate(p.delays(), start=1):
            bound = min(60.0, 2.0 ** (attempt - 1))
            assert bound / 2 <= delay <= bound


def test_decorrelated_jitter_is_between_base_and_three_times_the_previous() -> None:
    p = RetryPolicy(
        max_retries=12, retry_delay=1.0, jitter="decorrelated", max_delay=30, rng=random.Random(7)
    )
    for _ in range(50):
        prev = 1.0
        for delay in p.delays():
            assert 1.0 <= delay <= min(30.0, 3 * prev)
            prev = delay


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    def make() -> RetryPolicy:
        return RetryPolicy(max_retries=6, jitter="full", rng=random.Random(42))

    assert make().delays() == make().delays()
    assert make().delays() != RetryPolicy(max_retries=6).delays()


def test_jittered_waits_are_what_the_call_sleeps() -> None:
    clock = ManualClock()
    fn = Flaky(clock, *transient(3))
    p = policy(clock, max_retries=4, jitter="equal", rng=random.Random(3))
    expected = RetryPolicy(max_retries=4, jitter="equal", rng=random.Random(3)).delays()
    p.call(fn)
    assert clock.sleeps == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": -1},
        {"retry_delay": -1},
        {"max_delay": -1},
        {"jitter": "random"},
        {"deadline": 0},
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_compute_delay_wants_attempt_numbers_from_one() -> None:
    with pytest.raises(ValueError):
        RetryPolicy().compute_delay(0)


# -------------------------------------------------------- what to retry


def test_gives_up_after_max_attempts_and_reraises_the_last_error() -> None:
    clock = ManualClock()
    errors = transient(5)
    fn = Flaky(clock, *errors)
    with pytest.raises(TransientSourceError) as info:
        policy(clock).call(fn)
    assert info.value is errors[2]
    assert len(fn.times) == 3
    assert info.value.__notes__ == ["robust_collector.RetryPolicy: gave up after 3 attempts"]


def test_permanent_errors_are_never_retried() -> None:
    clock = ManualClock()
    fn = Flaky(clock, PermanentSourceError("unknown symbol"))
    with pytest.raises(PermanentSourceError):
        policy(clock, max_retries=5).call(fn)
    assert len(fn.times) == 1


def test_permanent_is_duck_typed() -> None:
    class BadCredentials(Exception):
        permanent = True

    clock = ManualClock()
    fn = Flaky(clock, BadCredentials())
    with pytest.raises(BadCredentials):
        policy(clock).call(fn)
    assert len(fn.times) == 1


def test_retry_on_limits_what_is_retried() -> None:
    clock = ManualClock()
    fn = Flaky(clock, ValueError("a bug, not a glitch"))
    with pytest.raises(ValueError):
        policy(clock, retry_on=(TransientSourceError,)).call(fn)
    assert len(fn.times) == 1


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_pass_straight_through(exc_type: type[BaseException]) -> None:
    clock = ManualClock()
    fn = Flaky(clock, exc_type())
    p = policy(clock)
    with pytest.raises(exc_type):
        p.call(fn)
    assert len(fn.times) == 1
    assert p.stats.cancelled == 1


def test_retry_after_is_a_minimum_wait_even_beyond_max_delay() -> None:
    clock = ManualClock()
    fn = Flaky(clock, RateLimitError("429", retry_after=90), TransientSourceError("x"))
    assert policy(clock, max_delay=60).call(fn) == "ok"
    assert clock.sleeps == [90.0, 2.0]


def test_retry_after_shorter_than_the_backoff_does_not_shorten_it() -> None:
    clock = ManualClock()
    fn = Flaky(clock, TransientSourceError("x"), RateLimitError("429", retry_after=0.5))
    policy(clock).call(fn)
    assert clock.sleeps == [1.0, 2.0]


@pytest.mark.parametrize("junk", ["soon", float("nan"), -3, None])
def test_nonsense_retry_after_is_ignored(junk: object) -> None:
    clock = ManualClock()
    err = TransientSourceError("x")
    err.retry_after = junk  # type: ignore[assignment]
    policy(clock).call(Flaky(clock, err))
    assert clock.sleeps == [1.0]


def test_deadline_stops_when_the_next_wait_would_pass_it() -> None:
    clock = ManualClock()
    fn = Flaky(clock, *transient(10))
    with pytest.raises(TransientSourceError) as info:
        policy(clock, max_retries=10, deadline=10).call(fn)
    # attempts at 0, 1, 3, 7; the next wait (8 s) would end at 15 > 10
    assert fn.times == [0.0, 1.0, 3.0, 7.0]
    assert "deadline" in info.value.__notes__[0]


def test_deadline_counts_time_spent_inside_attempts() -> None:
    clock = ManualClock()

    def slow() -> None:
        clock.advance(4)
        raise TransientSourceError("slow failure")

    with pytest.raises(TransientSourceError):
        policy(clock, max_retries=10, deadline=10).call(slow)
    assert clock.sleeps == [1.0]  # 4 + 1 + 4 = 9; then 9 + 2 > 10


# ---------------------------------------------------- ordering with a breaker


def test_an_open_breaker_ends_the_retries_at_once() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("SPY", failure_threshold=2, clock=clock)
    fn = Flaky(clock, *transient(10))
    p = policy(clock, max_retries=5)
    with pytest.raises(CircuitOpenError):
        p.call(breaker.call, fn)
    assert len(fn.times) == 2
    assert breaker.state is BreakerState.OPEN
    assert clock.sleeps == [1.0]  # no backoff wait once the breaker has opened
    stats = p.stats
    assert (stats.attempts, stats.retries, stats.give_ups) == (3, 2, 1)
    assert breaker.stats.rejections == 1


def test_an_open_breaker_ends_async_and_decorated_retries_without_waiting() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("SPY", failure_threshold=2, clock=clock)
    fn = Flaky(clock, *transient(10))
    p = policy(clock, max_retries=5)
    with pytest.raises(CircuitOpenError):
        asyncio.run(p.call_async(breaker.call_async, fn.run_async))
    assert len(fn.times) == 2
    assert clock.sleeps == [1.0]

    clock = ManualClock()
    fetch = Flaky(clock, *transient(10))
    guarded = policy(clock, max_retries=5)(
        CircuitBreaker("QQQ", failure_threshold=3, clock=clock)(fetch)
    )
    with pytest.raises(CircuitOpenError):
        guarded()
    assert len(fetch.times) == 3
    assert clock.sleeps == [1.0, 2.0]


def test_a_breaker_left_open_by_another_caller_is_not_waited_on() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("SPY", failure_threshold=5, clock=clock)
    # the attempt fails, and meanwhile something else (an operator) opens the breaker
    p = policy(clock, max_retries=5)

    def fail_and_open() -> None:
        breaker.open("manual open")
        raise TransientSourceError("x")

    with pytest.raises(CircuitOpenError):
        p.call(breaker.call, fail_and_open)
    assert clock.sleeps == []


def test_every_failed_attempt_counts_toward_the_breaker() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("SPY", failure_threshold=5, clock=clock)
    p = policy(clock, max_retries=3)
    with pytest.raises(TransientSourceError):
        p.call(breaker.call, Flaky(clock, *transient(3)))
    assert breaker.stats.consecutive_failures == 3


def test_a_circuit_open_error_does_not_close_a_shared_gate() -> None:
    clock = ManualClock()
    gate = RateLimitGate(clock=clock)
    with pytest.raises(CircuitOpenError):
        policy(clock, gate=gate).call(Flaky(clock, CircuitOpenError("SPY", 60)))
    assert gate.is_open()


# ------------------------------------------------------------ interruption


def test_interrupt_event_stops_a_sync_wait_at_once() -> None:
    event = threading.Event()
    clock = ManualClock()
    errors = transient(5)
    fn = Flaky(clock, *errors)

    def sleep_then_shutdown(seconds: float) -> None:
        clock.sleep(seconds)
        event.set()  # shutdown arrives while we wait

    p = RetryPolicy(clock=clock, sleep=sleep_then_shutdown, interrupt=event, max_retries=5)
    with pytest.raises(RetryInterrupted) as info:
        p.call(fn)
    assert len(fn.times) == 1
    assert info.value.attempts == 1
    assert info.value.last_error is errors[0]
    assert info.value.__cause__ is errors[0]
    assert p.stats.interrupted == 1


def test_interrupt_with_the_real_sleep_returns_without_waiting() -> None:
    event = threading.Event()
    event.set()
    fn = Flaky(ManualClock(), *transient(5))
    # retry_delay is an hour: the test would hang if the wait did not return at once
    p = RetryPolicy(interrupt=event, retry_delay=3600.0)
    with pytest.raises(RetryInterrupted):
        p.call(fn)
    assert len(fn.times) == 1


def test_interrupt_set_from_another_thread_wakes_a_real_wait() -> None:
    event = threading.Event()
    started = threading.Event()

    def fn() -> None:
        started.set()
        raise TransientSourceError("x")

    p = RetryPolicy(interrupt=event, retry_delay=3600.0)
    result: list[BaseException] = []

    def worker() -> None:
        try:
            p.call(fn)
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    assert started.wait(5)
    event.set()
    t.join(5)
    assert not t.is_alive()
    assert isinstance(result[0], RetryInterrupted)


def test_async_retry_is_stopped_by_task_cancellation() -> None:
    async def scenario() -> RetryPolicy:
        calls = 0
        p = RetryPolicy(retry_delay=3600.0)  # real asyncio.sleep: cancellation must end it

        async def fn() -> None:
            nonlocal calls
            calls += 1
            raise TransientSourceError("x")

        task = asyncio.create_task(p.call_async(fn))
        while calls == 0:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert calls == 1
        return p

    p = asyncio.run(scenario())
    assert p.stats.cancelled == 1
    assert p.stats.give_ups == 0


def test_async_interrupt_event_is_also_honoured() -> None:
    clock = ManualClock()
    event = threading.Event()

    async def sleep_then_shutdown(seconds: float) -> None:
        await clock.async_sleep(seconds)
        event.set()

    p = RetryPolicy(clock=clock, async_sleep=sleep_then_shutdown, interrupt=event)
    fn = Flaky(clock, *transient(5))

    async def run() -> object:
        return await p.call_async(fn.run_async)

    with pytest.raises(RetryInterrupted):
        asyncio.run(run())
    assert len(fn.times) == 1


# ---------------------------------------------------------- async and forms


def test_async_call_follows_the_same_schedule() -> None:
    clock = ManualClock()
    fn = Flaky(clock, *transient(2))
    p = policy(clock)
    assert asyncio.run(p.call_async(fn.run_async)) == "ok"
    assert fn.times == [0.0, 1.0, 3.0]


def test_decorator_on_sync_and_async_functions() -> None:
    clock = ManualClock()
    p = policy(clock)
    sync_fn = Flaky(clock, *transient(1))

    @p
    def fetch(symbol: str) -> object:
        """Fetch one quote."""
        return sync_fn(symbol)

    @p
    async def fetch_async(symbol: str) -> object:
        return await async_fn.run_async()

    async_fn = Flaky(clock, *transient(1))
    assert fetch("SPY") == "ok"
    assert fetch.__doc__ == "Fetch one quote."
    assert asyncio.iscoroutinefunction(fetch_async)
    assert asyncio.run(fetch_async("SPY")) == "ok"
    assert p.stats.retry_successes == 2


def test_on_retry_hook_sees_attempt_delay_and_error_and_may_fail_safely() -> None:
    clock = ManualClock()
    errors = transient(2)
    seen: list[tuple[int, float, BaseException]] = []

    def hook(attempt: int, delay: float, exc: BaseException) -> None:
        seen.append((attempt, delay, exc))
        raise RuntimeError("hook bug")

    assert policy(clock, on_retry=hook).call(Flaky(clock, *errors)) == "ok"
    assert seen == [(1, 1.0, errors[0]), (2, 2.0, errors[1])]


def test_stats_count_attempts_retries_successes_and_give_ups() -> None:
    clock = ManualClock()
    p = policy(clock)
    p.call(Flaky(clock))  # first try
    p.call(Flaky(clock, *transient(2)))  # third try
    with pytest.raises(TransientSourceError):
        p.call(Flaky(clock, *transient(3)))  # gives up
    with pytest.raises(PermanentSourceError):
        p.call(Flaky(clock, PermanentSourceError("bad key")))
    assert p.stats == RetryStats(
        calls=4,
        attempts=1 + 3 + 3 + 1,
        retries=2 + 2,
        successes=2,
        retry_successes=1,
        give_ups=2,
        interrupted=0,
        cancelled=0,
    )
    p.reset_stats()
    assert p.stats.calls == 0


def test_stats_are_exact_under_threads() -> None:
    p = RetryPolicy(sleep=lambda _s: None, retry_delay=0.0)
    n_threads, n_calls = 8, 300
    barrier = threading.Barrier(n_threads, timeout=5)
    clock = ManualClock()

    def worker() -> None:
        barrier.wait()
        for i in range(n_calls):
            p.call(Flaky(clock, *transient(i % 3)))

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = p.stats
    per_thread_retries = sum(i % 3 for i in range(n_calls))
    assert stats.calls == stats.successes == n_threads * n_calls
    assert stats.retries == n_threads * per_thread_retries
    assert stats.attempts == stats.calls + stats.retries
    assert stats.retry_successes == n_threads * sum(1 for i in range(n_calls) if i % 3)


def test_repr_shows_the_settings() -> None:
    assert "max_retries=3" in repr(RetryPolicy())


# ------------------------------------------------------------------- gate


def test_a_retry_after_on_one_symbol_makes_the_other_symbol_wait() -> None:
    clock = ManualClock()
    gate = RateLimitGate("demo", clock=clock)
    spy = Flaky(clock, RateLimitError("429", retry_after=30))
    qqq = Flaky(clock)
    qqq_policy = policy(clock, gate=gate)

    def spy_sleep(seconds: float) -> None:
        # While SPY waits out its 30 s, QQQ's turn comes (another task in real life):
        # QQQ must wait for the shared gate instead of spending a request.
        assert seconds == 30
        assert gate.remaining() == 30
        assert qqq_policy.call(qqq) == "ok"

    spy_policy = RetryPolicy(clock=clock, sleep=spy_sleep, gate=gate)
    assert spy_policy.call(spy) == "ok"
    assert qqq.times == [30.0]  # QQQ's only call came when the gate opened
    assert clock.sleeps == [30.0]  # QQQ's wait on the gate
    assert spy.times == [0.0, 30.0]
    assert gate.blocks == 1


def test_gate_wait_before_the_first_attempt_can_be_interrupted() -> None:
    clock = ManualClock()
    gate = RateLimitGate(clock=clock)
    gate.block_for(60)
    event = threading.Event()
    event.set()
    called = Flaky(clock)
    p = RetryPolicy(clock=clock, gate=gate, interrupt=event)
    with pytest.raises(RetryInterrupted) as info:
        p.call(called)
    assert called.times == []
    assert info.value.last_error is None
    assert info.value.attempts == 0


def test_async_gate_wait_before_each_attempt() -> None:
    clock = ManualClock()
    gate = RateLimitGate(clock=clock)
    gate.block_for(12)
    fn = Flaky(clock, RateLimitError("429", retry_after=5))
    p = policy(clock, gate=gate)
    assert asyncio.run(p.call_async(fn.run_async)) == "ok"
    assert fn.times == [12.0, 17.0]


def test_decorated_function_waits_for_the_gate_and_retries() -> None:
    clock = ManualClock()
    gate = RateLimitGate(clock=clock)
    gate.block_for(10)
    fn = Flaky(clock, RateLimitError("429", retry_after=5))
    decorated = policy(clock, gate=gate)(fn)
    assert decorated() == "ok"
    assert fn.times == [10.0, 15.0]
    assert gate.blocks == 2
