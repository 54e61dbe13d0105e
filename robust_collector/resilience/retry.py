"""Retry with exponential backoff, jitter, ``retry_after``, a deadline and interruption.

``max_retries`` counts ATTEMPTS (the seed's wording): with the defaults a call is
tried, then after 1 s tried again, then after 2 s a third and last time. Errors
decide their own fate by duck typing: ``permanent = True`` is never retried and
``retry_after`` (seconds) is the least we wait. ``CircuitOpenError``, cancellation
and ``KeyboardInterrupt`` are never retried. See ``docs/resilience.md``.

What happens after a failed attempt is decided once, in ``_RetryRun``; the sync
and async loops only sleep (``sleep`` / ``async_sleep``) and make the attempts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from robust_collector.errors import CircuitOpenError, CollectorError, format_seconds
from robust_collector.resilience.backoff import Backoff, JitterMode
from robust_collector.resilience.breaker import BreakerState, CircuitBreaker
from robust_collector.resilience.ratelimit import RateLimitGate

__all__ = [
    "JitterMode",
    "RetryInterrupted",
    "RetryPolicy",
    "RetryStats",
    "format_seconds",
]

logger = logging.getLogger("robust_collector.resilience")

P = ParamSpec("P")
R = TypeVar("R")

RetryHook = Callable[[int, float, BaseException], object]
"""``on_retry(attempt, delay, exc)``: attempt ``attempt`` failed with ``exc``; waiting ``delay``."""


class RetryInterrupted(CollectorError):
    """Retrying stopped because the policy's ``interrupt`` event was set (e.g. shutdown).

    ``last_error`` (also the ``__cause__``) is the error of the last attempt, or
    None if the interrupt came before the first attempt (while waiting on the gate).
    """

    permanent = True  # an outer retry must not retry a shutdown

    def __init__(self, attempts: int, last_error: BaseException | None) -> None:
        self.attempts = attempts
        self.last_error = last_error
        detail = f"; last error: {type(last_error).__name__}: {last_error}" if last_error else ""
        super().__init__(f"retry interrupted after {attempts} attempt(s){detail}")


@dataclass(frozen=True, slots=True)
class RetryStats:
    """Counters of one policy since it was created (or ``reset_stats``).

    A call is counted when it ends. ``calls == successes + give_ups + interrupted
    + cancelled``; ``retries == attempts - calls`` (attempts after the first).
    ``give_ups`` are calls that ended with an error (attempts exhausted, deadline,
    or an error that is never retried); ``retry_successes`` are the successes that
    needed at least one retry; ``cancelled`` counts task cancellation,
    ``KeyboardInterrupt`` and other non-``Exception`` exits.
    """

    calls: int
    attempts: int
    retries: int
    successes: int
    retry_successes: int
    give_ups: int
    interrupted: int
    cancelled: int


_STAT_FIELDS: tuple[str, ...] = RetryStats.__slots__  # type: ignore[assignment]
_CALLS, _ATTEMPTS, _RETRIES, _SUCCESSES, _RETRY_SUCCESSES, _GIVE_UPS, _INTERRUPTED, _CANCELLED = (
    range(len(_STAT_FIELDS))
)


def _breaker_of(fn: Callable[..., Any]) -> CircuitBreaker | None:
    """The breaker ``fn`` goes through: ``breaker.call``/``call_async`` or a ``@breaker`` function."""
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, CircuitBreaker):
        return owner
    owner = getattr(fn, "__circuit_breaker__", None)
    return owner if isinstance(owner, CircuitBreaker) else None


def _retry_after(exc: BaseException) -> float:
    """The error's ``retry_after`` in seconds, or 0.0 when absent or nonsense."""
    value = getattr(exc, "retry_after", None)
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


