"""One circuit breaker per key (per symbol), created on first use with shared defaults."""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from typing import Any

from robust_collector.resilience.breaker import (
    BreakerListener,
    BreakerState,
    BreakerStats,
    CircuitBreaker,
)

__all__ = ["BreakerRegistry"]


class BreakerRegistry:
    """Holds one independent :class:`CircuitBreaker` per key, built from shared defaults.

    ``BreakerRegistry(failure_threshold=5, timeout_seconds=60)`` accepts every
    ``CircuitBreaker`` keyword except ``name`` (the breaker's name is ``str(key)``).
    Iterating yields the breakers (each knows its ``name``) in creation order.
    """

    def __init__(self, **defaults: Any) -> None:
        if "name" in defaults:
            raise TypeError("BreakerRegistry defaults cannot include 'name' (it is the key)")
        CircuitBreaker("defaults-check", **defaults)  # fail now, not on the first symbol
        self._defaults = dict(defaults)
        self._lock = threading.Lock()
        self._breakers: dict[Hashable, CircuitBreaker] = {}
        self._listeners: list[BreakerListener] = []

    @property
    def defaults(self) -> dict[str, Any]:
        """A copy of the keyword arguments every new breaker is built with."""
        return dict(self._defaults)

    def get(self, key: Hashable) -> CircuitBreaker:
        """The breaker for ``key``, created (with the shared defaults and listeners) if new."""
        breaker = self._breakers.get(key)
        if breaker is not None:
            return breaker
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                breaker = CircuitBreaker(str(key), **self._defaults)
                for listener in self._listeners:
                    breaker.add_listener(listener)
                self._breakers[key] = breaker
            return breaker

    __getitem__ = get

    def __contains__(self, key: object) -> bool:
        return key in self._breakers

    def __len__(self) -> int:
        return len(self._breakers)

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def keys(self) -> list[Hashable]:
        """The keys that have a breaker, in creation order."""
        return list(self._breakers)

    def items(self) -> list[tuple[Hashable, CircuitBreaker]]:
        """``(key, breaker)`` pairs, in creation order."""
        return list(self._breakers.items())

    def states(self) -> dict[Hashable, BreakerState]:
        """``{key: state}`` for every breaker, reading each clock (OPEN may read HALF_OPEN)."""
        return {key: breaker.state for key, breaker in self.items()}

    def stats(self) -> dict[Hashable, BreakerStats]:
        """``{key: stats snapshot}`` for every breaker."""
        return {key: breaker.stats for key, breaker in self.items()}

    def add_listener(self, listener: BreakerListener) -> BreakerListener:
        """Add ``listener`` to every breaker, including those created later; returns it."""
        with self._lock:
            if listener not in self._listeners:
                self._listeners.append(listener)
            breakers = list(self._breakers.values())
        for breaker in breakers:
            breaker.add_listener(listener)
        return listener

    def remove_listener(self, listener: BreakerListener) -> None:
        """Remove a shared listener from every breaker."""
        with self._lock:
            self._listeners = [cb for cb in self._listeners if cb != listener]
            breakers = list(self._breakers.values())
        for breaker in breakers:
            breaker.remove_listener(listener)

    def reset_all(self) -> None:
        """Reset every breaker to a fresh CLOSED state."""
        for breaker in self:
            breaker.reset()

    def __repr__(self) -> str:
        return f"<BreakerRegistry {len(self)} breakers>"
