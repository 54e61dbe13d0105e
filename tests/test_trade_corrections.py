"""Trade corrections and cancels: parsed from alpaca's stream, validated as notices (never
duplicates of the trade they name), stored as trade rows, applied by ``apply_corrections``."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import polars as pl
import pytest
from helpers.waiting import wait_until

from robust_collector import Collector
from robust_collector.analysis import apply_corrections
from robust_collector.model import Trade
from robust_collector.sources.websocket_presets import AlpacaStream, PolygonStream
from robust_collector.validation import (
    TradeRuleSwitches,
    TradeValidationConfig,
    TradeValidator,
    trades_frame,
    validate_trade_frame,
)
from robust_collector.validation.trade_rules import (
    TRADE_CANCELLED,
    TRADE_CORRECTED,
    TRADE_ERROR,
    corrected_original,
    normalize_conditions,
)

T = "2022-01-20T17:26:08.000760661Z"
T_US = 1642699568000760
T0 = 1_700_000_000_000_000  # epoch µs origin of the validation tests' trades


def alpaca_correction(**over: Any) -> dict[str, Any]:
    """The correction the alpaca forum shows (IWM, 2022-01-20), with overrides."""
    c = {"T": "c", "S": "IWM", "x": "D", "oi": 79372207866957, "op": 208.65, "os": 14950,
         "oc": [" ", "7", "V"], "ci": 79372223926359, "cp": 208.65, "cs": 14950,
         "cc": ["7", "Z", "V"], "z": "B", "t": T}  # fmt: skip
    c.update(over)
    return c


def alpaca_cancel(**over: Any) -> dict[str, Any]:
    x = {"T": "x", "S": "IWM", "i": 79372207866957, "x": "D", "p": 208.65, "s": 14950,
         "a": "C", "z": "B", "t": T}  # fmt: skip
    x.update(over)
    return x


# -- parsing ----------------------------------------------------------------------------------


def test_alpaca_corrections_and_cancels_become_notices_beside_the_trades() -> None:
    frame = json.dumps(
        [
            {"T": "t", "S": "IWM", "i": 5, "x": "D", "p": 208.6, "s": 10, "c": ["@"], "t": T},
            alpaca_correction(),
            alpaca_cancel(),
            alpaca_cancel(a="E", i=79372223926359),
        ]
    )
    p = AlpacaStream().parse(frame)
    assert p.problems == [] and p.ignored == 0
    assert p.trades == [("IWM", T_US, 208.6, 10.0, "D", "@", "5", None)]
    assert p.notices == [
        ("IWM", T_US, 208.65, 14950.0, "D", "7 Z V corrects:79372207866957", "79372223926359",
         "B", TRADE_CORRECTED),
        ("IWM", T_US, 208.65, 14950.0, "D", None, "79372207866957", "B", TRADE_CANCELLED),
        ("IWM", T_US, 208.65, 14950.0, "D", None, "79372223926359", "B", TRADE_ERROR),
    ]  # fmt: skip
    assert corrected_original(p.notices[0][5]) == "79372207866957"


def test_a_notice_that_cannot_be_applied_is_a_problem_and_its_frame_keeps_the_rest() -> None:
    frame = json.dumps(
        [
            alpaca_correction(oi=None),
            alpaca_correction(cp="abc"),
            alpaca_cancel(a="Z"),
            alpaca_cancel(i=None),
            alpaca_cancel(p=None, S="QQQ"),
            alpaca_correction(cc=None),
        ]
    )
    p = AlpacaStream().parse(frame)
    assert p.problems == [
        "item 0 (IWM): oi: missing (the id of the trade corrected)",
        "item 1 (IWM): cp: expected a number, got 'abc'",
        "item 2 (IWM): a: expected 'C' (cancel) or 'E' (error), got 'Z'",
        "item 3 (IWM): i: missing (the id of the trade cancelled)",
    ]
    # a cancel with a null price is kept (the validator rejects it: no price)
    assert [(n[0], n[2], n[5], n[8]) for n in p.notices] == [
        ("QQQ", None, None, TRADE_CANCELLED),
        ("IWM", 208.65, "corrects:79372207866957", TRADE_CORRECTED),
    ]


def test_polygon_stream_has_no_correction_messages() -> None:
    # polygon's stocks trades carry no correction field: a trade stays a trade, and an
    # unknown event is ignored, not read as a notice
    frame = json.dumps(
        [
            {"ev": "T", "sym": "MSFT", "x": 4, "i": "1", "p": 1.0, "s": 1, "t": 1536036818784,
             "e": 12},
            {"ev": "TC", "sym": "MSFT"},
        ]
    )  # fmt: skip
    p = PolygonStream().parse(frame)
    assert len(p.trades) == 1 and p.notices == [] and p.ignored == 1


# -- validation -------------------------------------------------------------------------------


def trade(seq: int, ts: int, price: float, pid: str | None, corr: int | None = 0,
          conds: str | None = "@", venue: str | None = "D") -> Trade:  # fmt: skip
    at = T0 + ts
    return Trade(f"r:IWM:t{seq}", "IWM", seq, at, at + 5, price, 100.0, venue, conds, corr, pid)


def stream_of_notices() -> list[Trade]:
    """Two trades, then (with the original's earlier time) a correction, a cancel, a re-sent
    cancel, and a spike cancel far from the price; then a regular trade."""
    return [
        trade(1, 1_000, 100.0, "1"),
        trade(2, 2_000, 100.1, "2"),
        trade(3, 1_000, 100.05, "3", TRADE_CORRECTED, "@ corrects:1"),
        trade(4, 2_000, 100.1, "2", TRADE_CANCELLED, None),
        trade(5, 2_000, 100.1, "2", TRADE_CANCELLED, None),  # re-sent: a duplicate
        trade(6, 2_000, 100.1, "2", TRADE_ERROR, None),  # another code: not a duplicate
        trade(7, 2_500, 150.0, "7", TRADE_CANCELLED, None),  # a notice: no price-change check
        trade(8, 3_000, 100.2, "8"),
        trade(9, 3_000, 100.2, "8"),  # a re-sent trade is still a duplicate
    ]


def test_notices_are_not_duplicates_of_the_trade_they_name_nor_judged_as_prints() -> None:
    v = TradeValidator(TradeValidationConfig())
    verdicts = [v.check(t) for t in stream_of_notices()]
    got = [(x.status, x.rule) for x in verdicts]
    assert got == [
        ("accepted", None),
        ("accepted", None),
        ("accepted", None),  # earlier time, same time as trade 1: neither out of order nor dup
        ("accepted", None),  # the id of trade 2: not its duplicate
        ("duplicate", "duplicate"),
        ("accepted", None),
        ("accepted", None),
        ("accepted", None),  # 100.2 judged against 100.1 (the notices moved nothing)
        ("duplicate", "duplicate"),
    ]
    assert "correction or cancel" in (verdicts[4].reason or "")


def test_both_engines_agree_on_notices_and_t3_reads_a_corrections_codes_only() -> None:
    cfg = TradeValidationConfig(
        rules=replace(TradeRuleSwitches(), abnormal_condition=True), valid_conditions=("@",)
    )
    trades = [*stream_of_notices(), trade(10, 3_100, 100.2, "10", TRADE_CORRECTED, "T corrects:8")]
    v = TradeValidator(cfg)
    live = [(x.status, x.rule) for x in map(v.check, trades)]
    frame = validate_trade_frame(trades_frame(trades), cfg).frame
    assert live == list(zip(frame["status"], frame["reject_rule"], strict=True))
    # "@ corrects:1" is a regular "@"; "T corrects:8" is a Form T print, abnormal
    assert live[2] == ("accepted", None) and live[-1] == ("rejected", "abnormal_condition")
    assert normalize_conditions("@ corrects:1") == "@"


# -- apply_corrections ------------------------------------------------------------------------


def stored(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    """Rows (seq, ts_us, price, venue, conditions, correction, provider_id) as stored trades."""
    cols = ["seq", "ts_us", "price", "venue", "conditions", "correction", "provider_id"]
    df = pl.DataFrame(rows, schema=cols, orient="row")
    return df.with_columns(
        pl.lit("IWM").alias("symbol"),
        (pl.col("ts_us") + 7).alias("recv_us"),
        pl.col("correction").cast(pl.Int64),
    )


def test_apply_corrections_drops_cancelled_and_replaces_corrected_trades() -> None:
    df = stored(
        [
            (1, 100, 10.0, "D", "@", 0, "1"),
            (2, 200, 11.0, "D", "@", 0, "2"),
            (3, 300, 12.0, "D", "@", 0, "3"),
            (4, 310, 13.0, "V", "@", 0, "3"),  # the same id on another venue: another trade
            (5, 400, 14.0, None, None, 0, None),  # no id: nothing names it
            (6, 900, 11.5, "D", "@ I corrects:2", TRADE_CORRECTED, "20"),
            (7, 950, 12.0, "D", None, TRADE_CANCELLED, "3"),
            (8, 960, 10.0, "D", None, TRADE_ERROR, "1"),
            (9, 970, 11.6, "D", "@ corrects:20", TRADE_CORRECTED, "21"),  # corrects the correction
            (10, 980, 99.0, "D", None, TRADE_CANCELLED, "404"),  # names nothing here
            (11, 990, 15.0, "N", "@", 8, None),  # TAQ: an original later cancelled
        ]
    )
    out = apply_corrections(df)
    assert out["seq"].to_list() == [9, 4, 5]
    fixed = out.row(0, named=True)
    assert (fixed["ts_us"], fixed["price"], fixed["conditions"]) == (200, 11.6, "@")
    assert (fixed["correction"], fixed["corrected"], fixed["provider_id"]) == (0, True, "21")
    assert out["corrected"].to_list() == [True, False, False]
    assert set(out.columns) == {*df.columns, "corrected"}


def test_apply_corrections_keeps_a_correction_whose_original_is_not_in_the_frame() -> None:
    df = stored([(1, 500, 20.0, "D", "corrects:77", TRADE_CORRECTED, "78")])
    out = apply_corrections(df)
    assert out.select("ts_us", "price", "conditions", "correction").row(0) == (500, 20.0, None, 0)
    with pytest.raises(ValueError, match="lacks"):
        apply_corrections(df.drop("provider_id"))


def test_a_correction_that_keeps_the_original_id_replaces_it_and_is_kept() -> None:
    """Providers may correct a trade under its own id (ci == oi): the correction row
    replaced the original and then removed itself too (found by review)."""
    df = stored(
        [
            (1, 100, 10.0, "D", "@", 0, "5"),
            (2, 900, 10.5, "D", "@ corrects:5", TRADE_CORRECTED, "5"),
        ]
    )
    out = apply_corrections(df)
    assert out.select("seq", "ts_us", "price", "corrected").rows() == [(2, 100, 10.5, True)]


# -- end to end: a local alpaca feed through the collector -----------------------------------


@pytest.mark.integration
def test_streamed_corrections_and_cancels_are_stored_and_apply(
    make_config, feed_factory, stream_keys
) -> None:
    import time

    from helpers.ws_feed import rfc3339, rows, st, stream_config

    feed = feed_factory("alpaca")
    cfg = stream_config(
        make_config,
        feed,
        source={"data": ["quotes"], "data_by_symbol": {"SPY": ["quotes", "trades"]}},
        realtime_data={"trade_validation": {"future_tolerance_seconds": 1e9}},
    )
    with Collector(cfg) as c:
        wait_until(lambda: st(c)["trades"] >= 3, 10, "the feed's own trades")
        feed.trading = set()  # from here on, only the trades and notices sent below
        t0 = time.time_ns()
        at = [rfc3339(t0 + k * 1000) for k in range(3)]
        base = {"S": "SPY", "x": "V", "s": 100, "z": "B"}
        items = [
            {"T": "t", "i": 9_000_001, "p": 100.0, "c": ["@"], "t": at[0], **base},
            {"T": "t", "i": 9_000_002, "p": 100.1, "c": ["@"], "t": at[1], **base},
            {"T": "t", "i": 9_000_003, "p": 100.2, "c": ["@"], "t": at[2], **base},
            {"T": "c", "S": "SPY", "x": "V", "oi": 9_000_002, "op": 100.1, "os": 100,
             "oc": ["@"], "ci": 9_000_004, "cp": 100.05, "cs": 200, "cc": ["@"], "z": "B",
             "t": at[1]},
            {"T": "x", "i": 9_000_001, "p": 100.0, "a": "C", "t": at[0], **base},
            {"T": "x", "i": 9_000_001, "p": 100.0, "a": "C", "t": at[0], **base},  # re-sent
        ]  # fmt: skip
        before = st(c)["trades"]
        feed.call(lambda: feed.send(items))
        wait_until(lambda: st(c)["trades"] == before + 6, 10, "the trades and notices")
        assert st(c)["trade_notices"] == 3 and st(c)["malformed"] == 0
    got = rows(
        c,
        "SELECT provider_id, correction, price, size, conditions FROM trades "
        "WHERE provider_id LIKE '900000%' ORDER BY seq",
    )
    assert got == [
        ("9000001", None, 100.0, 100.0, "@"),
        ("9000002", None, 100.1, 100.0, "@"),
        ("9000003", None, 100.2, 100.0, "@"),
        ("9000004", 12, 100.05, 200.0, "@ corrects:9000002"),
        ("9000001", 10, 100.0, 100.0, None),
    ]
    assert c.status().symbols["SPY"].trade_duplicates >= 1
    assert rows(c, "SELECT count(*) FROM trade_rejects")[0][0] == 0
    mine = c.trades("SPY").filter(pl.col("provider_id").str.starts_with("900000"))
    out = apply_corrections(mine)
    assert out["provider_id"].to_list() == ["9000004", "9000003"]
    assert out["price"].to_list() == [100.05, 100.2] and out["size"].to_list() == [200.0, 100.0]
    assert out["ts_us"][0] == mine.filter(pl.col("provider_id") == "9000002")["ts_us"][0]


def test_a_notice_read_during_the_handshake_is_kept_for_the_stream() -> None:
    """A frame holding only a correction, read while waiting for the auth answer, is handed
    on with the connection (it was dropped: only quotes, trades and problems were kept)."""
    import asyncio

    import orjson

    from robust_collector.config import config_from_dict
    from robust_collector.sources.websocket import WebSocketSource

    notice = orjson.dumps(
        [{"T": "x", "S": "SPY", "i": 7, "x": "V", "p": 100.0, "s": 5, "a": "C",
          "z": "B", "t": "2026-11-30T15:00:00Z"}]
    )  # fmt: skip

    class ScriptedSocket:
        def __init__(self) -> None:
            self.frames = [
                orjson.dumps([{"T": "success", "msg": "connected"}]),
                notice,
                orjson.dumps([{"T": "success", "msg": "authenticated"}]),
            ]
            self.sent: list[Any] = []

        async def recv(self) -> bytes:
            return self.frames.pop(0)

        async def send(self, message: Any) -> None:
            self.sent.append(message)

    cfg = config_from_dict(
        {"source": {"type": "websocket", "preset": "alpaca", "data": ["trades"]}}
    ).source
    src = WebSocketSource(
        cfg, environ={"APCA_API_KEY_ID": "k" * 20, "APCA_API_SECRET_KEY": "s" * 40}
    )
    ws = ScriptedSocket()
    pending = asyncio.run(src._handshake(ws, ["SPY"]))  # type: ignore[arg-type]
    assert pending == [notice]
    assert [n[0] for n in src.parse(pending[0]).notices] == ["SPY"]
    assert len(ws.sent) == 2  # the auth message, then the subscription
