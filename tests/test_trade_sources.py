"""Sources that emit trades: the data kinds in config, replay, HTTP, WebSocket and simulated."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from helpers.http_server import (
    KEY,
    NOW_US,
    SECRET,
    T0_US,
    TRADE_PATHS,
    Provider,
    QuoteServer,
    Reply,
    assert_clean,
    fetch_trades,
    make_source,
    set_path,
    trade_body,
)
from helpers.ws_feed import KEY as WS_KEY
from helpers.ws_feed import SECRET as WS_SECRET
from helpers.ws_feed import FakeFeed

from robust_collector.boundary import clean_text, ts_in_window
from robust_collector.config import config_from_dict
from robust_collector.errors import (
    ConfigError,
    EndOfData,
    RateLimitError,
    SourceError,
    TransientSourceError,
)
from robust_collector.model import Quote, Trade
from robust_collector.resilience import ManualClock
from robust_collector.sources import (
    AuthenticationError,
    BadRequestError,
    MalformedResponseError,
    ReplaySource,
    ReplaySourceConfig,
    SimulatedSource,
    UnknownSymbolError,
    WebSocketSource,
    create_source,
    kinds_for,
    traits_of,
)
from robust_collector.sources.websocket_presets import AlpacaStream, PolygonStream


def source_cfg(**section: Any) -> Any:
    return config_from_dict({"source": section}).source


# -- config: data kinds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "section",
    [
        {"type": "simulated"},
        {"type": "http", "preset": "alpaca"},
        {"type": "websocket", "preset": "polygon"},
        {"type": "replay", "path": "q.csv"},
    ],
    ids=lambda s: s["type"],
)
def test_every_source_collects_quotes_unless_told(section: dict[str, Any]) -> None:
    cfg = source_cfg(**section)
    assert cfg.data == ("quotes",) and dict(cfg.data_by_symbol) == {}
    assert kinds_for(cfg, "SPY") == frozenset({"quotes"})


def test_data_by_symbol_overrides_data_for_its_symbols_only() -> None:
    cfg = source_cfg(
        type="simulated", data=["quotes", "trades"], data_by_symbol={"IWM": ["trades"]}
    )
    assert kinds_for(cfg, "SPY") == {"quotes", "trades"}
    assert kinds_for(cfg, "IWM") == {"trades"}
    # a source (its config) and the traits answer the same
    src = create_source(cfg)
    assert kinds_for(src, "IWM") == {"trades"}
    assert traits_of(src).kinds("IWM") == {"trades"} and traits_of(src).kinds("QQQ") == {
        "quotes",
        "trades",
    }


def test_a_config_without_data_collects_quotes() -> None:
    assert kinds_for(object(), "SPY") == {"quotes"}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"type": "simulated", "data": ["bars"]},
            "source.data[0]: expected one of 'quotes', 'trades'",
        ),
        (
            {"type": "simulated", "data": []},
            "source.data: empty; list at least one of quotes, trades",
        ),
        (
            {"type": "simulated", "data_by_symbol": {"SPY": []}},
            "source.data_by_symbol.SPY: empty; list at least one of quotes, trades",
        ),
        (
            {"type": "websocket", "preset": "alpaca", "data_by_symbol": {"SPY": ["ticks"]}},
            "source.data_by_symbol.SPY[0]: expected one of 'quotes', 'trades'",
        ),
        (
            {"type": "http", "preset": "finnhub", "data": ["quotes", "trades"]},
            "source.data: this source cannot collect trades: finnhub's REST API has no "
            "latest-trade endpoint",
        ),
        (
            {
                "type": "http",
                "preset": "custom",
                "url": "{base_url}/q/{symbol}",
                "base_url": "http://127.0.0.1:1",
                "fields": {"last": "p"},
                "data_by_symbol": {"SPY": ["trades"]},
            },
            "source.data_by_symbol.SPY: this source cannot collect trades: the custom preset",
        ),
        ({"type": "replay", "data": ["trades"]}, "source.trades_path: required key is missing"),
        (
            {"type": "replay", "data": ["trades"], "trades_path": "t.csv", "path": "q.csv"},
            "source.path: set, but no symbol's data includes quotes",
        ),
        (
            {"type": "replay", "path": "q.csv", "trades_path": "t.csv"},
            "source.trades_path: set, but no symbol's data includes trades",
        ),
        (
            {"type": "replay", "path": "q.csv", "trade_columns": {"bid": "B"}},
            "source.trade_columns.bid: unknown trade field",
        ),
    ],
)
def test_bad_data_kinds_are_one_line_config_errors(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        source_cfg(**section)
    text = str(err.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_replay_needs_only_the_files_its_kinds_read() -> None:
    assert source_cfg(type="replay", data=["trades"], trades_path="t.parquet").path is None
    both = source_cfg(
        type="replay",
        path="q.parquet",
        trades_path="t.parquet",
        data_by_symbol={"SPY": ["quotes", "trades"]},
    )
    assert kinds_for(both, "SPY") == {"quotes", "trades"} and kinds_for(both, "X") == {"quotes"}


# -- replay: a trades file beside the quotes file --------------------------------------------------


def manual_clock() -> ManualClock:
    """The replay's monotonic clock: its sleeps advance it instead of waiting."""
    return ManualClock(500.0)


