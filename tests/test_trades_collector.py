"""Trades through the real collector: polled beside quotes, validated, stored, counted.

A scripted source answers each symbol's trade polls from a fixed list (two different
trades in one microsecond, an exact repeat, a negative price), so every count is known
in advance: emitted = stored + rejected + duplicates, per kind.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from helpers.waiting import wait_until

from robust_collector import Collector
from robust_collector.errors import EndOfData
from robust_collector.model import Quote, Trade, make_tick_id, make_trade_id, now_us

pytestmark = pytest.mark.integration

T0 = 1_767_000_000_000_000


def script(symbol: str) -> list[tuple[int, float, float, str | None]]:
    """(ts offset µs, price, size, venue) of each trade the source will emit."""
    return [
        (0, 100.0, 10, "N"),
        (1, 100.0, 10, "N"),
        (1, 100.0, 25, "P"),  # same microsecond, same price, another trade: kept
        (1, 100.0, 25, "P"),  # an exact repeat: a duplicate
        (2, -5.0, 10, "N"),  # a bad price: rejected
        (3, 100.5, 5, "Q"),
    ]


class ScriptedSource:
    """Quotes from a random-walk-free line; trades from ``script`` (then EndOfData)."""

    name = "scripted"

    def __init__(self) -> None:
        self.run_id = "run"
        self._qseq: dict[str, itertools.count[int]] = {}
        self._trades: dict[str, list[Any]] = {}
        self.trades_emitted = 0

    async def start(self, run_id: str) -> None:
        self.run_id = run_id

    async def fetch(self, symbol: str) -> Quote:
        seq = next(self._qseq.setdefault(symbol, itertools.count(1)))
        now = now_us()
        return Quote(
            make_tick_id(self.run_id, symbol, seq), symbol, seq, now, now,
            99.9, 100.1, 100.0, 100.0, None, self.name,
        )  # fmt: skip

    async def fetch_trade(self, symbol: str) -> Trade:
        left = self._trades.setdefault(symbol, list(enumerate(script(symbol), 1)))
        if not left:
            raise EndOfData(f"{symbol}: no more scripted trades", symbol=symbol)
        seq, (dt, price, size, venue) = left.pop(0)
        self.trades_emitted += 1
        return Trade(
            make_trade_id(self.run_id, symbol, seq), symbol, seq, T0 + dt, now_us(),
            price, size, venue, "@", 0, None, None, self.name,
        )  # fmt: skip

    async def aclose(self) -> None:
        pass


def test_trades_are_polled_beside_quotes_and_every_one_is_accounted_for(make_config):
    cfg = make_config(
        symbols=["SPY", "QQQ"],
        source={"type": "simulated", "data": ["quotes", "trades"]},
        realtime_data={"trade_validation": {"future_tolerance_seconds": 1e9}},
    )
    src = ScriptedSource()
    with Collector(cfg, source=src) as c:
        wait_until(lambda: c.status().symbols["SPY"].quotes >= 5, 10, "quotes polled")
        wait_until(
            lambda: all(s.trades_stored == 4 for s in c.status().symbols.values()),
            10,
            "every symbol's trades stored",
        )
        st = c.status()
        # health counts the trades apart from the quotes (metrics and the health report)
        m = c.health().component("SPY").metrics
    assert (m["trades_received"], m["trades_stored"], m["trade_rejects"]) == (6, 4, 1)
    assert m["trade_age_seconds"] is not None and m["operations"] >= 6
    for s in st.symbols.values():
        assert (s.trades, s.trades_accepted, s.trade_rejects, s.trade_duplicates) == (6, 4, 1, 1)
        assert s.trades == s.trades_stored + s.trade_rejects + s.trade_duplicates
        assert s.stored >= 5  # the quotes went on beside the trades
    stored = c.trades()
    assert stored.height == 8 and set(stored["symbol"]) == {"SPY", "QQQ"}
    spy = stored.filter(stored["symbol"] == "SPY").sort("seq")
    assert spy["size"].to_list() == [10.0, 10.0, 25.0, 5.0]
    assert spy["venue"].to_list() == ["N", "N", "P", "Q"]
    assert "trades 8" in st.line()
    assert not c.finished  # the scripted trades ended; the quotes did not


@pytest.mark.parametrize("preset", ["alpaca", "polygon"])
def test_a_streams_trades_are_stored_beside_its_quotes_and_none_is_lost(
    make_config, feed_factory, stream_keys, preset
):
    from helpers.ws_feed import st, stream_config

    feed = feed_factory(preset)
    cfg = stream_config(
        make_config,
        feed,
        source={"data": ["quotes"], "data_by_symbol": {"SPY": ["quotes", "trades"]}},
        realtime_data={"trade_validation": {"future_tolerance_seconds": 1e9}},
    )
    with Collector(cfg) as c:
        wait_until(lambda: st(c)["trades"] >= 20, 10, "streamed trades")
        feed.flowing = False
        sent = dict(feed.sent_trades)
        wait_until(lambda: st(c)["trades"] == sum(feed.sent_trades.values()), 10, "all in")
        sent = dict(feed.sent_trades)
    s = c.status().symbols
    assert set(sent) == {"SPY"}  # only SPY asked for trades
    spy = s["SPY"]
    assert spy.trades == sent["SPY"]
    assert spy.trades == spy.trades_stored + spy.trade_rejects + spy.trade_duplicates
    assert c.trades("SPY").height == spy.trades_stored > 0
    assert s["QQQ"].trades == 0 and s["QQQ"].stored > 0


def test_trades_from_a_source_nobody_asked_for_trades_are_judged_not_a_crash(make_config):
    class TradesInFetch(ScriptedSource):
        async def fetch(self, symbol: str) -> Trade:  # type: ignore[override]
            return await self.fetch_trade(symbol)

    cfg = make_config(
        symbols=["SPY"],
        realtime_data={"trade_validation": {"future_tolerance_seconds": 1e9}},
    )
    with Collector(cfg, source=TradesInFetch()) as c:
        wait_until(lambda: c.status().symbols["SPY"].trades_stored == 4, 10, "trades stored")
        st = c.status()
    spy = st.symbols["SPY"]
    assert (spy.trades, spy.trade_rejects, spy.trade_duplicates, spy.trades_lost) == (6, 1, 1, 0)
    assert not st.units or all(u.restarts == 0 for u in st.units.values())


def test_a_failing_trade_endpoint_opens_its_own_breaker_and_health_names_it(make_config):
    """SPY's trade polls fail: the ``SPY:trades`` breaker opens and health says so (SPY
    DEGRADED, the reason names the trades), while SPY's quotes go on being stored."""
    from robust_collector.errors import TransientSourceError
    from robust_collector.health import HealthLevel
    from robust_collector.health.report import render_single
    from robust_collector.health.store import latest_snapshot

    class TradesDown(ScriptedSource):
        async def fetch_trade(self, symbol: str) -> Trade:
            raise TransientSourceError(f"{symbol}: trades endpoint down", symbol=symbol)

    cfg = make_config(
        symbols=["SPY"],
        source={"type": "simulated", "data": ["quotes", "trades"]},
        realtime_data={
            "retry": {"max_retries": 0},
            "circuit_breaker": {"failure_threshold": 2, "timeout_seconds": 60},
            "health_check": {"check_interval_seconds": 0.1},
        },
    )
    with Collector(cfg, source=TradesDown()) as c:
        wait_until(
            lambda: c.status().symbols["SPY"].trade_breaker_state == "OPEN", 10, "trades OPEN"
        )
        stored = c.status().symbols["SPY"].stored
        wait_until(lambda: c.status().symbols["SPY"].stored > stored + 3, 10, "quotes go on")
        comp = wait_until(
            lambda: (h := c.health().component("SPY")).level >= HealthLevel.DEGRADED and h,
            5,
            "SPY degraded",
        )
        spy = c.status().symbols["SPY"]

        def stored_open() -> Any:
            snap = latest_snapshot(c.db_path)  # what `robust-collector health` reads
            comps = {} if snap is None else {x.name: x for x in snap.components}
            ok = "SPY" in comps and comps["SPY"].metrics.get("trades_breaker_state") == "OPEN"
            return ok and snap

        snap = wait_until(stored_open, 5, "the trade breaker in the stored health")
    assert spy.breaker_state == "CLOSED" and spy.trade_breaker_since_us is not None
    assert "trades endpoint down" in (spy.trade_breaker_reason or "")
    assert any(r.startswith("SPY trades: breaker OPEN since") for r in comp.reasons), comp.reasons
    assert comp.metrics["trades_breaker_state"] == "OPEN"
    text = render_single(snap, now_us=now_us())
    assert "Trade breaker: OPEN" in text
    assert "Trades:        0 received, 0 stored, 0 rejected; last -" in text
