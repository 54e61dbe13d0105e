"""Health levels from an injected clock: every rule, its reasons, sessions, history."""

from __future__ import annotations

import datetime as dt

import pytest

from robust_collector.config import HealthCheckConfig, SessionConfig
from robust_collector.health import (
    BreakerFacts,
    HealthChecker,
    HealthLevel,
    MarketSession,
    StorageFacts,
    SystemHealthMonitor,
)
from robust_collector.resilience import ManualClock
from robust_collector.secrets import register_secret

T0 = 1_700_000_000.0  # the injected wall clock starts here


def monitor(**cfg) -> tuple[SystemHealthMonitor, ManualClock]:
    clock = ManualClock(T0)
    return SystemHealthMonitor(HealthCheckConfig(**cfg), clock=clock), clock


def test_levels_are_ordered_with_icons():
    assert HealthLevel.HEALTHY < HealthLevel.DEGRADED < HealthLevel.UNHEALTHY < HealthLevel.CRITICAL
    assert HealthLevel.HEALTHY.icon == "✅"
    assert HealthLevel.parse("degraded") is HealthLevel.DEGRADED


def test_checker_counts_rates_and_data_age():
    clock = ManualClock(T0)
    c = HealthChecker("SPY", kind="symbol", window_seconds=60, clock=clock)
    for _ in range(9):
        c.record_success()
    c.record_failure(TimeoutError("API timeout after 5s"))
    clock.advance(2)
    m = c.metrics()
    assert (m["operations"], m["successes"], m["failures"]) == (10, 9, 1)
    assert m["success_rate"] == pytest.approx(0.9)
    assert m["errors_per_minute"] == 1
    assert m["data_age_seconds"] == pytest.approx(2)
    assert m["last_error"] == "TimeoutError: API timeout after 5s"
    clock.advance(61)  # the window forgets, the totals do not
    m = c.metrics()
    assert m["window_operations"] == 0 and m["errors_per_minute"] == 0 and m["operations"] == 10


def test_all_good_is_healthy():
    mon, _clock = monitor()
    for s in ("SPY", "QQQ"):
        mon.checker(s, "symbol").record_success()
    snap = mon.check()
    assert snap.level is HealthLevel.HEALTHY and snap.reasons == ()


def test_open_breaker_degrades_with_the_reason_text():
    mon, _clock = monitor()
    spy, qqq = mon.checker("SPY", "symbol"), mon.checker("QQQ", "symbol")
    spy.record_success()
    qqq.record_success()
    since = dt.datetime(2025, 1, 10, 14, 26, 15, tzinfo=dt.UTC).timestamp()
    qqq.facts.breaker = BreakerFacts("OPEN", since, "5 consecutive TimeoutError")
    snap = mon.check()
    assert snap.level is HealthLevel.DEGRADED
    assert snap.reasons == ("QQQ: breaker OPEN since 14:26:15 (5 consecutive TimeoutError)",)
    assert snap.component("SPY").level is HealthLevel.HEALTHY


def test_stale_data_is_unhealthy():
    mon, clock = monitor(max_stale_seconds=300)
    spy = mon.checker("SPY", "symbol")
    qqq = mon.checker("QQQ", "symbol")
    spy.record_success()
    qqq.record_success()
    clock.advance(200)
    qqq.record_success()
    clock.advance(101)
    snap = mon.check()
    assert snap.component("SPY").level is HealthLevel.UNHEALTHY
    assert snap.component("SPY").reasons == ("SPY: no data for 301s (max 300s)",)
    assert snap.component("QQQ").level is HealthLevel.HEALTHY
    assert snap.level is HealthLevel.UNHEALTHY


def test_errors_per_minute_above_the_limit_is_unhealthy():
    mon, _clock = monitor(max_errors_per_minute=10)
    c = mon.checker("IWM", "symbol")
    c.record_success()
    for _ in range(10):
        c.record_failure("x")
    assert not any(
        "errors/minute" in r for r in mon.check().reasons
    )  # 10 is the limit, not over it
    c.record_failure("x")
    snap = mon.check()
    assert "IWM: 11.0 errors/minute (max 10)" in snap.reasons
    assert snap.component("IWM").level is HealthLevel.UNHEALTHY


def test_success_rate_thresholds():
    mon, _clock = monitor(max_errors_per_minute=1000)
    c = mon.checker("SPY", "symbol")
    for _ in range(90):
        c.record_success()
    for _ in range(10):
        c.record_failure("x")
    snap = mon.check()
    assert snap.component("SPY").level is HealthLevel.DEGRADED
    assert "SPY: success rate 90% (below 95%)" in snap.reasons
    for _ in range(200):
        c.record_failure("x")
    assert mon.check().component("SPY").level is HealthLevel.UNHEALTHY


