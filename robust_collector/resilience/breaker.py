"""A thread-safe and asyncio-safe circuit breaker (CLOSED -> OPEN -> HALF_OPEN).

The breaker keeps a failing source from being hammered: after enough failures it
rejects calls at once with :class:`~robust_collector.errors.CircuitOpenError`,
and after ``timeout_seconds`` it lets a few trial calls through to see whether the
source has recovered. See ``docs/resilience.md`` for the full state machine.

Design notes:

* A short ``threading.Lock`` guards the state; it is never held while the wrapped
  call runs, so concurrent calls run concurrently.
* Every transition bumps a generation number. A call's permit token is the
  generation it started in; outcomes of calls that started in an earlier
  generation still count in the stats but never drive a transition.
* Listeners run outside the lock, in transition order.
* The CLOSED fast path (enter, record a success) is written once, in
  ``breaker_fastpath``, and compiled inline into every entry point.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, ParamSpec, TypeVar

from robust_collector.errors import CircuitOpenError
from robust_collector.resilience import breaker_fastpath

__all__ = [
    "BreakerListener",
    "BreakerState",
    "BreakerStats",
    "CircuitBreaker",
]

logger = logging.getLogger("robust_collector.resilience")

P = ParamSpec("P")
R = TypeVar("R")

Clock = Callable[[], float]


class BreakerState(StrEnum):
    """The three breaker states; the values are what is stored in the database."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN

BreakerListener = Callable[[str, BreakerState, BreakerState, str], object]
"""``listener(name, old_state, new_state, reason)``; its return value is ignored."""

_MAX_MESSAGE = 200

_SYNC_WRAPPER = breaker_fastpath.wrapper_factory(is_async=False)
_ASYNC_WRAPPER = breaker_fastpath.wrapper_factory(is_async=True)