def secs(*offsets: float) -> list[int]:
    base = 1_709_908_200_000_000  # 2024-03-08 14:30 UTC
    return [base + int(o * 1_000_000) for o in offsets]


def replay(
    quotes: pl.DataFrame | None = None,
    trades: pl.DataFrame | None = None,
    ft: ManualClock | None = None,
    **cfg: Any,
) -> ReplaySource:
    ft = ft or manual_clock()
    data = [k for k, f in (("quotes", quotes), ("trades", trades)) if f is not None]
    return ReplaySource(
        ReplaySourceConfig(data=tuple(cfg.pop("data", data)), **cfg),
        frame=quotes,
        trades_frame=trades,
        clock_us=lambda: 1_800_000_000_000_000,
        monotonic=ft,
        sleep=ft.async_sleep,
    )


def run(coro_fn: Any) -> Any:
    return asyncio.run(coro_fn())


def batches(src: ReplaySource, symbol: str, limit: int) -> list[Any]:
    async def go() -> list[Any]:
        await src.start("run1")
        out: list[Any] = []
        while True:
            try:
                got = await src.fetch_batch(symbol, limit)
            except EndOfData as end:
                out.append(end)
                return out
            assert 1 <= len(got) <= limit
            out.extend(got)

    return run(go)


def one_by_one(src: ReplaySource, symbol: str) -> list[Any]:
    async def go() -> list[Any]:
        await src.start("run1")
        out: list[Any] = []
        while True:
            try:
                out.append(await src.fetch(symbol))
            except EndOfData as end:
                out.append(end)
                return out

    return run(go)


def quotes_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {"symbol": ["A", "A", "B", "A"], "ts_us": secs(0, 2, 2, 4), "bid": [1.0, 2.0, 3.0, 4.0]}
    ).with_columns(ask=pl.col("bid") + 0.01)


def trades_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": ["A", "A", "A", "A", "C"],
            "ts_us": secs(1, 2, 2, 5, 0),
            "price": [10.0, 20.0, 20.0, 40.0, 5.0],
            "size": [100.0, None, 100.0, 1.0, 7.0],
            "venue": ["N", "P", "P", None, "Q"],
            "conditions": ["@", "@ I", "@ I", "F", ""],
            "correction": [0, 0, 0, 8, None],
            "provider_id": ["x1", "x2", "x3", None, "c1"],
            "tape": ["A", "A", "A", "A", None],
        }
    )


def kinds_and_seq(items: list[Any]) -> list[tuple[str, int, int]]:
    return [("q" if isinstance(x, Quote) else "t", x.seq, x.ts_us) for x in items]


@pytest.mark.parametrize("limit", [1, 2, 3, 100])
def test_replay_merges_quotes_and_trades_by_time_quotes_first_on_ties(limit: int) -> None:
    src = replay(quotes_frame(), trades_frame(), speed=0)
    assert src.symbols == ("A", "B", "C")
    assert (src.rows("A"), src.rows("A", "quotes"), src.rows("A", "trades")) == (7, 3, 4)
    got = batches(src, "A", limit)
    *items, end = got
    t = secs(0, 1, 2, 4, 5)
    assert kinds_and_seq(items) == [
        ("q", 1, t[0]),
        ("t", 1, t[1]),
        ("q", 2, t[2]),  # the quote first at t=2, then both trades of t=2
        ("t", 2, t[2]),
        ("t", 3, t[2]),
        ("q", 3, t[3]),
        ("t", 4, t[4]),
    ]
    assert isinstance(end, EndOfData) and end.served == 7
    assert str(end) == (
        "replay A: end of data after 3 quotes and 4 trades of the replayed frame and the "
        "replayed trades frame"
    )
    # row by row gives the very same items
    same = one_by_one(replay(quotes_frame(), trades_frame(), speed=0), "A")
    assert [x.as_row() for x in same[:-1]] == [x.as_row() for x in items]
    assert src.finished("A") and src.progress()["A"] == (7, 7)


def test_replay_trades_carry_every_field_and_their_own_ids() -> None:
    src = replay(None, trades_frame(), speed=0)
    *items, _ = batches(src, "A", 100)
    assert all(type(x) is Trade for x in items)
    first, second, _, last = items
    assert first == Trade(
        trade_id="run1:A:t1",
        symbol="A",
        seq=1,
        ts_us=secs(1)[0],
        recv_us=1_800_000_000_000_000,
        price=10.0,
        size=100.0,
        venue="N",
        conditions="@",
        correction=0,
        provider_id="x1",
        tape="A",
        source="replay",
    )
    assert second.size is None and second.conditions == "@ I"  # null stays None
    assert (last.venue, last.correction, last.provider_id) == (None, 8, None)
    assert type(last.correction) is int


