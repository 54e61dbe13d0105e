"""The silence detector learns each kind's own rhythm: a symbol collecting quotes and trades
has one track per kind (injected clock), and the stream reports each kind's silence."""

from __future__ import annotations

import pytest
from helpers.waiting import wait_until

from robust_collector.resilience.clock import ManualClock
from robust_collector.sources.stream import Silence, SilenceDetector

BOTH = {"SPY": ("quotes", "trades"), "IWM": ("trades",)}


def detector(clock: ManualClock) -> SilenceDetector:
    return SilenceDetector(
        ["SPY", "QQQ", "IWM"],
        kinds=BOTH,  # QQQ: not named, quotes only
        factor=3.0,
        floor=0.5,
        ceiling=60.0,
        window=50,
        min_samples=5,
        clock=clock,
    )


def busy_quotes_rare_trades(d: SilenceDetector, clock: ManualClock, seconds: float) -> None:
    """SPY and QQQ quote every 0.1 s; SPY and IWM trade every 4 s."""
    for step in range(1, round(seconds * 10) + 1):
        clock.advance(0.1)
        d.arrived("SPY", kind="quotes")
        d.arrived("QQQ", kind="quotes")
        if step % 40 == 0:
            d.arrived("SPY", kind="trades")
            d.arrived("IWM", kind="trades")


def test_each_kind_learns_its_own_threshold() -> None:
    clock = ManualClock(1000.0)
    d = detector(clock)
    assert d.kinds("SPY") == ("quotes", "trades") and d.kinds("QQQ") == ("quotes",)
    assert d.kinds("IWM") == ("trades",)
    busy_quotes_rare_trades(d, clock, 40.0)
    assert d.threshold("SPY") == d.threshold("SPY", "quotes") == 0.5  # 3 x 0.1 s, floored
    assert d.threshold("SPY", "trades") == pytest.approx(12.0)  # 3 x 4 s
    assert d.threshold("IWM") == pytest.approx(12.0)  # a trades-only symbol: its trades
    # a trade arriving between quotes is not a gap of the quotes (the mixed rhythm of old)
    assert d.check_kinds() == []


def test_quotes_stopping_while_trades_go_on_is_a_silence_of_the_quotes() -> None:
    clock = ManualClock(1000.0)
    d = detector(clock)
    busy_quotes_rare_trades(d, clock, 40.0)
    for _ in range(3):  # SPY's quotes stop; its trades (and QQQ's quotes) go on
        clock.advance(0.3)
        d.arrived("QQQ", kind="quotes")
        assert d.arrived("SPY", kind="trades") is None
    assert d.check_kinds() == [("SPY", "quotes")]
    assert d.check() == []  # reported once
    assert d.silent() == ["SPY"] and d.silent("quotes") == ["SPY"] and d.silent("trades") == []
    assert d.state("SPY")["silent"] and not d.all_silent()
    assert d.silent_for("SPY", kind="quotes") == pytest.approx(0.9)
    assert d.silent_for("SPY", kind="trades") == 0.0  # a trade just arrived
    clock.advance(0.1)
    ended = d.arrived("SPY", kind="quotes")
    assert ended == Silence("SPY", ended.start, clock(), 0.5, "quotes")
    assert ended.end - ended.start == pytest.approx(1.0)
    assert d.silent() == []


def test_trades_stopping_while_quotes_go_on_is_a_silence_of_the_trades_only() -> None:
    clock = ManualClock(1000.0)
    d = detector(clock)
    busy_quotes_rare_trades(d, clock, 40.0)
    for _ in range(130):  # 13 s of quotes, no trade: past SPY's and IWM's 12 s
        clock.advance(0.1)
        d.arrived("SPY", kind="quotes")
        d.arrived("QQQ", kind="quotes")
    assert sorted(d.check_kinds()) == [("IWM", "trades"), ("SPY", "trades")]
    assert d.check() == []
    assert d.silent("trades") == ["SPY", "IWM"] and d.silent("quotes") == []
    assert not d.state("SPY")["silent"]  # SPY's quotes are fine: its health is not stale
    assert d.state("SPY", "trades")["silent"] and d.state("IWM")["silent"]
    assert not d.all_silent()
    closed = d.close_all()
    assert {(s.symbol, s.kind) for s in closed} == {("SPY", "trades"), ("IWM", "trades")}
    assert d.silent() == []


