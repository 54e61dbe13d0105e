"""The streaming Validator: each rule, its boundaries, re-anchoring, switches and counts."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from dataclasses import replace
from typing import Any

import pytest

from robust_collector.model import Quote
from robust_collector.schema import build
from robust_collector.validation import (
    ACCEPTED,
    COUNTER_KEYS,
    DUPLICATE,
    RULE_INFO,
    RULES,
    PriceRange,
    RuleSwitches,
    ValidationConfig,
    Validator,
    Verdict,
)

T0 = 1_700_000_000_000_000  # epoch µs origin of the test quotes
_seq = itertools.count(1)


def quote(
    bid: float | None = 99.99,
    ask: float | None = 100.01,
    *,
    last: float | None = None,
    symbol: str = "SPY",
    ts: int = 0,
    recv: int | None = None,
    bid_size: float | None = 1.0,
    ask_size: float | None = 1.0,
) -> Quote:
    """A quote at ``T0 + ts`` µs, received at that time unless ``recv`` is given."""
    seq = next(_seq)
    return Quote(
        tick_id=f"test:{symbol}:{seq}",
        symbol=symbol,
        seq=seq,
        ts_us=T0 + ts,
        recv_us=T0 + (ts if recv is None else recv),
        bid=bid,
        ask=ask,
        bid_size=bid_size,
        ask_size=ask_size,
        last=last,
        source="test",
    )


def mid(m: float, *, half: float = 0.01, ts: int = 0, **kw: Any) -> Quote:
    """A two-sided quote centred on ``m``."""
    return quote(m - half, m + half, ts=ts, **kw)


def last_only(price: float, *, ts: int = 0, **kw: Any) -> Quote:
    return quote(None, None, last=price, ts=ts, bid_size=None, ask_size=None, **kw)


def only(*rule_ids: str, **kw: Any) -> ValidationConfig:
    """A config with only the named rules switched on (and the given thresholds)."""
    switches = RuleSwitches(
        **{f.name: f.name in rule_ids for f in dataclasses.fields(RuleSwitches)}
    )
    return ValidationConfig(rules=switches, **kw)


def run(v: Validator, quotes: list[Quote]) -> list[Verdict]:
    return [v.check(q) for q in quotes]


def rules_of(verdicts: list[Verdict]) -> list[str | None]:
    return [x.rule for x in verdicts]


# --- the shape of things ------------------------------------------------------------------


def test_rule_ids_and_order_are_stable() -> None:
    assert RULES == (
        "duplicate",
        "bad_timestamp",
        "non_finite",
        "non_positive",
        "crossed",
        "price_range",
        "future_timestamp",
        "out_of_order",
        "spread_outlier",
        "price_change",
        "mid_outlier",
    )
    assert {r.id for r in RULE_INFO} == {f.name for f in dataclasses.fields(RuleSwitches)}


def test_verdict_is_immutable_and_accepted_is_shared() -> None:
    v = Validator()
    first, second = v.check(mid(100, ts=1)), v.check(mid(100.5, ts=2))
    assert first is ACCEPTED and second is ACCEPTED
    assert first.accepted and not first.duplicate and not first.rejected
    assert (first.rule, first.reason) == (None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.status = "rejected"  # type: ignore[misc]


def test_stats_shape() -> None:
    v = Validator()
    q = mid(100, ts=1)
    run(v, [q, q, mid(100, half=-0.02, ts=2), mid(101, ts=3, symbol="QQQ")])
    stats = v.stats()
    assert set(stats) == {"total", "symbols"}
    assert set(stats["total"]) == set(COUNTER_KEYS)
    assert stats["symbols"]["SPY"] == v.counts["SPY"]
    assert stats["symbols"]["SPY"]["accepted"] == 1
    assert stats["symbols"]["SPY"]["duplicate"] == 1
    assert stats["symbols"]["SPY"]["crossed"] == 1
    assert stats["symbols"]["SPY"]["rejected"] == 1
    assert stats["total"]["accepted"] == 2
    assert stats["symbols"]["QQQ"]["rejected"] == 0


def test_config_fields_added_here_validate() -> None:
    c = build(ValidationConfig, {"mid_mad_floor_pct": 0, "spread_floor_pct": 0.05})
    assert (c.mid_mad_floor_pct, c.spread_floor_pct) == (0.0, 0.05)
    with pytest.raises(ValueError, match="mid_mad_floor_pct"):
        build(ValidationConfig, {"mid_mad_floor_pct": -1})


# --- stateless rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "field"),
    [
        (quote(math.nan, 100.0), "bid"),
        (quote(99.0, math.inf), "ask"),
        (quote(None, None, last=-math.inf), "last"),
        (quote(99.0, 100.0, last=math.nan), "last"),
    ],
)
def test_non_finite(q: Quote, field: str) -> None:
    verdict = Validator().check(q)
    assert verdict.rule == "non_finite"
    assert verdict.reason is not None and verdict.reason.startswith(field)


def test_no_price_at_all_is_rejected_even_with_the_switch_off() -> None:
    for config in (ValidationConfig(), only()):
        verdict = Validator(config).check(quote(99.0, None))
        assert verdict.rule == "non_finite"
        assert verdict.reason is not None and "no price" in verdict.reason


@pytest.mark.parametrize(
    "q",
    [
        quote(0.0, 100.0),
        quote(99.0, -1.0),
        quote(None, None, last=0.0),
        quote(99.0, 100.0, bid_size=-1.0),
        quote(99.0, 100.0, ask_size=-0.5),
    ],
)
def test_non_positive(q: Quote) -> None:
    assert Validator().check(q).rule == "non_positive"


def test_zero_sizes_are_fine() -> None:
    assert Validator().check(quote(99.0, 100.0, bid_size=0.0, ask_size=0.0)).accepted


def test_crossed_rejected_and_locked_accepted_but_counted() -> None:
    v = Validator()
    crossed = v.check(quote(100.02, 100.0, ts=1))
    assert crossed.rule == "crossed"
    assert crossed.reason == "crossed quote: bid 100.02 > ask 100.00"
    assert v.check(quote(100.0, 100.0, ts=2)) is ACCEPTED
    assert v.counts["SPY"]["locked"] == 1
    assert v.counts["SPY"]["crossed"] == 1


def test_price_range_boundaries_and_seed_message() -> None:
    v = Validator(only("price_range"))
    assert v.check(last_only(1.0, ts=1)).accepted
    assert v.check(last_only(10000.0, ts=2)).accepted
    assert v.check(last_only(0.99, ts=3)).rule == "price_range"
    assert v.check(last_only(10000.01, ts=4)).rule == "price_range"
    spike = v.check(last_only(45000.0, ts=5))
    assert spike.reason == "price 45000.00 out of range [1.00, 10000.00]"


def test_price_range_per_symbol_override() -> None:
    config = ValidationConfig(price_ranges={"BRK.A": PriceRange(min_price=1.0, max_price=1e6)})
    v = Validator(config)
    assert v.check(last_only(500_000.0, symbol="BRK.A")).accepted
    assert v.check(last_only(500_000.0, symbol="SPY")).rule == "price_range"


def test_price_is_last_when_present_else_mid() -> None:
    v = Validator(only("price_range"))
    # The mid (5.0) is outside nothing, the last (20000) is out of range: last wins.
    assert v.check(quote(4.0, 6.0, last=20000.0, ts=1)).rule == "price_range"
    # Without a last, the mid (0.5) is judged.
    assert v.check(quote(0.4, 0.6, ts=2)).reason == "price 0.50 out of range [1.00, 10000.00]"


def test_future_timestamp_uses_receive_time_with_inclusive_tolerance() -> None:
    v = Validator(only("future_timestamp"))  # 5 s tolerance
    assert v.check(mid(100, ts=5_000_000, recv=0)).accepted
    assert v.check(mid(100, ts=10_000_001, recv=5_000_000)).rule == "future_timestamp"
    # Far from the wall clock, but not ahead of its own receive time: fine.
    far = Quote("x", "SPY", 1, 4_102_444_800_000_000, 4_102_444_800_000_000, 99.0, 100.0)
    assert Validator().check(far).accepted


def test_first_failing_rule_wins() -> None:
    v = Validator()
    assert v.check(quote(math.nan, -1.0)).rule == "non_finite"
    assert v.check(quote(-1.0, -2.0)).rule == "non_positive"
    assert v.check(quote(20001.0, 20000.0)).rule == "crossed"
    assert v.check(quote(20000.0, 20001.0, ts=10**9, recv=0)).rule == "price_range"


# --- out of order -------------------------------------------------------------------------


def test_out_of_order_against_last_accepted_time() -> None:
    v = Validator(only("out_of_order"))
    assert v.check(mid(100, ts=10)).accepted
    assert v.check(mid(100.01, ts=10)).accepted  # same exchange time: fine
    older = v.check(mid(100.02, ts=5))
    assert older.rule == "out_of_order"
    assert older.reason is not None and "0.000005 s older" in older.reason
    # A rejected quote does not move the clock: 7 is still older than 10.
    assert v.check(mid(100.03, ts=7)).rule == "out_of_order"
    assert v.check(mid(100.04, ts=11)).accepted


# --- duplicates ---------------------------------------------------------------------------


def test_duplicate_of_last_accepted_is_dropped_and_counted() -> None:
    v = Validator()
    q = mid(100, ts=1)
    again = replace(q, tick_id="other", seq=99, recv_us=q.recv_us + 1_000_000)
    assert v.check(q) is ACCEPTED
    assert v.check(again) is DUPLICATE
    assert DUPLICATE.duplicate and not DUPLICATE.accepted and DUPLICATE.rule == "duplicate"
    counts = v.counts["SPY"]
    assert (counts["accepted"], counts["duplicate"], counts["rejected"]) == (1, 1, 0)


def test_duplicate_needs_same_time_and_every_value() -> None:
    v = Validator()
    q = mid(100, ts=1)
    v.check(q)
    assert v.check(replace(q, ts_us=q.ts_us + 1)).accepted  # new exchange time
    q2 = replace(q, ts_us=q.ts_us + 1)
    assert v.check(replace(q2, bid_size=2.0)).accepted  # a size changed
    assert v.check(replace(q2, bid_size=2.0, source="other")).duplicate


def test_duplicate_only_of_the_last_accepted_quote() -> None:
    v = Validator()
    good, bad = mid(100, ts=1), quote(100.02, 100.0, ts=2)
    run(v, [good, bad])
    assert v.check(bad).rule == "crossed"  # rejected again, not a duplicate of a reject
    run(v, [mid(100.5, ts=3)])
    assert v.check(good).rule == "out_of_order"  # not the last accepted any more


def test_a_quote_with_a_nan_is_never_a_duplicate() -> None:
    # With non_finite switched off a NaN size passes the rules, but NaN equals nothing:
    # re-sending the very same object must not count as a duplicate live when
    # the same values in a frame would not.
    v = Validator(ValidationConfig(rules=RuleSwitches(non_finite=False)))
    q = quote(99.99, 100.01, bid_size=math.nan, ts=1)
    assert run(v, [q, q]) == [ACCEPTED, ACCEPTED]
    assert v.counts["SPY"]["duplicate"] == 0


def test_a_non_finite_size_is_rejected_like_a_non_finite_price() -> None:
    # an infinite size was stored as a tick (the chaos catalogue through the stream)
    v = Validator()
    for i, (bsz, asz) in enumerate([(math.inf, 1.0), (1.0, math.nan), (-math.inf, 1.0)], 1):
        verdict = v.check(quote(99.99, 100.01, bid_size=bsz, ask_size=asz, ts=i))
        assert verdict.rule == "non_finite", verdict
    assert v.check(quote(99.99, 100.01, bid_size=0.0, ask_size=5.0, ts=9)).accepted


def test_duplicate_switched_off_accepts_twice() -> None:
    v = Validator(ValidationConfig(rules=RuleSwitches(duplicate=False)))
    q = mid(100, ts=1)
    assert run(v, [q, q]) == [ACCEPTED, ACCEPTED]


# --- price change and re-anchoring -------------------------------------------------------


def test_price_change_boundaries_are_inclusive() -> None:
    for start, end in [(100.0, 110.0), (100.0, 90.0), (157.3, 173.03), (157.3, 141.57)]:
        v = Validator(only("price_change"))
        assert v.check(last_only(start, ts=1)).accepted
        assert v.check(last_only(end, ts=2)).accepted, (start, end)
    v = Validator(only("price_change"))
    v.check(last_only(100.0, ts=1))
    rejected = v.check(last_only(110.01, ts=2))
    assert rejected.rule == "price_change"
    assert rejected.reason == "price 110.01 moved +10.01% from 100.00 (limit 10%)"


def test_reference_is_the_last_accepted_price() -> None:
    v = Validator(only("price_change"))
    out = run(v, [last_only(p, ts=i) for i, p in enumerate([100.0, 115.0, 109.0, 119.0])])
    # 115 is rejected (vs 100); 109 is judged against 100 again; 119 against 109.
    assert rules_of(out) == [None, "price_change", None, None]


def test_genuine_jump_is_accepted_after_the_configured_confirmation() -> None:
    v = Validator(only("price_change"))  # reanchor_after = 3
    prices = [100.0, 115.0, 115.2, 114.9, 115.1, 115.3]
    out = run(v, [last_only(p, ts=i) for i, p in enumerate(prices)])
    assert [x.status for x in out] == [
        "accepted",
        "rejected",
        "rejected",
        "rejected",
        "accepted",
        "accepted",
    ]
    assert out[4].reason == "re-anchored at 115.10 after 3 agreeing quotes"
    assert out[4].rule is None and out[5] is ACCEPTED
    assert v.counts["SPY"]["reanchored"] == 1


@pytest.mark.parametrize("after", [1, 2, 5])
def test_reanchor_after_is_configurable(after: int) -> None:
    v = Validator(only("price_change", reanchor_after=after))
    v.check(last_only(100.0, ts=0))
    out = run(v, [last_only(115.0 + i / 100, ts=i + 1) for i in range(after + 1)])
    assert [x.status for x in out] == ["rejected"] * after + ["accepted"]
    assert (
        out[-1].reason == f"re-anchored at {115.0 + after / 100:.2f} after {after} agreeing quotes"
    )


def test_single_spike_is_not_accepted() -> None:
    v = Validator(only("price_change"))
    out = run(v, [last_only(p, ts=i) for i, p in enumerate([100.0, 150.0, 100.1, 100.2])])
    assert rules_of(out) == [None, "price_change", None, None]
    assert v.counts["SPY"]["reanchored"] == 0


def test_alternating_noise_does_not_reanchor() -> None:
    v = Validator(only("price_change", reanchor_after=2))
    prices = [100.0] + [115.0, 85.0] * 10
    out = run(v, [last_only(p, ts=i) for i, p in enumerate(prices)])
    assert all(x.rule == "price_change" for x in out[1:])
    assert v.counts["SPY"]["reanchored"] == 0


def test_disagreeing_rejects_restart_the_run() -> None:
    v = Validator(only("price_change"))  # 1 % tolerance
    prices = [100.0, 115.0, 115.1, 130.0, 130.1, 129.9, 130.2]
    out = run(v, [last_only(p, ts=i) for i, p in enumerate(prices)])
    assert [x.status for x in out][-1] == "accepted"
    assert out[-1].reason == "re-anchored at 130.20 after 3 agreeing quotes"
    assert all(x.rejected for x in out[1:-1])


def test_an_accepted_quote_breaks_the_run() -> None:
    v = Validator(only("price_change"))
    prices = [100.0, 115.0, 115.1, 100.5, 115.2, 115.3, 115.2]
    out = run(v, [last_only(p, ts=i) for i, p in enumerate(prices)])
    assert rules_of(out) == [None, "price_change", "price_change", None] + ["price_change"] * 3


def test_repeats_of_one_rejected_quote_do_not_confirm_a_level() -> None:
    # A venue re-sending its stale quote (seen in the TAQ sample) is one opinion, not four.
    v = Validator(only("price_change"))
    out = run(v, [last_only(100.0, ts=0)] + [last_only(115.0, ts=i) for i in range(1, 8)])
    assert all(x.rejected for x in out[1:])
    # Distinct agreeing quotes do confirm it (the repeats neither extend nor break the run).
    out = run(v, [last_only(p, ts=10 + i) for i, p in enumerate([115.1, 115.2, 115.05])])
    assert [x.status for x in out] == ["rejected", "rejected", "accepted"]


def test_quotes_rejected_by_earlier_rules_do_not_break_the_run() -> None:
    v = Validator()
    out = run(
        v,
        [
            mid(100.0, ts=0),
            mid(115.0, ts=1),
            quote(116.0, 115.0, ts=2),  # crossed: ignored by the run
            mid(115.1, ts=3),
            mid(115.2, ts=4),
            mid(115.15, ts=5),
        ],
    )
    assert rules_of(out) == [None, "price_change", "crossed", "price_change", "price_change", None]
    assert out[-1].reason is not None and out[-1].reason.startswith("re-anchored")


# --- rolling windows ----------------------------------------------------------------------


def test_spread_outlier_against_rolling_median() -> None:
    config = only("spread_outlier", spread_window=10, min_window_samples=5, spread_outlier_k=5.0)
    v = Validator(config)
    warmup = [quote(99.99, 100.01, ts=i) for i in range(4)]
    assert all(x.accepted for x in run(v, warmup))
    assert v.check(quote(99.0, 101.0, ts=4)).accepted  # only 4 samples: rule not active yet
    # Window now [0.02]*4 + [2.0]: median 0.02, limit 5 x 0.02 = 0.10.
    assert v.check(quote(99.95, 100.05, ts=5)).accepted  # exactly 0.10 (not above)
    wide = v.check(quote(99.9, 100.1, ts=6))
    assert wide.rule == "spread_outlier"
    assert wide.reason == "spread 0.2000 above 5 x rolling median spread 0.0200"


def test_spread_floor_when_the_median_spread_is_zero() -> None:
    # Locked quotes make the median spread 0; the floor (0.01 % of the mid) keeps
    # ordinary spreads acceptable while absurd ones still fail.
    config = only("spread_outlier", min_window_samples=3, spread_outlier_k=50.0)
    v = Validator(config)
    run(v, [quote(100.0, 100.0, ts=i) for i in range(3)])
    assert v.counts["SPY"]["locked"] == 3
    assert v.check(quote(99.99, 100.01, ts=3)).accepted  # 0.02 <= 50 x 0.01
    bad = v.check(quote(99.0, 101.0, ts=4))
    assert bad.rule == "spread_outlier"
    assert bad.reason is not None and "floored at 0.0100" in bad.reason


def test_mid_outlier_against_trailing_median_and_mad() -> None:
    config = only("mid_outlier", mid_window=10, min_window_samples=5, mid_outlier_k=10.0)
    v = Validator(config)
    run(v, [mid(m, ts=i) for i, m in enumerate([100.0, 100.02, 99.98, 100.01, 99.99])])
    # median 100.00, MAD = (0 + .02 + .02 + .01 + .01) / 5 = 0.012: limit 0.12.
    out = v.check(mid(100.2, ts=10))
    assert out.rule == "mid_outlier"
    assert (
        out.reason
        == "mid 100.2000 is 16.7 MADs from rolling median 100.0000 (limit 10, MAD 0.0120)"
    )
    assert v.check(mid(100.1, ts=11)).accepted


def test_mid_outlier_with_constant_mids_uses_the_floor() -> None:
    config = only("mid_outlier", min_window_samples=5)  # floor 0.01 % of 100 = 0.01
    v = Validator(config)
    run(v, [mid(100.0, ts=i) for i in range(5)])
    assert v.check(mid(100.05, ts=5)).accepted  # 0.05 <= 10 x 0.01
    assert v.check(mid(100.3, ts=6)).rule == "mid_outlier"


def test_mid_outlier_without_floor_is_strict_but_recovers_by_reanchoring() -> None:
    config = only("mid_outlier", min_window_samples=5, mid_mad_floor_pct=0.0)
    v = Validator(config)
    run(v, [mid(100.0, ts=i) for i in range(5)])
    out = run(v, [mid(m, ts=10 + i) for i, m in enumerate([100.01, 100.02, 100.015, 100.012])])
    assert rules_of(out) == ["mid_outlier"] * 3 + [None]
    assert out[0].reason is not None and "inf MADs" in out[0].reason
    assert out[-1].reason == "re-anchored at 100.01 after 3 agreeing quotes"


def test_a_level_shift_does_not_lock_the_mid_rule_forever() -> None:
    # A 1 % move is fine for price_change but many MADs for a quiet trailing window.
    v = Validator(ValidationConfig(min_window_samples=5))
    run(v, [mid(100.0 + (i % 2) / 100, ts=i) for i in range(10)])
    moved = run(v, [mid(101.0 + (i % 3) / 100, ts=100 + i) for i in range(10)])
    assert rules_of(moved[:3]) == ["mid_outlier"] * 3
    assert moved[3].accepted and moved[3].reason is not None
    assert all(x is ACCEPTED for x in moved[4:])


# --- last-only feeds, switches, disabled, isolation -------------------------------------------


def test_last_only_quotes_skip_quote_rules_but_get_price_rules() -> None:
    v = Validator(ValidationConfig(min_window_samples=1, spread_window=1, mid_window=3))
    out = run(v, [last_only(100.0 + i / 10, ts=i) for i in range(5)])
    assert all(x is ACCEPTED for x in out)
    assert v.check(last_only(200.0, ts=10)).rule == "price_change"
    assert v.check(last_only(20000.0, ts=11)).rule == "price_range"
    assert v.check(last_only(100.5, ts=1)).rule == "out_of_order"


# One quote per rule that fails that rule only (after an accepted 100.00 quote at ts=100).
FAILS_ONLY = {
    "non_finite": quote(math.nan, 100.01, last=100.0, ts=101),
    "non_positive": quote(99.99, 100.01, bid_size=-1.0, ts=101),
    "crossed": quote(100.01, 99.99, ts=101),
    "price_range": quote(0.5, 0.7, ts=101),
    "future_timestamp": quote(99.99, 100.01, ts=100 + 10**8, recv=101),
    "out_of_order": quote(99.99, 100.01, ts=50),
    "spread_outlier": quote(95.0, 105.0, ts=101),
    "price_change": last_only(120.0, ts=101),  # no mid: mid_outlier cannot catch it
    "mid_outlier": quote(100.99, 101.01, ts=101),
}


@pytest.mark.parametrize("rule", sorted(FAILS_ONLY))
def test_each_rule_switch(rule: str) -> None:
    base = ValidationConfig(min_window_samples=1, price_ranges={})
    bad = FAILS_ONLY[rule]
    if rule == "price_range":
        base = replace(base, rules=RuleSwitches(price_change=False, mid_outlier=False))
    on = Validator(base)
    on.check(quote(99.99, 100.01, ts=100))
    assert on.check(bad).rule == rule
    switches = {f.name: getattr(base.rules, f.name) for f in dataclasses.fields(RuleSwitches)}
    off = Validator(replace(base, rules=RuleSwitches(**{**switches, rule: False})))
    off.check(quote(99.99, 100.01, ts=100))
    assert off.check(bad).accepted


def test_disabled_validator_passes_everything_through() -> None:
    v = Validator(ValidationConfig(enabled=False))
    q = quote(math.nan, -1.0, ts=5)
    out = run(v, [q, q, quote(None, None), last_only(45000.0, ts=1)])
    assert all(x is ACCEPTED for x in out)
    assert v.counts["SPY"]["accepted"] == 4
    assert v.counts["SPY"]["duplicate"] == 0


def test_symbols_keep_separate_state() -> None:
    v = Validator()
    quotes = []
    for i in range(30):
        quotes.append(mid(100.0 + (i % 3) / 100, ts=i, symbol="SPY"))
        quotes.append(mid(400.0 + (i % 3) / 100, ts=1000 - i, symbol="QQQ"))  # own clock
    out = run(v, quotes)
    assert [x.rule for x in out if x.rule] == ["out_of_order"] * 29  # only QQQ's own order
    assert v.counts["SPY"]["accepted"] == 30
    assert v.counts["QQQ"]["out_of_order"] == 29
    same = mid(100.0, ts=0, symbol="QQQ")  # equal to SPY's first quote, other symbol
    assert not v.check(same).duplicate


def test_reset_forgets_state() -> None:
    v = Validator()
    v.check(last_only(100.0, ts=1))
    assert v.check(last_only(150.0, ts=2)).rule == "price_change"
    v.reset("SPY")
    assert v.check(last_only(150.0, ts=3)).accepted
    v.reset()
    assert v.counts == {}


def test_rejections_are_logged_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    v = Validator(ValidationConfig(log_interval_seconds=10.0))
    with caplog.at_level(logging.WARNING, logger="robust_collector.validation"):
        run(v, [quote(100.02, 100.0, ts=i * 1_000_000) for i in range(5)])  # 5 crossed in 4 s
        v.check(quote(100.02, 100.0, ts=11_000_000))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("SPY rejected by crossed: crossed quote")
    assert messages[1].endswith("(4 more since the last warning)")


# --- timestamps in the wrong unit (issue 14, finding 2) -------------------------------------


def test_timestamps_in_the_wrong_unit_are_bad_timestamp_in_both_engines() -> None:
    from robust_collector.boundary import INT64_MAX
    from robust_collector.validation import quotes_frame, validate_frame

    now = T0
    unit_confusions = {
        "seconds read as us": now // 1_000_000,
        "ms read as us": now // 1_000,
        "ns read as us, clamped to int64": INT64_MAX,
        "finnhub t=1e13 s, clamped": INT64_MAX,
        "negative": -5,
    }
    quotes = [
        Quote(f"t:{i}", "SPY", i, ts, now, 99.99, 100.01, 1.0, 1.0, None, "x")
        for i, ts in enumerate(unit_confusions.values(), 1)
    ]
    good = Quote("t:good", "SPY", 99, now, now, 99.99, 100.01, 1.0, 1.0, None, "x")
    v = Validator()
    verdicts = [v.check(q) for q in [*quotes, good]]
    assert [x.rule for x in verdicts] == ["bad_timestamp"] * len(quotes) + [None]
    assert "outside 1980..2200" in (verdicts[0].reason or "")
    frame = validate_frame(quotes_frame([*quotes, good])).frame
    assert frame["reject_rule"].to_list() == ["bad_timestamp"] * len(quotes) + [None]
    assert frame["reject_reason"].to_list()[:-1] == [x.reason for x in verdicts[:-1]]


def test_small_epoch_values_stay_valid_when_the_receive_time_is_small_too() -> None:
    # synthetic and replayed data without a real clock: no unit confusion to see
    q = Quote("t:1", "SPY", 1, 101, 101, 99.99, 100.01, 1.0, 1.0, None, "x")
    assert Validator().check(q) is ACCEPTED
    switched_off = only("non_finite")
    far = Quote("t:2", "SPY", 2, 2**62, T0, 99.99, 100.01, 1.0, 1.0, None, "x")
    assert Validator(switched_off).check(far) is ACCEPTED
