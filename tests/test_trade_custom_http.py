"""The custom HTTP preset maps trade fields too (``trade_url``, ``trade_fields``), against a
real HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers.http_server import NOW_US, T0_US, QuoteServer, Reply, Request, fetch, fetch_trades
from helpers.waiting import wait_until

from robust_collector import Collector
from robust_collector.config import config_from_dict
from robust_collector.errors import ConfigError
from robust_collector.model import Quote, Trade
from robust_collector.sources import HttpSource, MalformedResponseError
from robust_collector.sources.base import traits_of

TRADE_FIELDS = {
    "timestamp": "trade.time",
    "timestamp_format": "unix_ms",
    "price": "trade.price",
    "size": "trade.qty",
    "venue": "trade.exch",
    "conditions": "trade.conds",
    "correction": "trade.corr",
    "provider_id": "trade.id",
    "tape": "trade.tape",
    "symbol": "trade.sym",
}


class Api:
    """Quotes at ``/q/{sym}``, trades at ``/t/{sym}``, both at ``/both/{sym}``;
    ``trade_over`` replaces the trade object's fields (``None`` values are dropped)."""

    def __init__(self) -> None:
        self.n = 0
        self.trade_over: dict[str, Any] = {}

    def trade(self, sym: str) -> dict[str, Any]:
        self.n += 1
        t = {"sym": sym, "time": T0_US // 1000 + self.n, "price": 100.0 + self.n / 100,
             "qty": 200, "exch": "V", "conds": ["@", "I"], "corr": 0, "id": 7000 + self.n,
             "tape": "C"}  # fmt: skip
        t.update(self.trade_over)
        return {k: v for k, v in t.items() if v is not None}

    def quote(self, sym: str) -> dict[str, Any]:
        return {"sym": sym, "time": T0_US // 1000, "bid": 100.0, "ask": 100.02}

    def __call__(self, req: Request) -> Reply:
        kind, _, sym = req.path.strip("/").partition("/")
        if kind == "q":
            return Reply(200, {"data": self.quote(sym)})
        if kind == "t":
            return Reply(200, {"trade": self.trade(sym)})
        if kind == "both":
            return Reply(200, {"data": self.quote(sym), "trade": self.trade(sym)})
        return Reply(404, {"message": "no such route"})


@pytest.fixture
def api() -> Iterator[tuple[Api, QuoteServer]]:
    app = Api()
    with QuoteServer(app) as srv:
        yield app, srv


def source(base: str, **over: Any) -> dict[str, Any]:
    """The custom source section against ``base`` (the server's root); ``over`` replaces keys."""
    cfg: dict[str, Any] = {
        "type": "http",
        "preset": "custom",
        "base_url": base,
        "url": "{base_url}/q/{symbol}",
        "trade_url": "{base_url}/t/{symbol}",
        "fields": {"timestamp": "data.time", "bid": "data.bid", "ask": "data.ask"},
        "trade_fields": TRADE_FIELDS,
        "data": ["quotes", "trades"],
        "timeout_seconds": 1.0,
    }
    cfg.update(over)
    return cfg


def http(base: str, **over: Any) -> HttpSource:
    config = config_from_dict({"source": source(base, **over)}).source
    return HttpSource(config, clock_us=lambda: NOW_US, environ={})


def test_a_mapped_trade_is_read_from_the_trade_url(api) -> None:
    _app, srv = api
    src = http(srv.url)
    assert src.serves_trades and traits_of(src).fetch_trade is not None
    (t,) = fetch_trades(src, "SPY")
    assert isinstance(t, Trade)
    assert (t.ts_us, t.price, t.size) == (T0_US + 1000, 100.01, 200.0)
    assert (t.venue, t.conditions, t.correction, t.provider_id, t.tape) == (
        "V", "@ I", 0, "7001", "C",
    )  # fmt: skip
    assert (t.symbol, t.seq, t.source) == ("SPY", 1, "custom")
    (q,) = fetch(http(srv.url), "SPY")  # the quotes still come from url
    assert isinstance(q, Quote) and q.bid == 100.0
    assert [r.path for r in srv.requests] == ["/t/SPY", "/q/SPY"]


def test_one_url_can_answer_the_quote_and_the_last_trade(api) -> None:
    _app, srv = api
    src = http(srv.url, url="{base_url}/both/{symbol}", trade_url=None)
    (t,) = fetch_trades(src, "QQQ")
    (q,) = fetch(http(srv.url, url="{base_url}/both/{symbol}", trade_url=None), "QQQ")
    assert isinstance(t, Trade) and t.price == 100.01 and isinstance(q, Quote)
    assert [r.path for r in srv.requests] == ["/both/QQQ", "/both/QQQ"]


def test_optional_trade_fields_may_be_absent_but_price_and_time_may_not(api) -> None:
    app, srv = api
    app.trade_over = {"qty": None, "exch": None, "conds": None, "corr": None, "id": None}
    (t,) = fetch_trades(http(srv.url), "SPY")
    assert isinstance(t, Trade) and t.price is not None
    assert (t.size, t.venue, t.conditions, t.correction, t.provider_id) == (None,) * 5
    for field, path in (("price", "trade.price"), ("time", "trade.time")):
        app.trade_over = {field: None}
        (err,) = fetch_trades(http(srv.url), "SPY")
        assert isinstance(err, MalformedResponseError) and err.field == path
        assert str(err) == f"custom SPY: {path}: missing"
    app.trade_over = {"sym": "QQQ"}
    (err,) = fetch_trades(http(srv.url), "SPY")
    assert str(err) == "custom SPY: trade.sym: expected 'SPY', got 'QQQ'"
    app.trade_over = {"corr": "x"}
    (err,) = fetch_trades(http(srv.url), "SPY")
    assert str(err).startswith("custom SPY: trade.corr: expected an integer correction")


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (
            {"trade_fields": {}},
            "source.data: this source cannot collect trades: the custom preset maps no trade "
            "fields (set trade_fields.price and trade_fields.timestamp)",
        ),
        (
            {"trade_fields": {"price": "p"}},
            "source.trade_fields.timestamp: required to collect trades with preset 'custom'",
        ),
        ({"base_url": None}, "source.base_url: required when url uses {base_url}"),
        (
            {"base_url": None, "url": "http://x/q/{symbol}"},
            "source.base_url: required when trade_url uses {base_url}",
        ),
        ({"trade_url": "{base_url}/t/{sym}"}, "source.trade_url: unknown placeholder {sym}"),
        (
            {"preset": "alpaca", "url": None},
            "source.trade_url: only for preset 'custom' (preset 'alpaca' knows its URL",
        ),
    ],
)
def test_trade_mapping_config_errors_name_the_key(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"source": source("http://127.0.0.1:1", **over)})
    assert str(info.value).startswith(message), str(info.value)


def test_a_trades_only_custom_source_needs_no_quote_fields() -> None:
    cfg = config_from_dict(
        {"source": source("http://127.0.0.1:1", fields={}, data=["trades"])}
    ).source
    assert cfg.maps_trades and cfg.fields.bid is None


@pytest.mark.integration
def test_a_collector_stores_the_custom_apis_trades_beside_its_quotes(api, make_config) -> None:
    _app, srv = api
    cfg = make_config(
        symbols=["SPY"],
        source=source(srv.url),
        realtime_data={"trade_validation": {"future_tolerance_seconds": 1e9}},
    )
    with Collector(cfg) as c:
        wait_until(lambda: c.status().symbols["SPY"].trades_stored >= 3, 10, "trades stored")
        wait_until(lambda: c.status().symbols["SPY"].stored >= 1, 10, "a quote stored")
    stored = c.trades("SPY")
    assert stored.height >= 3
    assert set(stored["venue"]) == {"V"} and set(stored["conditions"]) == {"@ I"}
    assert stored["provider_id"].n_unique() == stored.height  # each poll a new trade