def test_storage_backup_mode_degrades_and_both_failing_is_critical():
    mon, _clock = monitor()
    mon.checker("SPY", "symbol").record_success()
    st = mon.checker("storage", "storage")
    st.facts.storage = StorageFacts(storage_mode="backup", backup_files=2)
    snap = mon.check()
    assert snap.level is HealthLevel.DEGRADED
    assert (
        "storage: database failing, writing to backup files (2 waiting to replay)" in snap.reasons
    )
    st.facts.storage = StorageFacts(storage_mode="failing", held_rows=300)
    snap = mon.check()
    assert snap.level is HealthLevel.CRITICAL
    assert any("both failing" in r and "300 rows" in r for r in snap.reasons)


def test_no_symbol_producing_is_critical_but_not_at_startup():
    mon, clock = monitor(max_stale_seconds=60)
    a, b = mon.checker("SPY", "symbol"), mon.checker("QQQ", "symbol")
    assert mon.check().level is HealthLevel.HEALTHY  # just started: grace of max_stale_seconds
    clock.advance(61)
    snap = mon.check()
    assert snap.level is HealthLevel.CRITICAL and snap.reasons[0] == "no symbol is producing data"
    a.record_success()
    snap = mon.check()
    assert snap.level is HealthLevel.UNHEALTHY  # QQQ still stale, SPY producing
    b.record_success()
    assert mon.check().level is HealthLevel.HEALTHY


NY = SessionConfig(
    enabled=True, timezone="America/New_York", open="09:30", close="16:00", holidays=("2025-01-09",)
)


def ny(y, mo, d, h, mi) -> float:
    return dt.datetime(y, mo, d, h, mi, tzinfo=dt.timezone(dt.timedelta(hours=-5))).timestamp()


def test_market_session_open_close_weekend_holiday():
    s = MarketSession(NY)
    assert s.is_open(ny(2025, 1, 10, 10, 0))  # Friday morning
    assert not s.is_open(ny(2025, 1, 10, 9, 29))
    assert not s.is_open(ny(2025, 1, 10, 16, 0))
    assert not s.is_open(ny(2025, 1, 11, 12, 0))  # Saturday
    assert not s.is_open(ny(2025, 1, 9, 12, 0))  # holiday
    assert MarketSession(SessionConfig(enabled=False)).is_open(ny(2025, 1, 11, 3, 0))


def test_silence_outside_the_session_is_not_stale():
    clock = ManualClock(ny(2025, 1, 10, 15, 58))
    mon = SystemHealthMonitor(HealthCheckConfig(max_stale_seconds=300, session=NY), clock=clock)
    c = mon.checker("SPY", "symbol")
    c.record_success()
    # 2 hours later but only 2 minutes were in session
    clock.advance(ny(2025, 1, 10, 18, 0) - clock())
    assert mon.check().level is HealthLevel.HEALTHY
    # Monday 4 minutes after the open: 6 open minutes in all
    clock.advance(ny(2025, 1, 13, 9, 34) - clock())
    snap = mon.check()
    assert snap.component("SPY").level is HealthLevel.UNHEALTHY
    c.record_success()  # fresh again: healthy for 299 more open seconds
    clock.advance(299)
    assert mon.check().level is HealthLevel.HEALTHY


def test_stale_inside_the_session_counts():
    clock = ManualClock(ny(2025, 1, 10, 10, 0))
    mon = SystemHealthMonitor(HealthCheckConfig(max_stale_seconds=300, session=NY), clock=clock)
    mon.checker("SPY", "symbol").record_success()
    clock.advance(301)
    assert mon.check().component("SPY").level is HealthLevel.UNHEALTHY


def test_history_and_errors_are_bounded():
    mon, clock = monitor(history_size=5, max_recent_errors=3)
    mon.checker("SPY", "symbol").record_success()
    for i in range(12):
        clock.advance(1)
        mon.check()
        mon.record_error("SPY", TimeoutError(f"timeout {i}"), symbol="SPY")
    assert len(mon.history) == 5 and mon.history[-1].ts == clock()
    assert [e.message for e in mon.errors] == ["timeout 9", "timeout 10", "timeout 11"]
    assert mon.errors[-1].error_type == "TimeoutError"


def test_secrets_never_reach_errors_or_reasons():
    register_secret("sk-live-SECRET123")
    mon, _clock = monitor()
    c = mon.checker("SPY", "symbol")
    c.record_failure(RuntimeError("GET /quote?token=sk-live-SECRET123 failed"))
    rec = mon.record_error("SPY", "401 for key sk-live-SECRET123")
    assert "SECRET123" not in rec.message and "***" in rec.message
    assert "SECRET123" not in (c.metrics()["last_error"] or "")


