"""Every component's checker; ``check()`` gives the whole system's snapshot and history."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from robust_collector.config import HealthCheckConfig
from robust_collector.health.checker import HealthChecker
from robust_collector.health.levels import ErrorRecord, HealthLevel, HealthSnapshot
from robust_collector.health.rules import evaluate
from robust_collector.health.session import MarketSession
from robust_collector.secrets import scrub


class SystemHealthMonitor:
    """Holds every component's checker; ``check()`` gives the system's snapshot.

    The overall level is the worst component level, raised to CRITICAL when no
    symbol produces data. History and recent errors are kept, bounded.
    """

    def __init__(
        self,
        config: HealthCheckConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or HealthCheckConfig()
        self.clock = clock
        self.session = MarketSession(self.config.session)
        self._checkers: dict[str, HealthChecker] = {}
        self._lock = threading.Lock()
        self.history: deque[HealthSnapshot] = deque(maxlen=self.config.history_size)
        self.errors: deque[ErrorRecord] = deque(maxlen=self.config.max_recent_errors)
        self._last: HealthSnapshot | None = None

    def checker(self, name: str, kind: str = "component") -> HealthChecker:
        """The checker for ``name``, created on first use."""
        with self._lock:
            c = self._checkers.get(name)
            if c is None:
                c = HealthChecker(
                    name, kind=kind, window_seconds=self.config.window_seconds, clock=self.clock
                )
                self._checkers[name] = c
            return c

    @property
    def checkers(self) -> Mapping[str, HealthChecker]:
        return dict(self._checkers)

    def record_error(
        self, component: str, error: BaseException | str, *, symbol: str | None = None
    ) -> ErrorRecord:
        """Keep one error (redacted) in the bounded recent-errors list."""
        if isinstance(error, BaseException):
            etype, msg = type(error).__name__, scrub(error)
        else:
            etype, msg = "Error", scrub(error)
        rec = ErrorRecord(self.clock(), component, symbol, etype, msg)
        self.errors.append(rec)
        return rec

    def check(self) -> HealthSnapshot:
        """Evaluate every component now and keep the snapshot in the history."""
        snap = self.snapshot()
        self.history.append(snap)
        return snap

    def snapshot(self) -> HealthSnapshot:
        """Evaluate every component now (immutable), without touching the history."""
        now = self.clock()
        comps = tuple(
            evaluate(c, self.config, self.session, now) for c in list(self._checkers.values())
        )
        level = max((c.level for c in comps), default=HealthLevel.HEALTHY)
        reasons = [r for c in comps for r in c.reasons]
        # symbols whose source has ended (a finished replay) are not expected to produce
        symbols = [c for c in comps if c.kind == "symbol" and c.metrics.get("expects_data", True)]
        if symbols and self.session.is_open(now):
            # a symbol that has not produced yet gets max_stale_seconds from its start
            producing = [
                c for c in symbols if c.metrics["data_age_seconds"] <= self.config.max_stale_seconds
            ]
            if not producing:
                level = HealthLevel.CRITICAL
                reasons.insert(0, "no symbol is producing data")
        snap = HealthSnapshot(now, level, tuple(reasons), comps)
        self._last = snap
        return snap

    @property
    def last(self) -> HealthSnapshot | None:
        return self._last
