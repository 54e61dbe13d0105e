"""One component's rolling operation counts plus its typed facts."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from robust_collector.health.facts import Facts
from robust_collector.secrets import scrub


@dataclass
class HealthChecker:
    """Counts one component's operations over a rolling window, plus its typed facts.

    ``facts`` (see ``facts.py``) carries component-specific state (breaker state,
    storage mode, stream state) that the level rules read.
    """

    name: str
    kind: str = "component"
    window_seconds: float = 60.0
    clock: Callable[[], float] = time.time
    operations: int = 0
    successes: int = 0
    failures: int = 0
    last_success: float | None = None
    last_failure: float | None = None
    last_error: str | None = None
    streak: int = 0  # successful operations since the last failure
    created: float = 0.0
    facts: Facts = field(default_factory=Facts)
    # one [second, operations, failures] bucket per second of the window: memory stays
    # the same at 1 quote/s or 100,000 quotes/s
    _buckets: deque[list[int]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.created = self.clock()

    def record_success(
        self, data_time: float | None = None, *, fresh: bool = True, count: int = 1
    ) -> None:
        """``count`` successful operations; ``fresh`` ones (good data) also reset the data age."""
        now = self.clock()
        with self._lock:
            self.operations += count
            self.successes += count
            self.streak += count
            if fresh:
                self.last_success = data_time if data_time is not None else now
            self._bucket(now)[1] += count

    def record_failure(self, error: str | BaseException | None = None) -> None:
        """One failed operation; ``error`` becomes ``last_error`` (redacted)."""
        now = self.clock()
        with self._lock:
            self.operations += 1
            self.failures += 1
            self.streak = 0
            self.last_failure = now
            if error is not None:
                text = (
                    error if isinstance(error, str) else f"{type(error).__name__}: {scrub(error)}"
                )
                self.last_error = scrub(text)
            b = self._bucket(now)
            b[1] += 1
            b[2] += 1

    def _bucket(self, now: float) -> list[int]:
        """The current second's bucket (call with the lock held); old ones are dropped."""
        sec = int(now)
        buckets = self._buckets
        if buckets and buckets[-1][0] == sec:
            return buckets[-1]
        b = [sec, 0, 0]
        buckets.append(b)
        oldest = sec - int(self.window_seconds)
        while buckets[0][0] < oldest:
            buckets.popleft()
        return b

    def window(self) -> tuple[int, int]:
        """(operations, failures) inside the rolling window (one-second resolution)."""
        oldest = self.clock() - self.window_seconds
        with self._lock:
            live = [b for b in self._buckets if b[0] + 1 > oldest]
        return sum(b[1] for b in live), sum(b[2] for b in live)

    def metrics(self) -> dict[str, Any]:
        """Totals, window rates and data age, as plain numbers."""
        now = self.clock()
        ops, fails = self.window()
        minutes = self.window_seconds / 60.0
        since = self.last_success if self.last_success is not None else self.created
        return {
            "operations": self.operations,
            "successes": self.successes,
            "failures": self.failures,
            "success_rate": (self.successes / self.operations) if self.operations else None,
            "window_operations": ops,
            "window_failures": fails,
            "window_success_rate": ((ops - fails) / ops) if ops else None,
            "errors_per_minute": fails / minutes,
            "data_age_seconds": max(0.0, now - since),
            "has_data": self.last_success is not None,
            "success_streak": self.streak,
            "last_error": self.last_error,
            **self.facts.metrics(),
        }
