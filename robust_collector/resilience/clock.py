"""A manual clock with matching sleeps, so time-driven code is tested without waiting."""

from __future__ import annotations

import asyncio
import threading

__all__ = ["ManualClock"]


class ManualClock:
    """A monotonic clock that moves only when told; its ``sleep`` advances it instantly.

    Pass ``clock=mc`` and ``sleep=mc.sleep`` / ``async_sleep=mc.async_sleep`` to a
    breaker, retry policy or gate; ``mc.sleeps`` records every requested sleep.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        """The current reading."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds}s)")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        """Record the sleep and advance the clock by it, at once."""
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))

    async def async_sleep(self, seconds: float) -> None:
        """Like :meth:`sleep`, and yields to the event loop once (so cancellation lands)."""
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"<ManualClock now={self._now}>"
