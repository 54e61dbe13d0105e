"""Health monitoring: per-component checkers, four ordered levels, reasons for each.

A ``HealthChecker`` per component (the collector, each symbol, the source,
storage) counts operations over a rolling window; ``SystemHealthMonitor.check()``
turns those counts and the component's facts (breaker state, storage mode) into
levels with the reasons that caused them, keeps a bounded history and the recent
errors. Time is injected, so every rule is tested without sleeping.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import zoneinfo
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from robust_collector.config import HealthCheckConfig, SessionConfig
from robust_collector.secrets import scrub


class HealthLevel(IntEnum):
    """Ordered health levels: HEALTHY < DEGRADED < UNHEALTHY < CRITICAL."""

    HEALTHY = 0
    DEGRADED = 1
    UNHEALTHY = 2
    CRITICAL = 3

    @property
    def icon(self) -> str:
        return _ICONS[self]

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | int | HealthLevel) -> HealthLevel:
        if isinstance(value, str):
            return cls[value.upper()]
        return cls(value)


_ICONS = {
    HealthLevel.HEALTHY: "✅",
    HealthLevel.DEGRADED: "⚠️",
    HealthLevel.UNHEALTHY: "❌",
    HealthLevel.CRITICAL: "🔴",
}


class MarketSession:
    """Whether the market is open at a given UTC time (always, unless enabled)."""

    def __init__(self, config: SessionConfig | None = None) -> None:
        self.config = config or SessionConfig()
        c = self.config
        self._tz = zoneinfo.ZoneInfo(c.timezone)
        self._open = dt.time.fromisoformat(c.open)
        self._close = dt.time.fromisoformat(c.close)
        self._days = frozenset(c.weekdays)
        self._holidays = frozenset(dt.date.fromisoformat(d) for d in c.holidays)

    def is_open(self, wall_seconds: float) -> bool:
        """True when ``wall_seconds`` (epoch) falls inside the trading session."""
        if not self.config.enabled:
            return True
        local = dt.datetime.fromtimestamp(wall_seconds, tz=self._tz)
        if local.weekday() not in self._days or local.date() in self._holidays:
            return False
        return self._open <= local.time() < self._close

    def open_seconds_between(self, start: float, end: float, step: float = 60.0) -> float:
        """Approximate seconds of open market in ``[start, end]`` (minute resolution)."""
        if not self.config.enabled or end <= start:
            return max(0.0, end - start)
        total, t = 0.0, start
        while t < end:
            nxt = min(end, t + step)
            if self.is_open(t):
                total += nxt - t
            t = nxt
        return total


@dataclass(frozen=True)
class ComponentHealth:
    """One component's level, the reasons for it, and the numbers behind it."""

    name: str
    kind: str
    level: HealthLevel
    reasons: tuple[str, ...]
    metrics: Mapping[str, Any]


@dataclass(frozen=True)
class HealthSnapshot:
    """The whole system at one moment: the overall (worst) level and every component."""

    ts: float
    level: HealthLevel
    reasons: tuple[str, ...]
    components: tuple[ComponentHealth, ...]

    def component(self, name: str) -> ComponentHealth:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)


@dataclass(frozen=True)
class ErrorRecord:
    """One recent error: when, where, what (secrets already redacted)."""

    ts: float
    component: str
    symbol: str | None
    error_type: str
    message: str


