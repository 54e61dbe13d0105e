"""The documented level rules (docs/health.md): one component's facts and counts to a level."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from robust_collector.config import HealthCheckConfig
from robust_collector.health.checker import HealthChecker
from robust_collector.health.facts import CollectorFacts, StorageFacts, StreamFacts
from robust_collector.health.levels import ComponentHealth, HealthLevel
from robust_collector.health.session import MarketSession
from robust_collector.secrets import scrub


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

    f = checker.facts
    for label, b in ((name, f.breaker), (f"{name} trades", f.trade_breaker)):
        if b is not None and b.state in ("OPEN", "HALF_OPEN"):
            text = f"{label}: breaker {b.state}"
            if b.since is not None:
                text += f" since {_clock_text(b.since)}"
            if b.reason:
                text += f" ({b.reason})"
            raise_to(HealthLevel.DEGRADED, text)

    if f.collector is not None:  # supervised units (see runtime/supervisor.py): never silent
        _supervision(name, f.collector, raise_to)
    if f.storage is not None:
        _storage(name, f.storage, raise_to, now)

    if f.paused:  # an HTTP source whose credentials were refused
        raise_to(HealthLevel.CRITICAL, f"{name}: {f.paused}")
    if f.stream is not None:  # a streaming source: its state and overflow
        _stream(name, f.stream, raise_to)
    if f.refused:  # a stream's server refused this symbol
        raise_to(HealthLevel.UNHEALTHY, f"{name}: {f.refused}")
    if f.silence is not None and f.silence.silent:
        raise_to(
            HealthLevel.DEGRADED,
            f"{name}: stale, no quote for {f.silence.silent_seconds:.1f}s "
            f"(threshold {f.silence.threshold_seconds:.1f}s) while the stream is up",
        )

    tracks_data = checker.kind in ("symbol", "source", "collector")
    if tracks_data and f.expects_data:
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


_Raise = Callable[[HealthLevel, str], None]


def _supervision(name: str, f: CollectorFacts, raise_to: _Raise) -> None:
    """A crash-looping unit is CRITICAL, a restarting one UNHEALTHY, a recent crash DEGRADED."""
    for u in f.units_troubled:
        err = u.last_error or "unknown error"
        if u.state == "restarting":
            if u.recent_crashes >= f.crash_loop_threshold:
                raise_to(
                    HealthLevel.CRITICAL,
                    f"{u.unit} is crash-looping: {u.recent_crashes} crashes in a minute "
                    f"(last: {err})",
                )
            else:
                raise_to(
                    HealthLevel.UNHEALTHY,
                    f"{u.unit} crashed ({err}); restarting (restart {u.restarts})",
                )
        else:
            raise_to(
                HealthLevel.DEGRADED,
                f"{u.unit} crashed {u.recent_crashes}x in the last minute "
                f"(last: {err}); running again",
            )
    stalled = f.loop_stalled_seconds
    if stalled is not None and stalled > 2.0:
        raise_to(HealthLevel.UNHEALTHY, f"{name}: event loop stalled for {stalled:.1f}s")


REOPEN_WINDOW_SECONDS = 60.0  # a database file found gone or replaced reads DEGRADED this long


def _storage(name: str, f: StorageFacts, raise_to: _Raise, now: float) -> None:
    """A dead or crash-looping writer or failing backup is CRITICAL, a restarting writer
    UNHEALTHY; a recent writer crash, backup mode and spills are DEGRADED."""
    if not f.writer_alive:
        raise_to(HealthLevel.CRITICAL, f"{name}: the database writer thread is not running")
    elif f.writer_restarting:
        err = f.writer_last_crash or "unknown error"
        if f.writer_recent_crashes >= f.crash_loop_threshold:
            raise_to(
                HealthLevel.CRITICAL,
                f"{name}: the database writer is crash-looping: {f.writer_recent_crashes} "
                f"crashes in a minute (last: {err})",
            )
        else:
            since = f.writer_restarting_since
            how_long = "" if since is None else f" for {max(0.0, now - since):.1f}s"
            raise_to(
                HealthLevel.UNHEALTHY,
                f"{name}: the database writer crashed ({err}); restarting{how_long} "
                f"({f.writer_recent_crashes}x in the last minute)",
            )
    elif f.writer_recent_crashes:
        raise_to(
            HealthLevel.DEGRADED,
            f"{name}: writer restarted after an unexpected error "
            f"({f.writer_recent_crashes}x in the last minute, {f.writer_crashes} in all)",
        )
    if f.storage_mode == "backup":
        raise_to(
            HealthLevel.DEGRADED,
            f"{name}: database failing, writing to backup files "
            f"({f.backup_files} waiting to replay)",
        )
    elif f.storage_mode == "failing":
        raise_to(
            HealthLevel.CRITICAL,
            f"{name}: database and backup both failing; {f.held_rows} rows held in "
            "memory (data at risk)",
        )
    if f.reopened_at is not None and now - f.reopened_at < REOPEN_WINDOW_SECONDS:
        raise_to(
            HealthLevel.DEGRADED,
            f"{name}: {f.reopen_reason} ({max(0.0, now - f.reopened_at):.0f}s ago)",
        )
    if f.lost_rows:
        raise_to(HealthLevel.CRITICAL, f"{name}: {f.lost_rows} rows lost")
    if f.queue_full_spills:
        raise_to(
            HealthLevel.DEGRADED,
            f"{name}: write queue overflowed {f.queue_full_spills} times (spilled to backup)",
        )


def _stream(name: str, f: StreamFacts, raise_to: _Raise) -> None:
    """A failed stream is CRITICAL, a reconnecting one UNHEALTHY, queue overflow DEGRADED."""
    if f.state == "failed":
        raise_to(HealthLevel.CRITICAL, f"{name}: stream stopped: {f.error}")
    elif f.state in ("connecting", "reconnecting"):
        cause = f" ({f.down_cause})" if f.down_cause else ""
        raise_to(
            HealthLevel.UNHEALTHY,
            f"{name}: stream down{cause}, reconnecting (attempt {f.reconnect_attempts + 1})",
        )
    if f.spills:
        raise_to(
            HealthLevel.DEGRADED,
            f"{name}: stream queue overflowed {f.spills} times "
            f"({f.spilled_messages} messages validated at once and spilled to backup)",
        )