def test_replay_serves_each_symbol_only_the_kinds_it_collects() -> None:
    src = replay(
        quotes_frame(),
        trades_frame(),
        speed=0,
        data=("quotes",),
        data_by_symbol={"A": ("trades",), "C": ("quotes", "trades")},
    )
    assert src.symbols == ("B", "A", "C")  # A's quotes are not replayed: it collects trades
    assert src.rows("A") == src.rows("A", "trades") == 4
    *items, _ = batches(src, "A", 100)
    assert all(isinstance(x, Trade) for x in items)
    *b, _ = batches(src, "B", 100)
    assert [type(x) for x in b] == [Quote]


def test_replay_paces_trades_and_quotes_on_one_timeline() -> None:
    ft = manual_clock()
    src = replay(quotes_frame(), trades_frame(), ft, speed=1.0)

    async def go() -> list[list[Any]]:
        await src.start("run1")
        return [await src.fetch_batch("A", 100) for _ in range(4)]

    b1, b2, b3, b4 = run(go)
    # the origin is the earliest time of both files (C's trade and A's quote at t=0)
    assert src.t0_us == secs(0)[0]
    assert kinds_and_seq(b1) == [("q", 1, secs(0)[0])]
    assert [k for k, _, _ in kinds_and_seq(b2)] == ["t"]  # due at t=1
    assert [k for k, _, _ in kinds_and_seq(b3)] == ["q", "t", "t"]  # the three at t=2
    assert [k for k, _, _ in kinds_and_seq(b4)] == ["q"]  # t=4; the trade at t=5 waits
    assert [round(s, 6) for s in ft.sleeps] == [1.0, 1.0, 2.0]