def _describe(kind: str, message: str) -> str:
    """``"TypeName: message"``, shortened, for transition reasons."""
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    return f"{kind}: {message}" if message else kind


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """An immutable snapshot of one breaker, safe to hand to another thread.

    ``calls`` counts the calls let through; ``calls == successes + failures +
    ignored + in_flight``. Rejected calls are only in ``rejections``. Times
    (``opened_at``, ``last_failure_at``) are readings of the breaker's clock.
    """

    name: str
    state: BreakerState
    calls: int
    successes: int
    failures: int
    ignored: int
    rejections: int
    state_changes: int
    consecutive_failures: int
    time_in_state: float
    opened_at: float | None
    retry_after: float
    last_failure_type: str | None
    last_failure_message: str | None
    last_failure_at: float | None
    failure_rate: float | None

    @property
    def in_flight(self) -> int:
        """Calls let through whose outcome is not known yet."""
        return self.calls - self.successes - self.failures - self.ignored

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (state as its string value), ready for a database row."""
        row = asdict(self)
        row["state"] = self.state.value
        return row


class CircuitBreaker:
    """Stops calling a failing function for a while, then probes it with trial calls.

    Use ``breaker.call(fn, ...)``, ``await breaker.call_async(afn, ...)``, ``@breaker``
    on a sync or async function, or the primitives ``before_call`` /
    ``on_success`` / ``on_failure`` / ``release`` in a hot loop.
    """

    __slots__ = (
        "__weakref__",
        "_calls",
        "_clock",
        "_consecutive",
        "_dispatch_lock",
        "_entered_at",
        "_exclude",
        "_failures",
        "_fast",
        "_generation",
        "_half_open_in_flight",
        "_half_open_successes",
        "_ignore",
        "_ignored",
        "_last_failure_at",
        "_last_failure_message",
        "_last_failure_type",
        "_listeners",
        "_lock",
        "_opened_at",
        "_pending",
        "_rejections",
        "_reset_generation",
        "_state",
        "_state_changes",
        "_successes",
        "_window",
        "_window_failures",
        "failure_rate_threshold",
        "failure_threshold",
        "half_open_max_calls",
        "minimum_calls",
        "name",
        "success_threshold",
        "timeout_seconds",
        "window_size",
    )

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        timeout_seconds: float = 60.0,
        success_threshold: int = 3,
        half_open_max_calls: int = 1,
        exclude: Iterable[type[BaseException]] = (),
        clock: Clock = time.monotonic,
        failure_rate_threshold: float | None = None,
        window_size: int = 20,
        minimum_calls: int = 10,
        ignore: Callable[[BaseException], bool] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if timeout_seconds < 0:
            raise ValueError(f"timeout_seconds must be >= 0, got {timeout_seconds}")
        if success_threshold < 1:
            raise ValueError(f"success_threshold must be >= 1, got {success_threshold}")
        if half_open_max_calls < 1:
            raise ValueError(f"half_open_max_calls must be >= 1, got {half_open_max_calls}")
        if failure_rate_threshold is not None and not 0.0 < failure_rate_threshold <= 1.0:
            raise ValueError(
                "failure_rate_threshold is a fraction in (0, 1] (e.g. 0.5 for 50%), "
                f"got {failure_rate_threshold}"
            )
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        if not 1 <= minimum_calls <= window_size:
            raise ValueError(
                f"minimum_calls must be between 1 and window_size ({window_size}), "
                f"got {minimum_calls}"
            )
        excluded = tuple(exclude)
        for kind in excluded:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise TypeError(f"exclude must hold exception classes, got {kind!r}")

        self.name = name
        self.failure_threshold = failure_threshold
        self.timeout_seconds = float(timeout_seconds)
        self.success_threshold = success_threshold
        self.half_open_max_calls = half_open_max_calls
        self.failure_rate_threshold = failure_rate_threshold
        self.window_size = window_size
        self.minimum_calls = minimum_calls
        self._exclude = excluded
        # resilience4j's ignoreExceptions as a predicate: errors that say "slow down" or
        # "wrong for everyone" (a 429, bad credentials) are not this call's failure
        self._ignore = ignore
        self._clock = clock

        self._lock = threading.Lock()
        self._dispatch_lock = threading.Lock()
        self._pending: deque[tuple[BreakerState, BreakerState, str]] = deque()
        self._listeners: list[BreakerListener] = []

        self._state = _CLOSED
        self._generation = 0
        self._reset_generation = 0
        self._entered_at = clock()
        self._opened_at: float | None = None
        self._consecutive = 0
        self._half_open_in_flight = 0
        self._half_open_successes = 0
        # Outcomes of the last ``window_size`` counted calls in CLOSED (True = failure).
        self._window: deque[bool] | None = (
            deque(maxlen=window_size) if failure_rate_threshold is not None else None
        )
        self._window_failures = 0
        # Mirrors ``_state is CLOSED`` (an attribute test is cheaper than a global lookup).
        self._fast = True

        self._calls = 0
        self._successes = 0
        self._failures = 0
        self._ignored = 0
        self._rejections = 0
        self._state_changes = 0
        self._last_failure_type: str | None = None
        self._last_failure_message: str | None = None
        self._last_failure_at: float | None = None

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.state.value}>"

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> BreakerState:
        """The current state; an OPEN breaker whose timeout has passed reads HALF_OPEN."""
        state = self._state
        if state is not _OPEN:
            return state
        with self._lock:
            self._refresh_locked(self._clock())
            state = self._state
        if self._pending:
            self._dispatch()
        return state

    @property
    def stats(self) -> BreakerStats:
        """A consistent snapshot of the counters and the current state."""
        with self._lock:
            now = self._clock()
            self._refresh_locked(now)
            window = self._window
            rate = self._window_failures / len(window) if window is not None and window else None
            snapshot = BreakerStats(
                name=self.name,
                state=self._state,
                calls=self._calls,
                successes=self._successes,
                failures=self._failures,
                ignored=self._ignored,
                rejections=self._rejections,
                state_changes=self._state_changes,
                consecutive_failures=self._consecutive,
                time_in_state=max(0.0, now - self._entered_at),
                opened_at=self._opened_at,
                retry_after=self._retry_after_locked(now),
                last_failure_type=self._last_failure_type,
                last_failure_message=self._last_failure_message,
                last_failure_at=self._last_failure_at,
                failure_rate=rate,
            )
        if self._pending:
            self._dispatch()
        return snapshot

    # ------------------------------------------------------------- listeners

    def add_listener(self, listener: BreakerListener) -> BreakerListener:
        """Call ``listener(name, old, new, reason)`` on every transition; returns it."""
        with self._lock:
            if listener not in self._listeners:
                self._listeners = [*self._listeners, listener]
        return listener

    def remove_listener(self, listener: BreakerListener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        with self._lock:
            self._listeners = [cb for cb in self._listeners if cb != listener]

    # ---------------------------------------------------------- manual control

    def open(self, reason: str = "manual open") -> None:
        """Force the breaker OPEN now; it half-opens after ``timeout_seconds`` as usual."""
        with self._lock:
            now = self._clock()
            self._refresh_locked(now)
            if self._state is _OPEN:
                self._opened_at = now  # restart the timeout
                self._entered_at = now
            else:
                self._transition_locked(_OPEN, reason, now)
        self._dispatch()

    def close(self, reason: str = "manual close") -> None:
        """Force the breaker CLOSED with its failure counters cleared (stats kept)."""
        with self._lock:
            now = self._clock()
            self._refresh_locked(now)
            if self._state is _CLOSED:
                self._consecutive = 0
                self._clear_window_locked()
            else:
                self._transition_locked(_CLOSED, reason, now)
        self._dispatch()

    def reset(self) -> None:
        """Back to a fresh CLOSED breaker: state, counters and stats all cleared.

        Outcomes of calls still in flight from before the reset are not counted.
        """
        with self._lock:
            now = self._clock()
            self._refresh_locked(now)
            if self._state is not _CLOSED:
                self._transition_locked(_CLOSED, "reset", now)
            else:
                self._generation += 1
                self._consecutive = 0
                self._clear_window_locked()
            self._reset_generation = self._generation
            self._entered_at = now
            self._opened_at = None
            self._calls = self._successes = self._failures = 0
            self._ignored = self._rejections = self._state_changes = 0
            self._last_failure_type = None
            self._last_failure_message = None
            self._last_failure_at = None
        self._dispatch()

    # ---------------------------------------------------------- primitives

    # The CLOSED fast path of every entry point is compiled from one source, in
    # breaker_fastpath: inlined there, as a nested call would cost ~17% per call.

    @breaker_fastpath.compiled
    def before_call(self) -> int:  # type: ignore[empty-body]
        """Ask permission for one call: returns a permit token or raises CircuitOpenError.

        Every token must be handed back to exactly one of ``on_success``,
        ``on_failure`` or ``release``, or a half-open trial slot stays taken.
        """

    @breaker_fastpath.compiled
    def on_success(self, token: int) -> None:
        """Record that the call holding ``token`` succeeded."""

    def on_failure(self, token: int, exc: BaseException) -> None:
        """Record that the call holding ``token`` raised ``exc`` (excluded types are ignored)."""
        if (self._exclude and isinstance(exc, self._exclude)) or (
            self._ignore is not None and self._ignore(exc)
        ):
            self.release(token)
            return
        # Format the error before taking the lock: str() runs user code.
        kind = type(exc).__name__
        try:
            message = str(exc)
        except Exception:
            message = "<unprintable error>"
        with self._lock:
            self._record_failure_locked(token, kind, message)
        if self._pending:
            self._dispatch()

    def release(self, token: int) -> None:
        """The call holding ``token`` ended without a verdict (excluded error, cancelled)."""
        with self._lock:
            if token < self._reset_generation:
                return
            self._ignored += 1
            if token == self._generation and self._state is _HALF_OPEN:
                self._half_open_in_flight -= 1

    # ------------------------------------------------------------- wrappers

    @breaker_fastpath.compiled
    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:  # type: ignore[empty-body]
        """Run ``fn(*args, **kwargs)`` through the breaker; raises CircuitOpenError if open."""

    @breaker_fastpath.compiled
    async def call_async(  # type: ignore[empty-body]
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``fn(*args, **kwargs)`` through the breaker; cancellation counts as neither."""

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function so every call goes through the breaker.

        The wrapper runs the same compiled steps as :meth:`call` / :meth:`call_async`
        and carries the breaker as ``__circuit_breaker__`` (a RetryPolicy looks for it).
        """
        factory = _ASYNC_WRAPPER if inspect.iscoroutinefunction(fn) else _SYNC_WRAPPER
        wrapper = functools.wraps(fn)(factory(self, fn))
        wrapper.__circuit_breaker__ = self  # type: ignore[attr-defined]
        return wrapper  # type: ignore[no-any-return]

    def _admit(self) -> int:
        """The full admission check, off the fast path: half-opens, admits a trial or refuses."""
        try:
            with self._lock:
                return self._admit_locked(self._clock())
        finally:
            if self._pending:
                self._dispatch()

    # ------------------------------------------------- internals (lock held)

    def _refresh_locked(self, now: float) -> None:
        """Materialise OPEN -> HALF_OPEN once the timeout has passed."""
        if self._state is _OPEN:
            opened_at = self._opened_at
            assert opened_at is not None
            if now - opened_at >= self.timeout_seconds:
                self._transition_locked(
                    _HALF_OPEN,
                    f"timeout {self.timeout_seconds}s elapsed",
                    opened_at + self.timeout_seconds,
                )

    def _retry_after_locked(self, now: float) -> float:
        if self._state is _OPEN and self._opened_at is not None:
            return max(0.0, self._opened_at + self.timeout_seconds - now)
        return 0.0

    def _admit_locked(self, now: float) -> int:
        self._refresh_locked(now)
        state = self._state
        if state is _CLOSED:
            self._calls += 1
            return self._generation
        if state is _HALF_OPEN and self._half_open_in_flight < self.half_open_max_calls:
            self._half_open_in_flight += 1
            self._calls += 1
            return self._generation
        self._rejections += 1
        raise CircuitOpenError(self.name, self._retry_after_locked(now))

    def _record_success_locked(self, token: int) -> None:
        if token < self._reset_generation:
            return
        self._successes += 1
        if token != self._generation:
            return  # started before the last transition: counted, but no verdict
        self._consecutive = 0
        state = self._state
        if state is _CLOSED:
            if self._window is not None:
                self._push_window_locked(False)
        elif state is _HALF_OPEN:
            self._half_open_in_flight -= 1
            self._half_open_successes += 1
            n = self._half_open_successes
            # As resilience4j's permittedNumberOfCallsInHalfOpenState: all the permitted
            # trials must succeed, even when a sequential driver runs them one at a time.
            if n >= self.success_threshold and n >= self.half_open_max_calls:
                self._transition_locked(_CLOSED, f"{n} successes in half-open", self._clock())

    def _record_failure_locked(self, token: int, kind: str, message: str) -> None:
        if token < self._reset_generation:
            return
        now = self._clock()
        self._failures += 1
        self._last_failure_type = kind
        self._last_failure_message = message
        self._last_failure_at = now
        if token != self._generation:
            return
        self._consecutive += 1
        state = self._state
        if state is _CLOSED:
            window = self._window
            if window is not None:
                self._push_window_locked(True)
            if self._consecutive >= self.failure_threshold:
                self._transition_locked(
                    _OPEN,
                    f"{self._consecutive} consecutive failures ({_describe(kind, message)})",
                    now,
                )
                return
            if window is not None:
                assert self.failure_rate_threshold is not None
                n = len(window)
                if n >= self.minimum_calls:
                    rate = self._window_failures / n
                    if rate >= self.failure_rate_threshold:
                        self._transition_locked(
                            _OPEN,
                            f"failure rate {rate:.0%} over last {n} calls "
                            f"({_describe(kind, message)})",
                            now,
                        )
        elif state is _HALF_OPEN:
            self._half_open_in_flight -= 1
            self._transition_locked(
                _OPEN, f"failure in half-open ({_describe(kind, message)})", now
            )

    def _push_window_locked(self, failed: bool) -> None:
        window = self._window
        assert window is not None
        if len(window) == window.maxlen and window[0]:
            self._window_failures -= 1
        window.append(failed)
        if failed:
            self._window_failures += 1

    def _clear_window_locked(self) -> None:
        if self._window is not None:
            self._window.clear()
            self._window_failures = 0

    def _transition_locked(self, new: BreakerState, reason: str, at: float) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._state_changes += 1
        self._entered_at = at
        self._half_open_in_flight = 0
        self._half_open_successes = 0
        if new is _OPEN:
            self._opened_at = at
        elif new is _CLOSED:
            self._consecutive = 0
            self._clear_window_locked()
        self._fast = new is _CLOSED
        self._pending.append((old, new, reason))

    # ------------------------------------------------------- listener dispatch

    def _dispatch(self) -> None:
        """Run listeners for pending transitions, in order, outside the state lock.

        Only one thread dispatches at a time; a thread that finds another one
        dispatching leaves its events to it (that thread re-checks before leaving),
        and a listener that causes a transition has it dispatched after itself.
        """
        pending = self._pending
        gate = self._dispatch_lock
        while pending:
            if not gate.acquire(blocking=False):
                return
            try:
                while True:
                    try:
                        old, new, reason = pending.popleft()
                    except IndexError:
                        break
                    logger.log(
                        logging.WARNING if new is _OPEN else logging.INFO,
                        "circuit %r %s -> %s: %s",
                        self.name,
                        old.value,
                        new.value,
                        reason,
                    )
                    for listener in self._listeners:
                        try:
                            listener(self.name, old, new, reason)
                        except Exception:
                            logger.exception(
                                "listener %r of circuit %r failed on %s -> %s",
                                listener,
                                self.name,
                                old.value,
                                new.value,
                            )
            finally:
                gate.release()