class RetryPolicy:
    """How to retry a failing call: how often, how long to wait, and what not to retry.

    Use ``policy.call(fn, ...)``, ``await policy.call_async(afn, ...)`` or ``@policy``.
    To combine with a breaker, let the retry wrap it:
    ``policy.call(breaker.call, fetch, symbol)``; when ``fn`` is a breaker's
    ``call``/``call_async`` or a ``@breaker`` function, a wait is skipped once the
    breaker is OPEN, so its ``CircuitOpenError`` ends the retries without delay.
    """

    def __init__(
        self,
        max_retries: int = 3,
        retry_delay: float = 1.0,
        exponential_backoff: bool = True,
        max_delay: float = 60.0,
        *,
        jitter: JitterMode = "none",
        deadline: float | None = None,
        sleep: Callable[[float], object] = time.sleep,
        async_sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        interrupt: threading.Event | None = None,
        on_retry: RetryHook | None = None,
        gate: RateLimitGate | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries (number of attempts) must be >= 0, got {max_retries}")
        if retry_delay < 0:
            raise ValueError(f"retry_delay must be >= 0, got {retry_delay}")
        if max_delay < 0:
            raise ValueError(f"max_delay must be >= 0, got {max_delay}")
        if deadline is not None and not deadline > 0:
            raise ValueError(f"deadline must be > 0 seconds or None, got {deadline}")
        self.max_retries = max_retries
        self.backoff = Backoff(
            initial=float(retry_delay),
            multiplier=2.0 if exponential_backoff else 1.0,
            cap=float(max_delay),
            jitter=jitter,
            rng=rng if rng is not None else random.Random(),
        )
        self.deadline = deadline
        self.interrupt = interrupt
        self.on_retry = on_retry
        self.gate = gate
        self.retry_on = tuple(retry_on)
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._clock = clock
        self._stats_lock = threading.Lock()
        self._counts = [0] * len(_STAT_FIELDS)

    # The schedule's settings read and write through to ``backoff``, the one source.

    @property
    def retry_delay(self) -> float:
        """Seconds to wait after the first failed attempt."""
        return self.backoff.initial

    @retry_delay.setter
    def retry_delay(self, value: float) -> None:
        self.backoff = dataclasses.replace(self.backoff, initial=float(value))

    @property
    def exponential_backoff(self) -> bool:
        """Whether the wait doubles after each failed attempt."""
        return self.backoff.multiplier != 1.0

    @exponential_backoff.setter
    def exponential_backoff(self, value: bool) -> None:
        self.backoff = dataclasses.replace(self.backoff, multiplier=2.0 if value else 1.0)

    @property
    def max_delay(self) -> float:
        """The cap on one wait (a ``retry_after`` may still ask for more)."""
        return self.backoff.cap

    @max_delay.setter
    def max_delay(self, value: float) -> None:
        self.backoff = dataclasses.replace(self.backoff, cap=float(value))

    @property
    def jitter(self) -> JitterMode:
        """How waits are randomised: none, full, equal or decorrelated."""
        return self.backoff.jitter

    @jitter.setter
    def jitter(self, value: JitterMode) -> None:
        self.backoff = dataclasses.replace(self.backoff, jitter=value)

    @property
    def max_attempts(self) -> int:
        """Attempts per call: ``max_retries``, but at least one."""
        return max(1, self.max_retries)

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(max_retries={self.max_retries}, retry_delay={self.retry_delay}, "
            f"exponential_backoff={self.exponential_backoff}, max_delay={self.max_delay}, "
            f"jitter={self.jitter!r}, deadline={self.deadline})"
        )

    # ------------------------------------------------------------- schedule

    def compute_delay(self, attempt: int, prev_delay: float | None = None) -> float:
        """The wait after failed attempt number ``attempt`` (1-based), before jitter's floor.

        ``prev_delay`` (the previous result) is used only by "decorrelated" jitter.
        Jittered modes draw from the policy's ``rng``. See :class:`Backoff`.
        """
        return self.backoff.delay(attempt, prev_delay)

    def delays(self, count: int | None = None) -> list[float]:
        """The waits between attempts of one call (``max_attempts - 1`` unless ``count``).

        Draws from ``rng`` like a real call would; without jitter it is the exact schedule.
        """
        n = self.max_attempts - 1 if count is None else count
        out: list[float] = []
        prev: float | None = None
        for attempt in range(1, n + 1):
            prev = self.compute_delay(attempt, prev)
            out.append(prev)
        return out

    # ---------------------------------------------------------------- stats

    @property
    def stats(self) -> RetryStats:
        """A snapshot of the counters (a call is counted when it ends)."""
        with self._stats_lock:
            return RetryStats(*self._counts)

    def reset_stats(self) -> None:
        """Zero the counters."""
        with self._stats_lock:
            self._counts = [0] * len(_STAT_FIELDS)

    def _record(self, attempts: int, outcome: int) -> None:
        """Count one finished call: its attempts and how it ended (an index into the stats)."""
        with self._stats_lock:
            counts = self._counts
            counts[_CALLS] += 1
            counts[_ATTEMPTS] += attempts
            if attempts > 1:
                counts[_RETRIES] += attempts - 1
                if outcome == _SUCCESSES:
                    counts[_RETRY_SUCCESSES] += 1
            counts[outcome] += 1

    # ---------------------------------------------------------------- sync

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds``; True if the interrupt event is (or becomes) set."""
        event = self.interrupt
        if event is not None:
            if event.is_set():
                return True
            if self._sleep is time.sleep:
                return event.wait(seconds) if seconds > 0 else event.is_set()
        if seconds > 0:
            self._sleep(seconds)
        return event is not None and event.is_set()

    def _wait_gate(self) -> bool:
        """Wait until the shared gate opens; True if interrupted meanwhile."""
        gate = self.gate
        if gate is None or gate.remaining() <= 0:
            return False
        gate.wait(self._wait)
        return self.interrupt is not None and self.interrupt.is_set()

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)``, retrying per the policy; re-raises the last error.

        Raises :class:`RetryInterrupted` if ``interrupt`` is set while waiting.
        """
        if self.gate is not None and self._wait_gate():
            self._record(0, _INTERRUPTED)
            raise RetryInterrupted(0, None)
        start = self._clock() if self.deadline is not None else 0.0
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            return self._retry(fn, args, kwargs, exc, start)
        except BaseException:
            self._record(1, _CANCELLED)
            raise
        # First-try success, the common case: one short lock, no helper calls.
        lock = self._stats_lock
        lock.acquire()
        try:
            counts = self._counts
            counts[_CALLS] += 1
            counts[_ATTEMPTS] += 1
            counts[_SUCCESSES] += 1
        finally:
            lock.release()
        return result

    def _retry(
        self,
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: Exception,
        start: float,
    ) -> R:
        """The slow path of :meth:`call`, entered after attempt 1 raised ``exc``."""
        run = _RetryRun(self, fn, exc, start)
        try:
            while True:
                wait = run.next_wait()  # raises the last error when there is no next attempt
                if wait is not None and (self._wait(wait) or self._wait_gate()):
                    raise run.interrupted() from run.error
                run.attempt += 1
                try:
                    result = fn(*args, **kwargs)
                except Exception as error:
                    run.error = error
                    continue
                run.outcome = _SUCCESSES
                return result
        finally:
            self._record(run.attempt, run.outcome)

    # --------------------------------------------------------------- async

    async def _wait_async(self, seconds: float) -> bool:
        event = self.interrupt
        if event is not None and event.is_set():
            return True
        if seconds > 0:
            await self._async_sleep(seconds)
        return event is not None and event.is_set()

    async def _wait_gate_async(self) -> bool:
        gate = self.gate
        if gate is None or gate.remaining() <= 0:
            return False
        await gate.wait_async(self._async_sleep)
        return self.interrupt is not None and self.interrupt.is_set()

    async def call_async(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``fn(*args, **kwargs)``, retrying per the policy; cancellation stops it at once."""
        if self.gate is not None and await self._wait_gate_async():
            self._record(0, _INTERRUPTED)
            raise RetryInterrupted(0, None)
        start = self._clock() if self.deadline is not None else 0.0
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            return await self._retry_async(fn, args, kwargs, exc, start)
        except BaseException:
            self._record(1, _CANCELLED)
            raise
        self._record(1, _SUCCESSES)
        return result

    async def _retry_async(
        self,
        fn: Callable[..., Awaitable[R]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: Exception,
        start: float,
    ) -> R:
        """The slow path of :meth:`call_async`, entered after attempt 1 raised ``exc``."""
        run = _RetryRun(self, fn, exc, start)
        try:
            while True:
                wait = run.next_wait()  # raises the last error when there is no next attempt
                if wait is not None and (
                    await self._wait_async(wait) or await self._wait_gate_async()
                ):
                    raise run.interrupted() from run.error
                run.attempt += 1
                try:
                    result = await fn(*args, **kwargs)
                except Exception as error:
                    run.error = error
                    continue
                run.outcome = _SUCCESSES
                return result
        finally:
            self._record(run.attempt, run.outcome)

    # ------------------------------------------------------------ decorator

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function so every call is retried per the policy."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await self.call_async(fn, *args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        # The first attempt of call(), inlined: a nested call would double the overhead.
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.gate is not None and self._wait_gate():
                self._record(0, _INTERRUPTED)
                raise RetryInterrupted(0, None)
            start = self._clock() if self.deadline is not None else 0.0
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                return self._retry(fn, args, kwargs, exc, start)
            except BaseException:
                self._record(1, _CANCELLED)
                raise
            self._record(1, _SUCCESSES)
            return result

        return wrapper  # type: ignore[return-value]


class _RetryRun:
    """The decisions of one call whose first attempt failed, shared by the sync and async loops.

    A loop asks :meth:`next_wait`, sleeps that long (its only I/O), raises
    :meth:`interrupted` if woken by the interrupt, counts the attempt in
    ``attempt``, makes it, and stores its error in ``error`` or sets ``outcome``.
    """

    __slots__ = ("attempt", "breaker", "error", "outcome", "policy", "prev_delay", "start")

    def __init__(
        self, policy: RetryPolicy, fn: Callable[..., Any], error: Exception, start: float
    ) -> None:
        self.policy = policy
        self.breaker = _breaker_of(fn)
        self.error: Exception = error
        self.start = start
        self.attempt = 1
        self.prev_delay: float | None = None
        self.outcome = _CANCELLED  # until the loop says otherwise: a BaseException ended it

    def next_wait(self) -> float | None:
        """Seconds to wait before the next attempt, or None to make it at once.

        None means the breaker is OPEN and will reject the attempt without a wait.
        Raises ``error`` (noted with why, when there is something to say) to give up.
        """
        policy, exc, attempt = self.policy, self.error, self.attempt
        if isinstance(exc, CircuitOpenError):
            raise self._give_up("")  # the breaker's own retry_after is per symbol, not the gate's
        retry_after = _retry_after(exc)
        gate = policy.gate
        if retry_after and gate is not None:
            gate.block_for(retry_after)
        if getattr(exc, "permanent", False) or not isinstance(exc, policy.retry_on):
            raise self._give_up("")
        if attempt >= policy.max_attempts:
            raise self._give_up(f"gave up after {attempt} attempts" if attempt > 1 else "")
        delay = policy.compute_delay(attempt, self.prev_delay)
        wait = max(delay, retry_after)
        if gate is not None:
            wait = max(wait, gate.remaining())
        deadline = policy.deadline
        if deadline is not None and policy._clock() - self.start + wait > deadline:
            raise self._give_up(
                f"gave up after {attempt} attempts: waiting {format_seconds(wait)} more "
                f"would pass the {deadline:g}s deadline"
            )
        self.prev_delay = delay
        if self.breaker is not None and self.breaker.state is BreakerState.OPEN:
            return None
        self._notify(wait)
        return wait

    def interrupted(self) -> RetryInterrupted:
        """The error to raise when the interrupt event ended a wait."""
        self.outcome = _INTERRUPTED
        return RetryInterrupted(self.attempt, self.error)

    def _give_up(self, note: str) -> Exception:
        self.outcome = _GIVE_UPS
        if note:
            self.error.add_note(f"robust_collector.RetryPolicy: {note}")
        return self.error

    def _notify(self, wait: float) -> None:
        exc, attempt, hook = self.error, self.attempt, self.policy.on_retry
        logger.debug(
            "attempt %d failed (%s: %s); retrying in %.3gs", attempt, type(exc).__name__, exc, wait
        )
        if hook is not None:
            try:
                hook(attempt, wait, exc)
            except Exception:
                logger.exception("on_retry hook %r failed", hook)