def test_a_trades_only_replay_has_no_quotes_file(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    trades_frame().write_csv(path)
    cfg = source_cfg(type="replay", data=["trades"], trades_path=str(path), speed=0)
    src = create_source(cfg)
    assert isinstance(src, ReplaySource) and src.label == "t.csv"
    assert src.symbols == ("A", "C") and src.rows("A") == 4
    *items, end = batches(src, "C", 10)
    assert [x.trade_id for x in items] == ["run1:C:t1"]
    assert str(end) == "replay C: end of data after 0 quotes and 1 trades of t.csv"


TAQ_TRADES = "sampleTDataRaw.parquet"


def test_the_taq_trade_sample_replays_every_trade_in_order(taq_dir: Path) -> None:
    """77,263 trades out, none lost, in the file's (time) order, each field as the file has
    it: COND as given, CORR an int, EX the venue, DT naive UTC to the microsecond."""
    path = taq_dir / TAQ_TRADES
    df = pl.read_parquet(path)
    cfg = source_cfg(
        type="replay", data=["trades"], trades_path=str(path), columns_preset="taq", speed=0
    )
    src = create_source(cfg)
    assert isinstance(src, ReplaySource) and src.symbols == ("XXX",)
    *items, end = batches(src, "XXX", 2048)
    assert isinstance(end, EndOfData) and end.served == 77_263 == len(items) == df.height
    assert all(type(x) is Trade for x in items)
    assert [x.seq for x in items] == list(range(1, 77_264))
    ts = [x.ts_us for x in items]
    assert ts == sorted(ts)
    want_ts = df.get_column("DT").dt.replace_time_zone("UTC").dt.epoch("us").to_list()
    assert ts == want_ts
    assert [x.price for x in items] == df.get_column("PRICE").to_list()
    assert [x.size for x in items] == [float(v) for v in df.get_column("SIZE").to_list()]
    assert [x.venue for x in items] == df.get_column("EX").to_list()
    assert [x.conditions for x in items] == df.get_column("COND").to_list()  # "7 B" kept
    corr = [x.correction for x in items]
    assert corr == df.get_column("CORR").to_list() and {type(c) for c in corr} == {int}
    assert sum(1 for c in corr if c != 0) == 2
    first = items[0]
    assert (first.ts_us, first.venue, first.conditions, first.size, first.price) == (
        1_514_887_281_479_000,  # 2018-01-02 10:01:21.479 UTC
        "P",
        "FTI",
        2.0,
        157.8,
    )
    assert first.provider_id is None and first.tape is None and first.source == "replay"


def test_the_taq_samples_replay_together_merged(taq_dir: Path) -> None:
    cfg = source_cfg(
        type="replay",
        data=["quotes", "trades"],
        path=str(taq_dir / "sampleQDataRaw.parquet"),
        trades_path=str(taq_dir / TAQ_TRADES),
        columns_preset="taq",
        speed=0,
    )
    src = create_source(cfg)
    *items, end = batches(src, "XXX", 4096)
    assert isinstance(end, EndOfData) and end.served == 131_401 + 77_263 == len(items)
    assert sum(isinstance(x, Trade) for x in items) == 77_263
    keys = [(x.ts_us, 0 if isinstance(x, Quote) else 1) for x in items]
    assert keys == sorted(keys)  # by time, quotes first on ties (both files are in time order)


def test_the_cleaned_taq_sample_without_cond_and_corr_replays(taq_dir: Path) -> None:
    path = taq_dir / "sampleTData.parquet"
    cfg = source_cfg(
        type="replay", data=["trades"], trades_path=str(path), columns_preset="taq", speed=0
    )
    *items, _ = batches(create_source(cfg), "XXX", 4096)
    assert len(items) == 7_168
    assert items[0].venue == "N" and items[0].conditions is None and items[0].correction is None


def test_a_trades_frame_no_symbol_collects_is_refused_not_ignored() -> None:
    with pytest.raises(ConfigError, match=r"^source\.trades_path: set, but no symbol's data"):
        ReplaySource(ReplaySourceConfig(speed=0), trades_frame=trades_frame())


# -- replay: hostile trades files -----------------------------------------------------------------


def test_trade_text_is_bounded_and_clean_and_lists_are_joined(tmp_path: Path) -> None:
    rows = [
        {"venue": "N\x1b[2J", "conditions": ["@", "I"], "provider_id": 12345},
        {"venue": "x" * 5000, "conditions": [], "provider_id": 6},
        {"venue": "\x00\x7f", "conditions": None, "provider_id": None},
    ]
    lines = [
        json.dumps({"symbol": "A", "ts_us": t, "price": 1.0, "size": 1, **row})
        for t, row in zip(secs(0, 1, 2), rows, strict=True)
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    src = create_source(source_cfg(type="replay", data=["trades"], trades_path=str(path), speed=0))
    *items, _ = batches(src, "A", 10)
    for x in items:
        for text in (x.venue, x.conditions, x.provider_id):
            assert text is None or (clean_text(text) == text and len(text) <= 128), text
    assert items[0].venue != "N\x1b[2J" and "\x1b" not in (items[0].venue or "")
    assert len(items[1].venue) == 64
    assert [x.conditions for x in items] == ["@ I", "", None]
    assert [x.provider_id for x in items] == ["12345", "6", None]


@pytest.mark.parametrize(
    ("body", "settings", "message"),
    [
        (
            "symbol,ts_us,price\nA,1709908200000000,abc\n",
            {},
            "source.trade_columns.price: column 'price' of t.csv is not numeric, first at row 1",
        ),
        (
            "symbol,ts_us,price,correction\nA,1709908200000000,1.0,0\nA,1709908200000001,1.0,1.5\n",
            {},
            "source.trade_columns.correction: column 'correction' of t.csv is not integers, "
            "first at row 2 (value 1.5)",
        ),
        (
            "symbol,ts_us,price\nA,not a time,1.0\n",
            {},
            "source.trade_columns.ts_us: 1 rows of t.csv have no time, first at row 1",
        ),
        (
            "symbol,ts_us\nA,1709908200000000\n",
            {},
            "source.trade_columns: the trades file has no price",
        ),
        (
            "symbol,ts_us,price\nA,1709908200000000,1.0\n",
            {"trade_columns": {"venue": "EX"}},
            "source.trade_columns: ['EX'] not in the trades file",
        ),
        (
            "ts_us,price\n1709908200000000,1.0\n",
            {},
            "source.symbol: the trades file has no symbol column",
        ),
        ("DT,PRICE\n2018-01-02T10:00:00,1.0\n", {"columns_preset": "taq", "symbol": "X"}, None),
    ],
)
def test_bad_trades_files_are_one_line_config_errors(
    tmp_path: Path, body: str, settings: dict[str, Any], message: str | None
) -> None:
    path = tmp_path / "t.csv"
    path.write_text(body)
    section = {"type": "replay", "data": ["trades"], "trades_path": str(path), **settings}
    if message is None:
        *items, _ = batches(create_source(source_cfg(**section)), "X", 10)
        assert [(x.symbol, x.price, x.venue) for x in items] == [("X", 1.0, None)]
        return
    with pytest.raises(ConfigError) as err:
        create_source(source_cfg(**section))
    text = str(err.value)
    assert text.startswith(message), text
    assert "\n" not in text and clean_text(text) == text


def test_a_missing_trades_file_names_its_key(tmp_path: Path) -> None:
    section = {"type": "replay", "data": ["trades"], "trades_path": str(tmp_path / "no.csv")}
    with pytest.raises(ConfigError, match=r"^source\.trades_path: file not found: "):
        create_source(source_cfg(**section))


# -- HTTP: the latest trade over REST, against a real server ---------------------------------------

TRADE_PRESETS = ["alpaca", "polygon"]


@pytest.fixture
def provider_server() -> Iterator[Callable[[str], tuple[Provider, QuoteServer]]]:
    """``start(preset)`` -> (provider, running server on 127.0.0.1); servers stop at the end."""
    servers: list[QuoteServer] = []

    def start(preset: str) -> tuple[Provider, QuoteServer]:
        prov = Provider(preset)
        srv = QuoteServer(prov).__enter__()
        servers.append(srv)
        return prov, srv

    yield start
    for s in servers:
        s.__exit__()


@pytest.mark.integration
@pytest.mark.parametrize("preset", TRADE_PRESETS)
def test_latest_trades_in_each_providers_shape(provider_server, preset: str) -> None:
    _, srv = provider_server(preset)
    src = make_source(preset, srv.url)
    assert src.serves_trades and traits_of(src).fetch_trade is not None

    async def go() -> list[Any]:
        await src.start("run1")
        try:
            return [
                await src.fetch_trade("SPY"),
                await src.fetch("SPY"),
                await src.fetch_trade("SPY"),
                await src.fetch_trade("QQQ"),
            ]
        finally:
            await src.aclose()

    t1, q1, t2, t3 = run(go)
    assert type(t1) is Trade and type(q1) is Quote and type(t2) is Trade
    # trades are numbered apart from quotes, per symbol
    assert (t1.trade_id, t1.seq, q1.seq, t2.trade_id, t3.trade_id) == (
        "run1:SPY:t1",
        1,
        1,
        "run1:SPY:t2",
        "run1:QQQ:t1",
    )
    assert (t1.symbol, t1.recv_us, t1.source) == ("SPY", NOW_US, preset)
    assert (t1.price, t1.size) == (100.01, 200.0)
    assert t1.ts_us == T0_US + 1000  # the provider's time, ns truncated to µs
    if preset == "alpaca":
        assert (t1.venue, t1.conditions, t1.provider_id, t1.tape) == ("V", "@ I", "1001", "B")
        assert t1.correction is None
        paths = ["/v2/stocks/SPY/trades/latest", "/v2/stocks/SPY/quotes/latest"]
        assert [r.headers["APCA-API-KEY-ID"] for r in srv.requests] == [KEY] * 4
        assert all(r.headers["APCA-API-SECRET-KEY"] == SECRET for r in srv.requests)
    else:
        assert (t1.venue, t1.conditions, t1.provider_id, t1.tape) == ("4", "37 14", "1001", "B")
        paths = ["/v2/last/trade/SPY", "/v2/last/nbbo/SPY"]
        assert all(r.headers["Authorization"] == f"Bearer {KEY}" for r in srv.requests)
    assert [r.path for r in srv.requests[:2]] == paths


@pytest.mark.integration
def test_polygon_trade_correction_fractional_size_and_query_key(provider_server) -> None:
    prov, srv = provider_server("polygon")
    body = trade_body("polygon", "SPY")
    body["results"].update(e=12, z=3)
    del body["results"]["s"]
    body["results"]["ds"] = "0.5"
    prov.trade_faults["SPY"] = lambda n: Reply(200, body)
    (t,) = fetch_trades(make_source("polygon", srv.url, auth="query"), "SPY")
    assert isinstance(t, Trade) and (t.correction, t.size, t.tape) == (12, 0.5, "C")
    assert srv.requests[0].query == {"apiKey": KEY}


@pytest.mark.integration
def test_alpaca_trade_feed_parameter(provider_server) -> None:
    _, srv = provider_server("alpaca")
    fetch_trades(make_source("alpaca", srv.url, feed="sip"), "SPY")
    assert srv.requests[0].query == {"feed": "sip"}


def _reply(status: int, body: Any = None, **headers: str) -> Callable[[int], Reply]:
    return lambda n: Reply(status, body, dict(headers))


@pytest.mark.integration
@pytest.mark.parametrize("preset", TRADE_PRESETS)
def test_trade_failures_are_the_same_typed_errors_as_quotes(provider_server, preset: str) -> None:
    prov, srv = provider_server(preset)
    echo = {"message": f"bad key {KEY} \x1b[2J"}
    prov.trade_faults.update(
        {
            "RL": _reply(429, {"message": "slow down"}, **{"Retry-After": "7"}),
            "AUTH": _reply(401, echo),
            "GONE": _reply(404, {"message": "not found"}),
            "BOOM": _reply(503, {"message": "down"}),
            "HTML": lambda n: Reply(200, raw=b"<html>maintenance</html>"),
            "BADP": lambda n: Reply(200, set_path(trade_body(preset, "BADP"), TRADE_PATHS[preset]["price"], "abc")),
            "BADC": lambda n: Reply(200, set_path(trade_body(preset, "BADC"), TRADE_PATHS[preset]["c"], [{"x": 1}])),
            "MANYC": lambda n: Reply(200, set_path(trade_body(preset, "MANYC"), TRADE_PATHS[preset]["c"], ["@"] * 33)),
            "NOTIME": lambda n: Reply(200, set_path(trade_body(preset, "NOTIME"), TRADE_PATHS[preset]["t"], "soon")),
        }
    )  # fmt: skip
    names = ["RL", "AUTH", "GONE", "BOOM", "HTML", "BADP", "BADC", "MANYC", "NOTIME"]
    got = dict(zip(names, fetch_trades(make_source(preset, srv.url), *names), strict=True))
    assert isinstance(got["RL"], RateLimitError) and got["RL"].retry_after == 7.0
    assert isinstance(got["AUTH"], AuthenticationError) and got["AUTH"].permanent
    assert isinstance(got["GONE"], UnknownSymbolError)
    assert type(got["BOOM"]) is TransientSourceError
    assert type(got["HTML"]) is TransientSourceError and "is not JSON" in str(got["HTML"])
    prefix = "trade" if preset == "alpaca" else "results"
    for name, field in (
        ("BADP", f"{prefix}.p"),
        ("BADC", f"{prefix}.c[0]"),
        ("MANYC", f"{prefix}.c"),
    ):
        err = got[name]
        assert isinstance(err, MalformedResponseError) and err.field == field, (name, err)
    assert isinstance(got["NOTIME"], MalformedResponseError)
    for name, err in got.items():
        assert isinstance(err, SourceError), name
        assert str(err).startswith(f"{preset} {name}: ")
        assert clean_text(str(err)) == str(err) and "\x1b" not in str(err)
        assert_clean(err)  # no credential, nothing chained


@pytest.mark.integration
@pytest.mark.parametrize(
    ("preset", "answer"),
    [
        ("alpaca", {"symbol": "SPY", "trade": {"t": "0001-01-01T00:00:00Z", "x": "", "p": 0, "s": 0, "c": None, "i": 0, "z": ""}}),
        ("alpaca", {"symbol": "SPY", "trade": None}),
        ("polygon", {"status": "NOT_FOUND", "request_id": "x", "message": "Data not found."}),
        ("polygon", {"status": "OK", "request_id": "x", "results": {}}),
    ],
)  # fmt: skip
def test_no_trade_for_a_symbol_is_unknown_symbol(provider_server, preset: str, answer: Any) -> None:
    prov, srv = provider_server(preset)
    prov.trade_faults["SPY"] = _reply(200, answer)
    (err,) = fetch_trades(make_source(preset, srv.url), "SPY")
    assert isinstance(err, UnknownSymbolError) and "unknown symbol" in str(err)


@pytest.mark.integration
def test_trades_and_quotes_draw_on_one_rate_limit_budget(provider_server) -> None:
    """X-RateLimit-Remaining: 0 on a trade answer: the next quote waits for the reset too."""
    prov, srv = provider_server("alpaca")
    reset_s = NOW_US // 1_000_000 + 10
    prov.rate_headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset_s)}
    src = make_source("alpaca", srv.url)

    async def go() -> list[Any]:
        await src.start("r")
        out: list[Any] = []
        for call in (src.fetch_trade, src.fetch, src.fetch_trade):
            try:
                out.append(await call("SPY"))
            except SourceError as exc:
                out.append(exc)
        await src.aclose()
        return out

    trade, quote, again = run(go)
    assert isinstance(trade, Trade)
    assert isinstance(quote, RateLimitError) and isinstance(again, RateLimitError)
    assert len(srv.requests) == 1


