"""Trade validation: each rule, identity-only duplicates, the BNHLS T1-T4 rules, switches,
counts, config errors and same-timestamp aggregation. Every sequence runs through both
engines (``judge``), which must agree on each trade."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import math
import zoneinfo
from dataclasses import replace
from typing import Any

import polars as pl
import pytest

from robust_collector.errors import ConfigError
from robust_collector.model import Trade
from robust_collector.schema import build
from robust_collector.validation import (
    ACCEPTED,
    TRADE_COUNTER_KEYS,
    TRADE_RULE_INFO,
    TRADE_RULES,
    TRADE_TAQ_COLUMNS,
    PriceRange,
    TradeRuleSwitches,
    TradeValidationConfig,
    TradeValidator,
    TradingHours,
    aggregate_same_timestamp,
    trades_frame,
    validate_trade_frame,
)

NY = zoneinfo.ZoneInfo("America/New_York")
T0 = 1_700_000_000_000_000  # epoch µs origin of most test trades (outside any session)
_seq = itertools.count(1)

Quoted = tuple[str, int, float | None, float | None]
"""A quote event for ``judge``: ``(symbol, ts_us, bid, ask)``."""


def ny_us(y: int, mo: int, d: int, h: int, mi: int, s: int = 0, us: int = 0) -> int:
    """A New York wall-clock time as epoch µs."""
    return int(dt.datetime(y, mo, d, h, mi, s, tzinfo=NY).timestamp()) * 1_000_000 + us


def trade(
    price: float | None = 100.0,
    size: float | None = 100.0,
    *,
    ts: int = 0,
    at: int | None = None,
    recv: int | None = None,
    symbol: str = "SPY",
    venue: str | None = "N",
    conditions: str | None = None,
    correction: int | None = 0,
    provider_id: str | None = None,
) -> Trade:
    """A trade at ``T0 + ts`` µs (or at absolute ``at``), received at that time unless ``recv``."""
    seq = next(_seq)
    when = T0 + ts if at is None else at
    return Trade(
        trade_id=f"test:{symbol}:t{seq}",
        symbol=symbol,
        seq=seq,
        ts_us=when,
        recv_us=when if recv is None else when + recv,
        price=price,
        size=size,
        venue=venue,
        conditions=conditions,
        correction=correction,
        provider_id=provider_id,
        source="test",
    )


def config(**rules: bool) -> TradeValidationConfig:
    """The default config with some rule switches changed."""
    return TradeValidationConfig(rules=replace(TradeRuleSwitches(), **rules))


def judge(
    cfg: TradeValidationConfig, events: list[Trade | Quoted]
) -> list[tuple[str, str | None, str | None]]:
    """Run ``events`` (trades, and quotes for the band rule) through both engines.

    Returns ``(status, rule, reason-or-note)`` per trade after asserting that
    ``validate_trade_frame`` decided every trade and counted exactly as the
    streaming ``TradeValidator`` did."""
    v = TradeValidator(cfg)
    out = []
    for e in events:
        if isinstance(e, Trade):
            x = v.check(e)
            out.append((x.status, x.rule, x.reason))
        else:
            v.note_quote(e[0], e[2], e[3], e[1])
    trades = [e for e in events if isinstance(e, Trade)]
    quotes = pl.DataFrame(
        [e for e in events if not isinstance(e, Trade)],
        schema={"symbol": pl.String, "ts_us": pl.Int64, "bid": pl.Float64, "ask": pl.Float64},
        orient="row",
    )
    result = validate_trade_frame(trades_frame(trades), cfg, quotes)
    frame = result.frame
    got = frame.select(
        "status", "reject_rule", pl.col("reject_reason").fill_null(pl.col("note"))
    ).rows()
    assert got == out
    assert result.stats == v.stats()
    return out


def rules_of(verdicts: list[tuple[str, str | None, str | None]]) -> list[str | None]:
    return [v[1] for v in verdicts]


# --- the rule table --------------------------------------------------------------------------


def test_rule_ids_order_and_counter_keys() -> None:
    assert TRADE_RULES == (
        "duplicate",
        "bad_timestamp",
        "bad_price",
        "bad_size",
        "price_range",
        "future_timestamp",
        "outside_session",
        "exchange",
        "correction",
        "abnormal_condition",
        "out_of_order",
        "outside_quote_band",
        "price_change",
    )
    assert all(r.description and r.reference for r in TRADE_RULE_INFO)
    assert set(TRADE_RULES) <= set(TRADE_COUNTER_KEYS)
    assert {"accepted", "rejected", "reanchored"} <= set(TRADE_COUNTER_KEYS)


def test_the_bnhls_rules_and_the_exchange_filter_are_off_by_default() -> None:
    c = TradeValidationConfig()
    assert not (c.rules.outside_session or c.rules.correction or c.rules.abnormal_condition)
    assert not c.rules.outside_quote_band and c.exchanges == ()
    odd = trade(conditions="Z", correction=12, venue="D")  # outside any session too
    assert judge(c, [odd]) == [("accepted", None, None)]


# --- identity: duplicates ----------------------------------------------------------------------


def test_two_trades_in_one_microsecond_at_one_price_are_two_trades() -> None:
    trades = [
        trade(100.0, 100.0),
        trade(100.0, 200.0),  # another size
        trade(100.0, 100.0, venue="D"),  # another venue
        trade(100.0, 100.0, conditions="I"),  # other conditions
        trade(100.0, 100.0, correction=1),  # corrected (T2 off by default)
    ]
    assert rules_of(judge(TradeValidationConfig(), trades)) == [None] * 5


def test_an_exact_repeat_in_the_same_microsecond_is_a_duplicate() -> None:
    first = trade(100.0, 100.0, venue="N", conditions="F I")
    other = trade(100.0, 300.0)
    again = replace(first, trade_id="x", seq=99, recv_us=first.recv_us + 5, source="again")
    verdicts = judge(TradeValidationConfig(), [first, other, again, again])
    assert [v[0] for v in verdicts] == ["accepted", "accepted", "duplicate", "duplicate"]
    assert verdicts[2][2] == (
        "same time, price, size, venue, conditions and correction as a trade accepted at that time"
    )


def test_a_repeat_from_an_earlier_microsecond_is_judged_not_remembered() -> None:
    # Only the current timestamp's records are kept: the old one is judged (out of order).
    first = trade(100.0, ts=0)
    verdicts = judge(TradeValidationConfig(), [first, trade(100.1, ts=1), replace(first)])
    assert rules_of(verdicts) == [None, None, "out_of_order"]
    # With out_of_order off the repeat is stored again: the memory really is one timestamp.
    verdicts = judge(config(out_of_order=False), [first, trade(100.1, ts=1), replace(first)])
    assert rules_of(verdicts) == [None, None, None]


def test_a_repeat_of_a_rejected_trade_is_judged_again() -> None:
    bad = trade(100.0, 0.0)
    assert rules_of(judge(TradeValidationConfig(), [bad, replace(bad)])) == ["bad_size"] * 2


def test_a_trade_with_nan_is_never_a_duplicate() -> None:
    nan_size = trade(100.0, math.nan)
    verdicts = judge(config(bad_size=False), [nan_size, nan_size])
    assert [v[0] for v in verdicts] == ["accepted", "accepted"]


def test_the_provider_trade_id_decides_identity_when_there_is_one() -> None:
    a = trade(100.0, provider_id="T1")
    resent = trade(100.02, 50.0, ts=5, provider_id="T1")  # same id, other fields: a re-send
    twin = trade(100.0, provider_id="T2")  # same record, other id: another trade
    verdicts = judge(TradeValidationConfig(), [a, resent, twin])
    assert [v[0] for v in verdicts] == ["accepted", "duplicate", "accepted"]
    assert verdicts[1][2] == "same provider trade id as a recent trade"


def test_the_recent_id_memory_is_bounded() -> None:
    cfg = TradeValidationConfig(duplicate_id_window=2)
    events = [trade(100.0, ts=i, provider_id=f"T{i}") for i in range(3)]
    events.append(trade(100.0, ts=9, provider_id="T0"))  # forgotten: accepted again
    events.append(trade(100.0, ts=9, provider_id="T2"))  # remembered
    assert [v[0] for v in judge(cfg, events)] == ["accepted"] * 4 + ["duplicate"]


def test_duplicates_can_be_switched_off() -> None:
    t = trade()
    assert [v[0] for v in judge(config(duplicate=False), [t, t])] == ["accepted"] * 2


# --- the basic rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "rule", "reason"),
    [
        ({"price": None}, "bad_price", "no price"),
        ({"price": math.nan}, "bad_price", "price nan is not finite"),
        ({"price": math.inf}, "bad_price", "price inf is not finite"),
        ({"price": 0.0}, "bad_price", "price 0 is not positive"),
        ({"price": -5.0}, "bad_price", "price -5 is not positive"),
        ({"size": 0.0}, "bad_size", "size 0 is not positive"),
        ({"size": -1.0}, "bad_size", "size -1 is not positive"),
        ({"size": math.nan}, "bad_size", "size nan is not finite"),
        ({"price": 0.5}, "price_range", "price 0.50 out of range [1.00, 10000.00]"),
        ({"price": 20000.0}, "price_range", "price 20000.00 out of range [1.00, 10000.00]"),
        ({"ts": 0, "recv": -6_000_000}, "future_timestamp", "6.000 s after receive time"),
        ({"at": T0 // 1000, "recv": T0 - T0 // 1000}, "bad_timestamp", "wrong unit"),
    ],
)
def test_basic_rules_reject_with_rule_and_reason(
    kwargs: dict[str, Any], rule: str, reason: str
) -> None:
    ((status, got_rule, got_reason),) = judge(TradeValidationConfig(), [trade(**kwargs)])
    assert (status, got_rule) == ("rejected", rule)
    assert got_reason is not None and reason in got_reason


def test_no_size_is_a_trade_of_unknown_size_not_a_reject() -> None:
    assert judge(TradeValidationConfig(), [trade(size=None)]) == [ACCEPTED_ROW]


ACCEPTED_ROW = ("accepted", None, None)


def test_a_switched_off_rule_lets_the_trade_through_but_no_price_is_always_rejected() -> None:
    cfg = config(bad_price=False, price_range=False)
    verdicts = judge(cfg, [trade(-1.0), trade(None, ts=1)])
    assert rules_of(verdicts) == [None, "bad_price"]


def test_price_range_overrides_per_symbol() -> None:
    cfg = TradeValidationConfig(price_ranges={"BRK.A": PriceRange(1.0, 1_000_000.0)})
    verdicts = judge(cfg, [trade(600_000.0, symbol="BRK.A"), trade(600_000.0)])
    assert rules_of(verdicts) == [None, "price_range"]


def test_out_of_order_is_strict_and_equal_times_are_fine() -> None:
    verdicts = judge(TradeValidationConfig(), [trade(ts=10), trade(ts=10, size=5.0), trade(ts=9)])
    assert rules_of(verdicts) == [None, None, "out_of_order"]


def test_each_symbol_has_its_own_state() -> None:
    verdicts = judge(
        TradeValidationConfig(),
        [trade(100.0, ts=10), trade(300.0, ts=5, symbol="QQQ"), trade(100.0, ts=11)],
    )
    assert rules_of(verdicts) == [None, None, None]


# --- price change and re-anchoring -----------------------------------------------------------


def test_a_spike_is_rejected_and_the_reference_stays() -> None:
    verdicts = judge(TradeValidationConfig(), [trade(100.0), trade(120.0, ts=1), trade(101, ts=2)])
    assert rules_of(verdicts) == [None, "price_change", None]
    assert verdicts[1][2] == "price 120.00 moved +20.00% from 100.00 (limit 10%)"


def test_an_exact_ten_percent_move_is_accepted() -> None:
    assert (
        rules_of(judge(TradeValidationConfig(), [trade(100.0), trade(110.0, ts=1)])) == [None] * 2
    )


def test_a_real_move_reanchors_after_agreeing_trades() -> None:
    moves = [trade(100.0)] + [
        trade(p, ts=i + 1) for i, p in enumerate([115.0, 115.2, 115.1, 115.3])
    ]
    verdicts = judge(TradeValidationConfig(), moves)
    assert rules_of(verdicts) == [None, "price_change", "price_change", "price_change", None]
    assert verdicts[-1][2] == "re-anchored at 115.30 after 3 agreeing trades"
    v = TradeValidator()
    for t in moves:
        v.check(t)
    assert v.counts["SPY"]["reanchored"] == 1
    assert v.check(trade(115.4, ts=9)) is ACCEPTED  # the new level is the reference


def test_alternating_noise_never_reanchors() -> None:
    prices = [100.0] + [115.0, 85.0] * 4
    verdicts = judge(TradeValidationConfig(), [trade(p, ts=i) for i, p in enumerate(prices)])
    assert rules_of(verdicts) == [None] + ["price_change"] * 8


def test_other_rejects_neither_extend_nor_break_the_run() -> None:
    events = [
        trade(100.0, ts=10),
        trade(115.0, ts=11),
        trade(115.0, ts=5),  # out of order: not evidence
        trade(115.0, 0.0, ts=12),  # bad size: not evidence
        trade(115.1, ts=13),
        trade(115.2, ts=14),
        trade(115.2, ts=15),
    ]
    verdicts = judge(TradeValidationConfig(), events)
    assert rules_of(verdicts) == [
        None,
        "price_change",
        "out_of_order",
        "bad_size",
        "price_change",
        "price_change",
        None,
    ]


# --- BNHLS T1: the session -------------------------------------------------------------------

T1 = config(outside_session=True)


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        (ny_us(2024, 3, 8, 9, 30), True),  # the open is kept
        (ny_us(2024, 3, 8, 16, 0), True),  # so is the close (as highfrequency)
        (ny_us(2024, 3, 8, 9, 29, 59, 999_999), False),
        (ny_us(2024, 3, 8, 16, 0, 0, 1), False),
        (ny_us(2024, 3, 8, 4, 5), False),  # pre-market
        (ny_us(2024, 3, 8, 19, 30), False),  # after hours, already the next UTC day
        (ny_us(2024, 3, 11, 9, 30), True),  # first EDT trading day
        (ny_us(2024, 3, 10, 1, 59), False),  # DST change day, before the change
        (ny_us(2024, 3, 10, 12, 0), True),  # DST change day, after it (a Sunday: no calendar)
        (ny_us(2024, 11, 3, 15, 59, 59), True),  # back to EST
    ],
)
def test_outside_session_keeps_09_30_to_16_00_new_york_time(at: int, inside: bool) -> None:
    ((status, rule, reason),) = judge(T1, [trade(at=at)])
    assert (status == "accepted") is inside
    if not inside:
        assert rule == "outside_session"
        assert reason is not None and "outside the session 09:30-16:00 America/New_York" in reason


def test_the_session_is_configurable() -> None:
    hours = TradingHours(timezone="Europe/London", open="08:00", close="16:30")
    cfg = replace(T1, session=hours)
    london = zoneinfo.ZoneInfo("Europe/London")
    at = int(dt.datetime(2024, 6, 3, 8, 0, tzinfo=london).timestamp()) * 1_000_000
    verdicts = judge(cfg, [trade(at=at - 1), trade(at=at)])
    assert rules_of(verdicts) == ["outside_session", None]


# --- the exchanges filter, BNHLS T2 and T3 ---------------------------------------------------


def test_the_exchanges_filter_keeps_only_listed_venues() -> None:
    cfg = TradeValidationConfig(exchanges=("N",))
    events = [trade(venue="N"), trade(venue="D", ts=1), trade(venue=None, ts=2)]
    verdicts = judge(cfg, events)
    assert rules_of(verdicts) == [None, "exchange", "exchange"]
    assert verdicts[1][2] == "venue 'D' is not one of the kept exchanges (N)"


def test_corrections_are_rejected_by_t2() -> None:
    cfg = config(correction=True)
    events = [trade(correction=c, ts=i) for i, c in enumerate([0, None, 1, 8, 12])]
    verdicts = judge(cfg, events)
    assert rules_of(verdicts) == [None, None, "correction", "correction", "correction"]
    assert verdicts[3][2] == "correction indicator 8: a corrected or cancelled trade"


@pytest.mark.parametrize(
    ("conditions", "regular"),
    [
        (None, True),
        ("", True),
        ("  ", True),
        ("@", True),
        ("F I", True),  # TAQ writes codes with spaces; white space is removed
        ("@\tF I", True),
        ("@FI", True),
        ("I", True),
        ("T", False),  # extended hours
        ("FTI", False),
        ("4 B", False),
        ("Z", False),
    ],
)
def test_abnormal_conditions_follow_highfrequency_valid_conds(
    conditions: str | None, regular: bool
) -> None:
    ((_, rule, _),) = judge(config(abnormal_condition=True), [trade(conditions=conditions)])
    assert (rule is None) is regular
    if not regular:
        assert rule == "abnormal_condition"


def test_the_condition_list_is_configurable_and_no_conditions_can_be_refused() -> None:
    cfg = TradeValidationConfig(
        valid_conditions=("T", "F I"),
        allow_no_conditions=False,
        rules=replace(TradeRuleSwitches(), abnormal_condition=True),
    )
    events = [trade(conditions=c, ts=i) for i, c in enumerate(["T", "FI", None, "", "@"])]
    assert rules_of(judge(cfg, events)) == [None, None] + ["abnormal_condition"] * 3


# --- BNHLS T4: the prevailing quote's band ---------------------------------------------------

T4 = config(outside_quote_band=True)


def test_trades_outside_the_quote_band_are_rejected() -> None:
    events: list[Trade | Quoted] = [
        trade(100.0, ts=0),  # no quote yet: not judged
        ("SPY", T0 + 1, 100.00, 100.02),  # band [99.98, 100.04]
        trade(100.04, ts=2),
        trade(99.98, ts=2, size=3.0),
        trade(100.05, ts=3),
        trade(99.97, ts=3),
    ]
    verdicts = judge(T4, events)
    assert rules_of(verdicts) == [None, None, None, "outside_quote_band", "outside_quote_band"]
    assert verdicts[3][2] == (
        "price 100.0500 outside the band [99.9800, 100.0400] of the prevailing quote "
        "100.0000 x 100.0200 (1 spread)"
    )


def test_the_band_uses_the_quote_at_or_before_the_trade() -> None:
    events: list[Trade | Quoted] = [
        ("SPY", T0 + 10, 100.00, 100.02),
        ("SPY", T0 + 20, 101.00, 101.02),  # arrives before a trade stamped earlier
        ("SPY", T0 + 20, 102.00, 102.02),  # same time: the last noted prevails
        trade(100.01, ts=15),  # judged against the quote at +10
        trade(102.01, ts=20),
        trade(101.01, ts=25),
    ]
    verdicts = judge(config(outside_quote_band=True, out_of_order=False), events)
    assert rules_of(verdicts) == [None, None, "outside_quote_band"]


def test_quotes_that_cannot_set_a_band_are_ignored() -> None:
    v = TradeValidator(T4)
    assert v.note_quote("SPY", 100.0, 100.02, T0)
    for bid, ask in [(None, 1.0), (100.03, 100.02), (math.nan, 100.0), (0.0, 1.0), (1.0, math.inf)]:
        assert not v.note_quote("SPY", bid, ask, T0 + 1)
    assert v.check(trade(100.05, ts=2)).rule == "outside_quote_band"  # still the first quote
    assert not TradeValidator().note_quote("SPY", 100.0, 100.02, T0)  # rule off: not kept


def test_the_band_width_is_configurable_and_quotes_are_per_symbol() -> None:
    cfg = replace(T4, quote_band_spreads=0.0)
    events: list[Trade | Quoted] = [
        ("SPY", T0, 100.00, 100.02),
        trade(100.02, ts=1),
        trade(100.03, ts=2),
        trade(300.0, ts=2, symbol="QQQ"),  # no QQQ quote: not judged
    ]
    assert rules_of(judge(cfg, events)) == [None, "outside_quote_band", None]


def test_the_quote_history_is_bounded() -> None:
    v = TradeValidator(replace(T4, quote_history=2, rules=replace(T4.rules, out_of_order=False)))
    for i, bid in enumerate([100.0, 101.0, 102.0]):
        v.note_quote("SPY", bid, bid + 0.02, T0 + 10 * (i + 1))
    assert v.check(trade(100.01, ts=15)).accepted  # the +10 quote is gone: not judged
    assert v.check(trade(100.01, ts=25)).rule == "outside_quote_band"  # the +20 quote is kept


# --- switches, counts, logging -----------------------------------------------------------------


def test_disabled_is_a_pass_through_duplicates_included() -> None:
    cfg = TradeValidationConfig(enabled=False)
    t = trade(-1.0, 0.0)
    assert [v[0] for v in judge(cfg, [t, t])] == ["accepted"] * 2


def test_counts_stats_and_reset() -> None:
    v = TradeValidator()
    t = trade()
    for x in [t, t, trade(0.0, ts=1), trade(ts=2, symbol="QQQ")]:
        v.check(x)
    spy = v.counts["SPY"]
    assert set(spy) == set(TRADE_COUNTER_KEYS)
    assert (spy["accepted"], spy["duplicate"], spy["rejected"], spy["bad_price"]) == (1, 1, 1, 1)
    assert v.stats()["total"]["accepted"] == 2
    v.reset("SPY")
    assert set(v.counts) == {"QQQ"}
    v.reset()
    assert v.counts == {}


def test_a_trade_with_junk_fields_is_rejected_not_raised() -> None:
    junk = replace(trade(), price="abc")  # type: ignore[arg-type]
    verdict = TradeValidator().check(junk)
    assert verdict.rule == "bad_price" and verdict.reason is not None
    assert verdict.reason.startswith("not a valid trade: TypeError")


def test_rejections_are_logged_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    v = TradeValidator()
    with caplog.at_level(logging.WARNING, logger="robust_collector.validation"):
        for i in range(5):
            v.check(trade(0.0, ts=i))
        v.check(trade(0.0, ts=20_000_000))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("SPY trade rejected by bad_price: price 0 is not positive")
    assert "(4 more since the last warning)" in messages[1]


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"session": {"open": "9h30"}}, "trade_validation.session.open: expected a time"),
        ({"session": {"close": "09:00"}}, "trade_validation.session.close: expected a time after"),
        ({"session": {"timezone": "Mars/Olympus"}}, "trade_validation.session.timezone"),
        ({"exchanges": "N"}, "trade_validation.exchanges: expected a list"),
        ({"valid_conditions": [""]}, "trade_validation.valid_conditions[0]: expected a non-empty"),
        ({"min_price": 10, "max_price": 5}, "trade_validation.min_price: expected a number below"),
        ({"rules": {"outside_sesion": True}}, "did you mean 'outside_session'"),
        ({"quote_band_spreads": -1}, "trade_validation.quote_band_spreads"),
    ],
)
def test_bad_trade_config_is_one_line_naming_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(TradeValidationConfig, raw, "realtime_data.trade_validation")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_the_collector_config_has_a_trade_validation_section() -> None:
    from robust_collector.config import config_from_dict

    cfg = config_from_dict(
        {"realtime_data": {"trade_validation": {"exchanges": ["N"], "rules": {"correction": True}}}}
    )
    tv = cfg.realtime_data.trade_validation
    assert tv.exchanges == ("N",) and tv.rules.correction and not tv.rules.outside_session
    assert config_from_dict(cfg.as_dict()) == cfg


# --- frames ----------------------------------------------------------------------------------


def test_the_frame_engine_maps_taq_columns_and_splits_the_result() -> None:
    df = pl.DataFrame(
        {
            "DT": [dt.datetime(2024, 3, 8, 15, 0), dt.datetime(2024, 3, 8, 15, 0)] * 2,
            "EX": ["N", "N", "D", "N"],
            "SYMBOL": ["XXX"] * 4,
            "COND": [None, None, "F I", "T"],
            "SIZE": [100, 100, 5, 0],
            "PRICE": [10.0, 10.0, 10.01, 10.0],
            "CORR": [0, 0, 0, 0],
        }
    )
    result = validate_trade_frame(df, columns=TRADE_TAQ_COLUMNS)
    assert result.frame.columns == [*df.columns, "status", "reject_rule", "reject_reason", "note"]
    assert result.frame["status"].to_list() == ["accepted", "duplicate", "accepted", "rejected"]
    assert result.accepted.height == 2 and result.duplicates.height == 1
    assert result.rejects["reject_rule"].to_list() == ["bad_size"]
    summary = dict(result.summary.select("rule", "count").iter_rows())
    assert list(summary) == [*TRADE_RULES, "accepted"]
    assert sum(summary.values()) == df.height


def test_frame_column_errors_are_clear() -> None:
    df = pl.DataFrame({"ts_us": [T0], "price": [1.0], "when": ["x"]})
    with pytest.raises(ValueError, match="unknown fields"):
        validate_trade_frame(df, columns={"ts_us": "ts_us", "last": "price"})
    with pytest.raises(ValueError, match="not in the frame"):
        validate_trade_frame(df, columns={"ts_us": "ts_us", "price": "PRICE"})
    with pytest.raises(ValueError, match="'price' column are required"):
        validate_trade_frame(df, columns={"ts_us": "ts_us"})
    with pytest.raises(TypeError, match="Datetime or integer"):
        validate_trade_frame(df, columns={"ts_us": "when", "price": "price"})
    with pytest.raises(ValueError, match="'bid' and 'ask' are required"):
        validate_trade_frame(df, T4, pl.DataFrame({"ts_us": [T0], "bid": [1.0]}))


def test_an_empty_frame() -> None:
    result = validate_trade_frame(trades_frame([]))
    assert result.frame.height == 0 and result.summary["count"].sum() == 0


# --- same-timestamp aggregation (analysis, not a rule) ----------------------------------------


def test_aggregate_same_timestamp_takes_the_median_price_and_sums_sizes() -> None:
    trades = [
        trade(10.00, 100.0, ts=0),
        trade(10.02, 50.0, ts=0),
        trade(10.04, 10.0, ts=0),
        trade(10.01, 1.0, ts=0, symbol="QQQ"),
        trade(10.03, 7.0, ts=5),
        trade(10.05, 3.0, ts=5),
    ]
    out = aggregate_same_timestamp(trades_frame(trades))
    assert out.columns == ["ts_us", "symbol", "price", "size", "trades"]
    assert out.rows() == [
        (T0, "QQQ", 10.01, 1.0, 1),
        (T0, "SPY", 10.02, 160.0, 3),
        (T0 + 5, "SPY", 10.04, 10.0, 2),
    ]


def test_aggregate_same_timestamp_reads_taq_columns() -> None:
    df = pl.DataFrame(
        {
            "DT": [dt.datetime(2024, 1, 2, 15)] * 2,
            "SYMBOL": ["XXX"] * 2,
            "PRICE": [1.0, 2.0],
            "SIZE": [3, 4],
            "EX": ["N", "N"],
        }
    )
    out = aggregate_same_timestamp(df, TRADE_TAQ_COLUMNS)
    assert out.rows() == [(dt.datetime(2024, 1, 2, 15), "XXX", 1.5, 7, 2)]
    with pytest.raises(ValueError, match="'price' column are required"):
        aggregate_same_timestamp(df, {"ts_us": "DT", "size": "SIZE"})
