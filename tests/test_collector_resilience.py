"""Breakers and retry in the real collector: one failing symbol never hurts the others."""

from __future__ import annotations

import sqlite3

import pytest

from robust_collector import Collector

pytestmark = pytest.mark.integration


def breaker_events(db, symbol):
    conn = sqlite3.connect(db)
    return conn.execute(
        "SELECT old_state, new_state, reason FROM breaker_events WHERE breaker = ? ORDER BY id",
        (symbol,),
    ).fetchall()


def test_failing_symbol_opens_its_breaker_recovers_and_events_are_stored(make_config):
    cfg = make_config(
        source={"faults": {"failing_symbols": ["IWM"]}},
        realtime_data={"circuit_breaker": {"failure_threshold": 5, "timeout_seconds": 0.3}},
    )
    c = Collector(cfg).start()
    try:
        c.wait_for(lambda s: s.symbols["IWM"].breaker_state == "OPEN", timeout=30)
        st = c.wait_for(lambda s: s.symbols["SPY"].stored >= 50, timeout=30)
        assert c.breaker("SPY").state.value == "CLOSED"
        assert c.breaker("QQQ").state.value == "CLOSED"
        # SPY and QQQ keep their rate while IWM is dark
        spy, qqq = st.symbols["SPY"].fetches, st.symbols["QQQ"].fetches
        assert abs(spy - qqq) <= max(5, 0.2 * spy)
        expected = st.uptime_seconds / cfg.realtime_data.collect_interval_seconds
        assert spy >= 0.5 * expected
        c.source.heal("IWM")
        c.wait_for(
            lambda s: s.symbols["IWM"].breaker_state == "CLOSED" and s.symbols["IWM"].stored >= 3,
            timeout=30,
        )
    finally:
        c.stop()
    transitions = [(o, n) for o, n, _ in breaker_events(c.db_path, "IWM")]
    assert transitions[0] == ("CLOSED", "OPEN")
    assert transitions[-2:] == [("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED")]
    reasons = [r for _, _, r in breaker_events(c.db_path, "IWM")]
    assert "5 consecutive failures" in reasons[0]
    assert "3 successes" in reasons[-1] or "success" in reasons[-1]
    assert breaker_events(c.db_path, "SPY") == []
    assert c.status().breaker_transitions == len(transitions)


def test_transient_errors_are_retried_and_nothing_is_lost(make_config):
    cfg = make_config(source={"faults": {"error_rate": 0.3}}, symbols=["SPY", "QQQ"])
    with Collector(cfg) as c:
        c.wait_for(
            lambda s: all(x.retry_successes >= 5 and x.stored >= 40 for x in s.symbols.values()),
            timeout=30,
        )
    conn = sqlite3.connect(c.db_path)
    for sym, emitted in c.source.emitted.items():
        seqs = [
            r[0]
            for r in conn.execute("SELECT seq FROM ticks WHERE symbol = ? ORDER BY seq", (sym,))
        ]
        assert seqs == list(range(1, emitted + 1))


def test_rate_limit_on_one_symbol_makes_the_others_wait(make_config):
    cfg = make_config(
        symbols=["SPY", "QQQ"],
        realtime_data={"retry": {"retry_delay": 0.001}},
    )
    c = Collector(cfg).start()
    try:
        c.wait_for(lambda s: s.stored >= 10, timeout=30)
        c.rate_gate.block_for(0.5)  # as a 429 with Retry-After: 0.5 on any symbol would
        before = c.status().symbols["QQQ"].quotes
        assert c.rate_gate.remaining() > 0.3
        c.wait_for(lambda s: c.rate_gate.remaining() == 0, timeout=5)
        during = c.status().symbols["QQQ"].quotes - before
        assert during <= 2  # QQQ made (almost) no calls while the gate was closed
    finally:
        c.stop()


def test_breakers_disabled_is_a_pass_through(make_config):
    cfg = make_config(
        source={"faults": {"failing_symbols": ["IWM"]}},
        realtime_data={"circuit_breaker": {"enabled": False}, "retry": {"max_retries": 1}},
    )
    with Collector(cfg) as c:
        st = c.wait_for(lambda s: s.symbols["IWM"].errors >= 20, timeout=30)
    assert st.symbols["IWM"].breaker_state == "DISABLED"
    assert c.breaker("IWM") is None
    assert breaker_events(c.db_path, "IWM") == []