@pytest.mark.parametrize("preset", ["finnhub", "custom"])
def test_presets_without_a_latest_trade_refuse_without_asking(preset: str) -> None:
    src = make_source(preset, "http://127.0.0.1:9")  # nothing listens: no request is made
    assert not src.serves_trades and traits_of(src).fetch_trade is None
    (err,) = fetch_trades(src, "SPY")
    assert isinstance(err, BadRequestError) and err.permanent
    assert str(err) == f"{preset} SPY: the {preset} API serves no latest trade over REST"
    assert src.requests == 0


# -- WebSocket: the trade channels ----------------------------------------------------------------


def test_alpaca_stream_trades_and_a_half_valid_frame() -> None:
    frame = json.dumps(
        [
            {"T": "t", "i": 96921, "S": "AAPL", "x": "D", "p": 126.55, "s": 1,
             "t": "2021-02-22T15:51:44.208123456Z", "c": ["@", "I"], "z": "C"},
            {"T": "t", "S": "SPY", "p": "abc", "t": "2021-02-22T15:51:44Z"},
            {"T": "t", "S": "SPY", "p": 1.0, "t": "2021-02-22T15:51:44Z", "c": [{"x": 1}]},
            {"T": "t", "S": "SPY", "t": "2021-02-22T15:51:44Z"},
            {"T": "q", "S": "SPY", "bp": 1.5, "ap": 1.6, "t": "2021-02-22T15:51:44Z"},
            {"T": "t", "S": "QQQ", "p": 2.0, "t": "2021-02-22T15:51:45Z"},
        ]
    )  # fmt: skip
    p = AlpacaStream().parse(frame)
    assert p.trades == [
        ("AAPL", 1614009104208123, 126.55, 1.0, "D", "@ I", "96921", "C"),
        ("QQQ", 1614009105000000, 2.0, None, None, None, None, None),
    ]
    assert len(p.quotes) == 1
    assert p.problems == [
        "item 1 (SPY): p: expected a number, got 'abc'",
        "item 2 (SPY): c[0]: expected a condition code, got an object",
        "item 3 (SPY): p: missing",
    ]