def test_checker_memory_does_not_grow_with_the_rate():
    clock = ManualClock(T0)
    c = HealthChecker("SPY", kind="symbol", window_seconds=60, clock=clock)
    for i in range(200_000):
        clock.advance(0.0015)  # 300 seconds at ~670 operations per second
        if i % 10:
            c.record_success()
        else:
            c.record_failure("x")
    assert len(c._buckets) <= 62  # one bucket per second of the window, not one per event
    ops, fails = c.window()
    assert 39_000 <= ops <= 41_000 and 3_900 <= fails <= 4_100  # ~60 s worth


def test_a_recovered_component_reads_healthy_while_its_past_errors_stay_in_the_metrics():
    mon, clock = monitor(max_errors_per_minute=5, recovery_successes=10)
    c = mon.checker("IWM", "symbol")
    for _ in range(20):
        c.record_failure(ConnectionError("refused"))
        clock.advance(0.05)
    for _ in range(9):
        c.record_success()
        clock.advance(0.05)
    comp = mon.check().component("IWM")
    assert comp.level is HealthLevel.UNHEALTHY
    assert any("errors/minute" in r for r in comp.reasons)
    c.record_success()  # the 10th success in a row: recovered
    comp = mon.check().component("IWM")
    assert comp.level is HealthLevel.HEALTHY and comp.reasons == ()
    assert comp.metrics["errors_per_minute"] == 20 and comp.metrics["success_streak"] == 10
    c.record_failure(ConnectionError("refused again"))  # one failure ends the recovery
    assert mon.check().component("IWM").level is HealthLevel.UNHEALTHY


def test_a_misspelt_fact_is_an_error_not_a_rule_silently_off():
    checker = HealthChecker("storage", kind="storage")
    with pytest.raises(AttributeError):
        checker.facts.storage_mode = "failing"  # type: ignore[attr-defined]
    checker.facts.storage = StorageFacts(storage_mode="failing", held_rows=3)
    assert checker.metrics()["storage_mode"] == "failing"  # stored under today's keys
    with pytest.raises(TypeError):
        StorageFacts(storge_mode="failing")  # type: ignore[call-arg]


def test_a_restarting_writer_is_unhealthy_a_crash_looping_one_critical_then_degraded():
    mon, clock = monitor()
    mon.checker("SPY", "symbol").record_success()
    st = mon.checker("storage", "storage")
    crash = "RuntimeError: a bug nobody planned for"
    st.facts.storage = StorageFacts(
        writer_restarting=True,
        writer_restarting_since=T0 - 0.4,
        writer_recent_crashes=1,
        writer_crashes=1,
        writer_last_crash=crash,
    )
    comp = mon.check().component("storage")
    assert comp.level is HealthLevel.UNHEALTHY
    assert comp.reasons == (
        f"storage: the database writer crashed ({crash}); restarting for 0.4s "
        "(1x in the last minute)",
    )
    clock.advance(1.5)  # still restarting: the reason says for how long
    assert "restarting for 1.9s" in mon.check().component("storage").reasons[0]
    # one crash short of the crash-loop threshold: still UNHEALTHY
    st.facts.storage = StorageFacts(
        writer_restarting=True, writer_recent_crashes=4, crash_loop_threshold=5
    )
    assert mon.check().component("storage").level is HealthLevel.UNHEALTHY
    st.facts.storage = StorageFacts(
        writer_restarting=True,
        writer_recent_crashes=5,
        writer_crashes=7,
        writer_last_crash=crash,
        crash_loop_threshold=5,
    )
    snap = mon.check()
    assert snap.level is HealthLevel.CRITICAL
    assert snap.component("storage").reasons == (
        f"storage: the database writer is crash-looping: 5 crashes in a minute (last: {crash})",
    )
    # running again after the crashes: DEGRADED for the rest of the minute
    st.facts.storage = StorageFacts(writer_recent_crashes=5, writer_crashes=7)
    comp = mon.check().component("storage")
    assert comp.level is HealthLevel.DEGRADED
    assert comp.reasons == (
        "storage: writer restarted after an unexpected error (5x in the last minute, 7 in all)",
    )
    # a dead writer is CRITICAL whatever else is said about it
    st.facts.storage = StorageFacts(writer_alive=False, writer_restarting=True)
    comp = mon.check().component("storage")
    assert comp.level is HealthLevel.CRITICAL
    assert comp.reasons == ("storage: the database writer thread is not running",)