@dataclass
class HealthChecker:
    """Counts one component's operations over a rolling window, plus its facts.

    ``facts`` carries component-specific state (breaker state, storage mode,
    queue depth) that the level rules read.
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
    facts: dict[str, Any] = field(default_factory=dict)
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
            **self.facts,
        }


def _clock_text(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%H:%M:%S")


def evaluate(
    checker: HealthChecker,
    config: HealthCheckConfig,
    session: MarketSession,
    now: float,
) -> ComponentHealth:
    """Apply the documented level rules to one component (see docs/health.md)."""
    m = checker.metrics()
    name = checker.name
    level = HealthLevel.HEALTHY
    reasons: list[str] = []

    def raise_to(new: HealthLevel, reason: str) -> None:
        nonlocal level
        level = max(level, new)
        reasons.append(scrub(reason))

    breaker = m.get("breaker_state")
    if breaker in ("OPEN", "HALF_OPEN"):
        since = m.get("breaker_since")
        why = m.get("breaker_reason")
        text = f"{name}: breaker {breaker}"
        if since is not None:
            text += f" since {_clock_text(since)}"
        if why:
            text += f" ({why})"
        raise_to(HealthLevel.DEGRADED, text)

    # supervised units (see supervisor.py): a crash is never silent
    for u in m.get("units_troubled") or ():
        err = u.get("last_error") or "unknown error"
        if u.get("state") == "restarting":
            if u.get("recent_crashes", 0) >= m.get("crash_loop_threshold", 5):
                raise_to(
                    HealthLevel.CRITICAL,
                    f"{u['unit']} is crash-looping: {u['recent_crashes']} crashes in a minute "
                    f"(last: {err})",
                )
            else:
                raise_to(
                    HealthLevel.UNHEALTHY,
                    f"{u['unit']} crashed ({err}); restarting (restart {u.get('restarts', 1)})",
                )
        else:
            raise_to(
                HealthLevel.DEGRADED,
                f"{u['unit']} crashed {u.get('recent_crashes', 1)}x in the last minute "
                f"(last: {err}); running again",
            )
    stalled = m.get("loop_stalled_seconds")
    if stalled is not None and stalled > 2.0:
        raise_to(HealthLevel.UNHEALTHY, f"{name}: event loop stalled for {stalled:.1f}s")
    if m.get("writer_alive") is False:
        raise_to(HealthLevel.CRITICAL, f"{name}: the database writer thread is not running")
    elif m.get("writer_recent_crashes"):
        raise_to(
            HealthLevel.DEGRADED,
            f"{name}: writer restarted after an unexpected error "
            f"({m['writer_recent_crashes']}x in the last minute, {m.get('writer_crashes', 0)} "
            "in all)",
        )

    mode = m.get("storage_mode")
    if mode == "backup":
        backlog = m.get("backup_files", 0)
        raise_to(
            HealthLevel.DEGRADED,
            f"{name}: database failing, writing to backup files ({backlog} waiting to replay)",
        )
    elif mode == "failing":
        raise_to(
            HealthLevel.CRITICAL,
            f"{name}: database and backup both failing; {m.get('held_rows', 0)} rows held in "
            "memory (data at risk)",
        )
    if m.get("lost_rows"):
        raise_to(HealthLevel.CRITICAL, f"{name}: {m['lost_rows']} rows lost")
    if m.get("queue_full_spills"):
        raise_to(
            HealthLevel.DEGRADED,
            f"{name}: write queue overflowed {m['queue_full_spills']} times (spilled to backup)",
        )

    # a streaming source (see sources/stream_runner.py): its state, overflow, silent symbols
    paused = m.get("source_paused")  # an HTTP source whose credentials were refused
    if paused:
        raise_to(HealthLevel.CRITICAL, f"{name}: {paused}")
    stream = m.get("stream_state")
    if stream == "failed":
        raise_to(HealthLevel.CRITICAL, f"{name}: stream stopped: {m.get('stream_error')}")
    elif stream in ("connecting", "reconnecting"):
        cause = m.get("stream_down_cause")
        raise_to(
            HealthLevel.UNHEALTHY,
            f"{name}: stream down{f' ({cause})' if cause else ''}, reconnecting "
            f"(attempt {m.get('reconnect_attempts', 0) + 1})",
        )
    if m.get("stream_spills"):
        raise_to(
            HealthLevel.DEGRADED,
            f"{name}: stream queue overflowed {m['stream_spills']} times "
            f"({m.get('stream_spilled_messages', 0)} messages validated at once and spilled "
            "to backup)",
        )
    refused = m.get("subscription_refused")  # a stream's server refused this symbol
    if refused:
        raise_to(HealthLevel.UNHEALTHY, f"{name}: {refused}")
    if m.get("silent"):
        raise_to(
            HealthLevel.DEGRADED,
            f"{name}: stale, no quote for {m.get('silent_seconds', 0.0):.1f}s "
            f"(threshold {m.get('silence_threshold_seconds', 0.0):.1f}s) while the stream is up",
        )

    tracks_data = checker.kind in ("symbol", "source", "collector")
    if tracks_data and m.get("expects_data", True):
        age = m["data_age_seconds"]
        if age > config.max_stale_seconds:
            open_age = session.open_seconds_between(now - age, now)
            if open_age > config.max_stale_seconds:
                what = "no data yet" if not m["has_data"] else "no data"
                raise_to(
                    HealthLevel.UNHEALTHY,
                    f"{name}: {what} for {age:.0f}s (max {config.max_stale_seconds:g}s)",
                )

    # a component whose last recovery_successes operations all succeeded has recovered:
    # the window's past errors stay in the history, not in its level
    recovered = m.get("success_streak", 0) >= config.recovery_successes
    epm = m["errors_per_minute"]
    if epm > config.max_errors_per_minute and not recovered:
        raise_to(
            HealthLevel.UNHEALTHY,
            f"{name}: {epm:.1f} errors/minute (max {config.max_errors_per_minute:g})",
        )
    rate = m["window_success_rate"]
    if rate is not None and m["window_operations"] >= 5 and not recovered:
        if rate < config.unhealthy_success_rate:
            raise_to(
                HealthLevel.UNHEALTHY,
                f"{name}: success rate {rate:.0%} (below {config.unhealthy_success_rate:.0%})",
            )
        elif rate < config.degraded_success_rate:
            raise_to(
                HealthLevel.DEGRADED,
                f"{name}: success rate {rate:.0%} (below {config.degraded_success_rate:.0%})",
            )
    return ComponentHealth(name, checker.kind, level, tuple(reasons), m)


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