def test_polygon_stream_trades_with_integer_exchange_tape_and_conditions() -> None:
    frame = json.dumps(
        [
            {"ev": "T", "sym": "MSFT", "x": 4, "i": "12345", "z": 3, "p": 114.125, "s": 100,
             "c": [0, 12], "t": 1536036818784, "q": 3681328},
            {"ev": "T", "sym": "MSFT", "x": 4, "p": 114.0, "t": "soon"},
            {"ev": "T", "sym": "MSFT", "x": {"id": 4}, "p": 114.0, "t": 1536036818785},
        ]
    )  # fmt: skip
    p = PolygonStream().parse(frame)
    assert p.trades == [("MSFT", 1536036818784000, 114.125, 100.0, "4", "0 12", "12345", "C")]
    assert p.problems == [
        "item 1 (MSFT): t: expected a unix time in ms, got 'soon'",
        "item 2 (MSFT): x: expected a code or an id, got an object",
    ]


def test_subscriptions_ask_each_symbols_channels_and_acks_name_them() -> None:
    assert AlpacaStream().subscribe_message(["SPY"]) == '{"action":"subscribe","quotes":["SPY"]}'
    assert AlpacaStream().subscribe_message(["SPY"], ["SPY", "IWM"]) == (
        '{"action":"subscribe","quotes":["SPY"],"trades":["SPY","IWM"]}'
    )
    assert AlpacaStream().subscribe_message([], ["IWM"]) == (
        '{"action":"subscribe","trades":["IWM"]}'
    )
    assert PolygonStream().subscribe_message(["SPY"], ["SPY", "IWM"]) == (
        '{"action":"subscribe","params":"Q.SPY,T.SPY,T.IWM"}'
    )
    ack = AlpacaStream().parse(
        json.dumps([{"T": "subscription", "trades": ["SPY", "IWM"], "quotes": ["SPY"]}])
    )
    (c,) = ack.controls
    assert (c.kind, c.code, c.symbols) == ("subscribed", "full", ("SPY", "IWM"))
    assert c.channels == (("quotes", ("SPY",)), ("trades", ("SPY", "IWM")))
    assert c.message == "quotes: SPY; trades: SPY, IWM"
    acks = PolygonStream().parse(
        json.dumps(
            [
                {"ev": "status", "status": "success", "message": "subscribed to: T.IWM"},
                {"ev": "status", "status": "success", "message": "subscribed to: Q.SPY,T.SPY"},
            ]
        )
    )
    assert [(c.symbols, c.channels) for c in acks.controls] == [
        (("IWM",), (("trades", ("IWM",)),)),
        (("SPY",), (("quotes", ("SPY",)), ("trades", ("SPY",)))),
    ]


