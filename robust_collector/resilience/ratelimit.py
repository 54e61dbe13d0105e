"""A rate-limit signal shared by every symbol of one source.

When one symbol hears "429, retry after 30 s", the whole source is rate-limited,
not just that symbol. The symbol's retry policy calls ``gate.block_for(30)``;
every other symbol sharing the gate waits for it before its next attempt instead
of spending its own request (and its own breaker failures) to learn the same thing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

__all__ = ["RateLimitGate"]


class RateLimitGate:
    """A shared "closed until t" timestamp: ``block_for`` pushes it later, ``wait`` honours it.

    The gate never shortens a block: ``block_for(5)`` after ``block_for(60)`` keeps
    the 60 s. Use the same ``clock`` as the retry policies that share it.
    """

    def __init__(self, name: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._until = float("-inf")
        self._blocks = 0

    def block_for(self, seconds: float) -> None:
        """Close the gate for ``seconds`` from now (no-op if it is already closed longer)."""
        seconds = float(seconds)
        if not seconds > 0:  # also rejects NaN
            return
        with self._lock:
            until = self._clock() + seconds
            if until > self._until:
                self._until = until
            self._blocks += 1

    def remaining(self) -> float:
        """Seconds until the gate opens; 0.0 when it is open."""
        return max(0.0, self._until - self._clock())

    def is_open(self) -> bool:
        """True when an attempt may go ahead now."""
        return self.remaining() <= 0.0

    @property
    def blocks(self) -> int:
        """How many times ``block_for`` was called with a positive duration."""
        return self._blocks

    def reopen(self) -> None:
        """Open the gate now, dropping any block."""
        with self._lock:
            self._until = float("-inf")

    def wait(self, sleep: Callable[[float], object] = time.sleep) -> float:
        """Block the thread until the gate opens; returns the seconds asked of ``sleep``.

        Sleeps once per distinct block, so a block extended while sleeping is also
        honoured, and a ``sleep`` that returns early (an interrupt) is not looped on.
        """
        waited = 0.0
        seen = None
        while True:
            until = self._until
            remaining = until - self._clock()
            if remaining <= 0 or until == seen:
                return waited
            seen = until
            sleep(remaining)
            waited += remaining

    async def wait_async(
        self, async_sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
    ) -> float:
        """Await until the gate opens; returns the seconds asked of ``async_sleep``."""
        waited = 0.0
        seen = None
        while True:
            until = self._until
            remaining = until - self._clock()
            if remaining <= 0 or until == seen:
                return waited
            seen = until
            await async_sleep(remaining)
            waited += remaining

    def __repr__(self) -> str:
        return f"<RateLimitGate {self.name!r} remaining={self.remaining():.1f}s>"