def test_a_stream_whose_quotes_all_stopped_is_all_silent_before_its_rare_trades_are() -> None:
    """The stream-level verdict (reconnect) reads each symbol's first kind: quotes where
    it has them. Waiting for every rare trade track too held a stalled stream for up to
    the 60-120 s trade thresholds."""
    clock = ManualClock(1000.0)
    d = SilenceDetector(
        ["SPY", "QQQ"], kinds={"SPY": ("quotes", "trades")}, clock=clock, floor=0.5,
        ceiling=60.0, min_samples=5,
    )  # fmt: skip
    for step in range(1, 401):
        clock.advance(0.1)
        d.arrived("SPY", kind="quotes")
        d.arrived("QQQ", kind="quotes")
        if step % 40 == 0:
            d.arrived("SPY", kind="trades")
    clock.advance(2.0)  # every quote stopped; SPY's trades are within their 12 s
    assert sorted(d.check_kinds()) == [("QQQ", "quotes"), ("SPY", "quotes")]
    assert d.all_silent()


def test_every_symbol_silent_in_its_first_kind_is_all_silent() -> None:
    clock = ManualClock(1000.0)
    d = detector(clock)
    busy_quotes_rare_trades(d, clock, 40.0)
    clock.advance(5.0)  # the quotes: silent; the trades: not yet
    assert sorted(d.check()) == ["QQQ", "SPY"] and not d.all_silent()
    clock.advance(10.0)
    assert sorted(d.check()) == ["IWM", "SPY"] and d.all_silent()
    d.restart()
    assert d.check_kinds() == [] and d.threshold("SPY", "trades") == pytest.approx(12.0)


def test_without_kinds_every_symbol_has_one_quotes_track_as_before() -> None:
    clock = ManualClock(0.0)
    d = SilenceDetector(["SPY"], clock=clock, floor=0.5, min_samples=2)
    for _ in range(5):
        clock.advance(0.1)
        d.arrived("SPY")
    assert d.kinds("SPY") == ("quotes",)
    assert d.arrived("SPY", kind="trades") is None  # not tracked: ignored
    clock.advance(1.0)
    assert d.check() == ["SPY"] and d.all_silent()


@pytest.mark.integration
def test_a_streams_quotes_and_trades_fall_silent_apart(
    make_config, feed_factory, stream_keys
) -> None:
    from helpers.ws_feed import gap_rows, st, stream_config

    from robust_collector import Collector

    feed = feed_factory("alpaca", interval=0.02)
    cfg = stream_config(
        make_config,
        feed,
        source={
            "data": ["quotes"],
            "data_by_symbol": {"SPY": ["quotes", "trades"]},
            "silence_ceiling_seconds": 0.6,
        },
        realtime_data={"trade_validation": {"future_tolerance_seconds": 1e9}},
    )
    with Collector(cfg) as c:
        wait_until(lambda: st(c)["trades"] >= 30, 10, "SPY's trades learned")
        feed.trades_only = {"SPY"}  # SPY's quotes stop; its trades go on
        wait_until(lambda: "SPY" in st(c)["silent"], 10, "SPY's quotes silent")
        assert st(c)["silent_trades"] == () and c.status().symbols["SPY"].trades > 30
        feed.trades_only = set()
        wait_until(lambda: not st(c)["silent"], 10, "SPY's quotes back")
        feed.trading = set()  # now its trades stop; the quotes go on
        wait_until(lambda: st(c)["silent_trades"] == ("SPY",), 10, "SPY's trades silent")
        assert st(c)["silent"] == ()
        feed.trading = {"SPY"}
        wait_until(lambda: st(c)["silent_trades"] == (), 10, "SPY's trades back")
    details = [d for sym, cause, _a, _b, d in gap_rows(c) if cause == "symbol_silent"]
    assert any(d.startswith("no quote for ") for d in details)
    assert any(d.startswith("trades: no trade for ") for d in details)