@pytest.mark.integration
@pytest.mark.parametrize("preset", ["alpaca", "polygon"])
def test_a_stream_subscribes_trades_only_where_asked_and_delivers_them(preset: str) -> None:
    feed = FakeFeed(preset)
    try:
        cfg = source_cfg(
            type="websocket",
            preset=preset,
            base_url=feed.url,
            data=["quotes"],
            data_by_symbol={"SPY": ["quotes", "trades"], "IWM": ["trades"]},
        )
        env = {"APCA_API_KEY_ID": WS_KEY, "APCA_API_SECRET_KEY": WS_SECRET}
        src = WebSocketSource(cfg, environ={**env, "POLYGON_API_KEY": WS_KEY})
        assert src.channels(["SPY", "QQQ", "IWM"]) == (["SPY", "QQQ"], ["SPY", "IWM"])

        async def go() -> tuple[list[Any], list[Any], list[Any]]:
            await src.start("run1")
            conn = await src.connect(["SPY", "QQQ", "IWM"])
            quotes: list[Any] = []
            trades: list[Any] = []
            controls: list[Any] = []
            try:
                async for frame in conn:
                    parsed = src.parse(frame)
                    assert parsed.problems == []
                    quotes += parsed.quotes
                    trades += parsed.trades
                    controls += parsed.controls
                    if len(trades) >= 6 and len(quotes) >= 6:
                        break
            finally:
                await conn.close()
            return quotes, trades, controls

        quotes, trades, controls = run(go)
        assert feed.subscribes == [["SPY", "QQQ"]] and feed.trade_subscribes == [["SPY", "IWM"]]
        assert {t[0] for t in trades} == {"SPY", "IWM"}
        assert {q[0] for q in quotes} == {"SPY", "QQQ"}  # IWM collects trades only
        for _sym, ts, price, size, venue, conds, provider_id, tape in trades:
            assert ts_in_window(ts) and price is not None and 100.0 <= price < 101.0
            assert size == 100.0 and venue in ("V", "4") and tape == "B"
            assert conds in ("@", "37") and provider_id is not None
        acked = {s for c in controls if c.kind == "subscribed" for s in c.symbols}
        assert acked == {"SPY", "QQQ", "IWM"}
    finally:
        feed.close()


# -- the simulated source: trades offline ----------------------------------------------------------


def sim(**section: Any) -> SimulatedSource:
    ticks = iter(range(10**9))
    cfg = source_cfg(type="simulated", **section)
    return SimulatedSource(cfg, clock_us=lambda: 1_800_000_000_000_000 + next(ticks))


def calls(src: SimulatedSource, plan: list[tuple[str, str]]) -> list[Any]:
    """Run ``(kind, symbol)`` fetches in order; errors are returned, not raised."""

    async def go() -> list[Any]:
        await src.start("run1")
        out: list[Any] = []
        for kind, sym in plan:
            try:
                out.append(await (src.fetch_trade(sym) if kind == "t" else src.fetch(sym)))
            except SourceError as exc:
                out.append(exc)
        return out

    return run(go)


def test_simulated_trades_are_deterministic_and_leave_the_quotes_alone() -> None:
    plan = [("q", "SPY"), ("t", "SPY"), ("t", "SPY"), ("q", "SPY"), ("t", "QQQ")] * 20
    a = calls(sim(data=["quotes", "trades"], seed=7), plan)
    b = calls(sim(data=["quotes", "trades"], seed=7), plan)
    assert [x.as_row() for x in a] == [x.as_row() for x in b]
    other = calls(sim(data=["quotes", "trades"], seed=8), plan)
    assert [x.as_row() for x in a] != [x.as_row() for x in other]
    # asking for trades never changes the quotes: the same quotes without the trades
    quotes_only = calls(sim(data=["quotes", "trades"], seed=7), [p for p in plan if p[0] == "q"])
    assert [q.bid for q in a if isinstance(q, Quote)] == [q.bid for q in quotes_only]
    trades = [x for x in a if isinstance(x, Trade)]
    assert [t.trade_id for t in trades[:3]] == ["run1:SPY:t1", "run1:SPY:t2", "run1:QQQ:t1"]
    assert {t.tape for t in trades} == {"B", "C"} and {t.correction for t in trades} == {0}
    assert all(t.conditions in ("@", "@ I") and t.venue and t.provider_id for t in trades)
    assert all(t.size is not None and t.size > 0 for t in trades)


def test_simulated_trades_print_between_the_bid_and_the_ask() -> None:
    out = calls(sim(), [("q", "SPY"), ("t", "SPY")] * 300)
    for quote, trade in zip(out[::2], out[1::2], strict=True):
        assert quote.bid <= trade.price <= quote.ask, (quote, trade)
    assert len({t.price for t in out[1::2]}) > 10


def test_a_trades_only_symbol_walks_its_own_mid() -> None:
    src = sim(data=["trades"], volatility_bps=20.0)
    prices = [t.price for t in calls(src, [("t", "IWM")] * 200)]
    assert len(set(prices)) > 20 and abs(prices[-1] - 210.0) < 21.0
    assert src.emitted_trades == {"IWM": 200}


def test_the_fault_knobs_apply_to_trades() -> None:
    src = sim(data=["trades"], faults={"failing_symbols": ["IWM"]})
    (err,) = calls(src, [("t", "IWM")])
    assert isinstance(err, TransientSourceError) and "connection refused" in str(err)
    src = sim(data=["trades"], faults={"rate_limit_rate": 1.0})
    (err,) = calls(src, [("t", "SPY")])
    assert isinstance(err, RateLimitError) and err.retry_after == 1.0
    src = sim(data=["trades"])
    src.fail_next("SPY", 1)
    first, second = calls(src, [("t", "SPY"), ("t", "SPY")])
    assert isinstance(first, TransientSourceError) and isinstance(second, Trade)
    assert second.seq == 1  # a failed fetch hands out no number
    # a duplicate repeats the print, provider id and all (a duplicate by identity)
    src = sim(data=["trades"], faults={"duplicate_rate": 1.0})
    one, dup = calls(src, [("t", "SPY"), ("t", "SPY")])
    assert (dup.seq, dup.trade_id) == (2, "run1:SPY:t2") and dup.provider_id == one.provider_id
    assert (dup.price, dup.size, dup.venue) == (one.price, one.size, one.venue)
    src = sim(data=["trades"], faults={"bad_tick_rate": 1.0})
    bad = calls(src, [("t", "SPY")] * 40)
    kinds = src.bad_trades("SPY")
    assert len(kinds) == 40 and set(kinds.values()) == {"spike", "zero", "nan", "zero_size"}
    for t in bad:
        kind = kinds[t.seq]
        if kind == "zero":
            assert t.price == 0.0
        elif kind == "nan":
            assert t.price != t.price
        elif kind == "zero_size":
            assert t.size == 0.0


def test_a_simulated_config_collecting_trades_offers_fetch_trade() -> None:
    src = create_source(source_cfg(type="simulated", data_by_symbol={"SPY": ["trades"]}))
    traits = traits_of(src)
    assert traits.fetch_trade is not None and traits.kinds("SPY") == {"trades"}
    assert traits.kinds("QQQ") == {"quotes"}
