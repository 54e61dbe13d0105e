"""The one definition of the trade rules: ids, order, reason texts and the stateless checks.

Both trade engines (the streaming ``TradeValidator`` and the polars
``validate_trade_frame``) take rule ids, order and reasons from here. Rules run
in ``TRADE_RULES`` order and the first failing rule wins; the stateless ones
(``bad_timestamp`` .. ``abnormal_condition``) look at one trade alone.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import zoneinfo
from typing import Final

from robust_collector.boundary import TS_MAX_US
from robust_collector.validation.config import TradeValidationConfig
from robust_collector.validation.rules import (
    LIMIT_SLACK,
    RuleInfo,
    bad_timestamp,
    bad_timestamp_reason,
    fmt_us,
)

TRADE_RULE_INFO: Final[tuple[RuleInfo, ...]] = (
    RuleInfo(
        "duplicate",
        "a trade seen before: the same provider trade id as a recent accepted trade of the "
        "symbol, or (without an id) the same time, price, size, venue, conditions and "
        "correction as a trade accepted at that time; dropped and counted, not a reject",
        "identity (two trades in one microsecond at one price are two trades)",
        True,
    ),
    RuleInfo(
        "bad_timestamp",
        "exchange time negative, after 2200, or before 1980 while the receive time is a real "
        "clock: a timestamp in the wrong unit or garbage",
        "input boundary",
        False,
    ),
    RuleInfo(
        "bad_price", "no price, or a NaN, infinite, zero or negative price", "BNHLS P2", False
    ),
    RuleInfo("bad_size", "a NaN, infinite, zero or negative size", "data hygiene", False),
    RuleInfo(
        "price_range",
        "price outside [min_price, max_price] (per-symbol overrides in price_ranges)",
        "seed",
        False,
    ),
    RuleInfo(
        "future_timestamp",
        "exchange time more than future_tolerance_seconds after the receive time",
        "clock sanity",
        False,
    ),
    RuleInfo(
        "outside_session",
        "exchange time outside session.open..session.close (local time, both ends kept)",
        "BNHLS P1/T1 (highfrequency exchangeHoursOnly)",
        False,
    ),
    RuleInfo(
        "exchange",
        "venue not in exchanges (only when that list is not empty)",
        "BNHLS P3 (highfrequency selectExchange)",
        False,
    ),
    RuleInfo("correction", "correction indicator present and not 0", "BNHLS T2 (TAQ CORR)", False),
    RuleInfo(
        "abnormal_condition",
        "sale conditions, white space removed, not in valid_conditions",
        "BNHLS T3 (highfrequency tradesCondition)",
        False,
    ),
    RuleInfo(
        "out_of_order",
        "exchange time older than the last accepted trade of the symbol",
        "feed sanity (TAQ files are time-sorted)",
        True,
    ),
    RuleInfo(
        "outside_quote_band",
        "price below bid - k x spread or above ask + k x spread of the quote prevailing at "
        "the trade's time (no prevailing quote: not judged)",
        "BNHLS T4 (highfrequency rmTradeOutliersUsingQuotes, lagQuotes = 0)",
        True,
    ),
    RuleInfo(
        "price_change",
        "price more than max_price_change_pct away from the last accepted trade price "
        "(re-anchors after reanchor_after agreeing rejected trades)",
        "seed",
        True,
    ),
)

TRADE_RULES: Final[tuple[str, ...]] = tuple(r.id for r in TRADE_RULE_INFO)
"""Trade rule ids in evaluation order: the first failing rule names the verdict."""

ASCII_SPACE: Final[str] = " \t\n\r\f\v"
"""What "white space removed" removes from sale conditions (both engines alike)."""
_NO_SPACE: Final[dict[int, None]] = dict.fromkeys(map(ord, ASCII_SPACE))

# -- corrections and cancels (stream notices about an earlier trade) ------------------------

TRADE_CANCELLED: Final[int] = 10
"""``correction`` of a cancel row: the trade whose ``provider_id`` it carries is cancelled
(TAQ ``CORR`` 10, a cancel record; alpaca ``T: x`` with action ``C``)."""
TRADE_ERROR: Final[int] = 11
"""``correction`` of an error row: the trade it names was an error (TAQ ``CORR`` 11; alpaca
``T: x`` with action ``E``)."""
TRADE_CORRECTED: Final[int] = 12
"""``correction`` of a correction row: the corrected trade (its values and ``provider_id``
are the corrected ones), which replaces the original named in its conditions (TAQ ``CORR``
12, a correction record; alpaca ``T: c``)."""
NOTICE_CORRECTIONS: Final[frozenset[int]] = frozenset(
    {TRADE_CANCELLED, TRADE_ERROR, TRADE_CORRECTED}
)
"""Correction codes of rows that are notices about an earlier trade, not new prints."""
CORRECTS: Final[str] = "corrects:"
"""The last token of a correction row's conditions: ``corrects:<original provider id>``."""
CORRECTS_PATTERN: Final[str] = r"(?:^|[ \t\n\r\f\v])corrects:([^ \t\n\r\f\v]*)$"
"""The ``corrects:<id>`` token as a polars pattern (whose ``$`` is the end of the text)."""
_CORRECTS_RE: Final[re.Pattern[str]] = re.compile(CORRECTS_PATTERN.removesuffix("$") + r"\Z")
"""The same token for Python's ``re`` (where the end of the text is ``\\Z``)."""


def correction_conditions(codes: str | None, original_id: str, limit: int = 128) -> str:
    """A correction row's conditions: the corrected codes, then ``corrects:<original id>``
    (the codes are shortened, never the id, to keep within ``limit`` characters)."""
    mark = CORRECTS + original_id
    if not codes:
        return mark
    room = max(0, limit - len(mark) - 1)
    return f"{codes[:room]} {mark}" if room else mark


def corrected_original(conditions: str | None) -> str | None:
    """The original provider trade id a correction row's conditions name, else ``None``."""
    if not conditions:
        return None
    m = _CORRECTS_RE.search(conditions)
    if m is None:
        return None
    return m.group(1) or None


def normalize_conditions(conditions: str | None) -> str:
    """Sale conditions with white space (and a correction's ``corrects:<id>`` token)
    removed; ``None`` is ``""`` (highfrequency's rule)."""
    if conditions is None:
        return ""
    if CORRECTS in conditions:
        conditions = _CORRECTS_RE.sub("", conditions, count=1)
    return conditions.translate(_NO_SPACE)


def _time_us(text: str) -> int:
    t = dt.time.fromisoformat(text)
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000


_EPOCH: Final[dt.datetime] = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US: Final[dt.timedelta] = dt.timedelta(microseconds=1)


class SessionClock:
    """Whether an exchange time is inside the session, in its local time (ends included).

    Works on local time of day, like polars' ``convert_time_zone(...).dt.time()``
    in the frame engine. The UTC bounds of the last local day whose offset is
    constant are cached, so most trades cost two comparisons; a DST-change day
    is converted trade by trade.
    """

    __slots__ = ("_close", "_day_hi", "_day_lo", "_open", "close_text", "open_text", "tz")

    def __init__(self, timezone: str, open_: str, close: str) -> None:
        self.tz = zoneinfo.ZoneInfo(timezone)
        self.open_text, self.close_text = open_, close
        self._open = _time_us(open_)
        self._close = _time_us(close)
        self._day_lo = 0  # [lo, hi): UTC span of the cached local day (empty: none)
        self._day_hi = 0

    def local(self, ts_us: int) -> dt.datetime:
        return (_EPOCH + ts_us * _US).astimezone(self.tz)

    def inside(self, ts_us: int) -> bool:
        lo = self._day_lo
        if lo <= ts_us < self._day_hi:
            return self._open <= ts_us - lo <= self._close
        if not 0 <= ts_us <= TS_MAX_US:
            return False  # no local time worth the name (bad_timestamp's business)
        local = self.local(ts_us)
        midnight = dt.datetime.combine(local.date(), dt.time(0), self.tz)
        nxt = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(0), self.tz)
        day_lo = (midnight - _EPOCH) // _US
        day_hi = (nxt - _EPOCH) // _US
        if (
            self.local(day_lo).utcoffset()
            == self.local(day_hi - 1).utcoffset()
            == (local.utcoffset())
        ):
            self._day_lo, self._day_hi = day_lo, day_hi
            return self._open <= ts_us - day_lo <= self._close
        tod = ((local.hour * 60 + local.minute) * 60 + local.second) * 1_000_000 + local.microsecond
        return self._open <= tod <= self._close

    def reason(self, ts_us: int) -> str:
        try:
            when = self.local(ts_us).isoformat(timespec="microseconds")
        except (OverflowError, OSError, ValueError):
            when = f"{ts_us} us"
        return (
            f"exchange time {when} is outside the session "
            f"{self.open_text}-{self.close_text} {self.tz.key}"
        )


class TradeParams:
    """The config turned into the plain values both engines compare against."""

    __slots__ = (
        "agree_lim",
        "band_k",
        "change_lim",
        "config",
        "exchanges",
        "exchanges_text",
        "ids",
        "limit_pct",
        "optional",
        "out_of_order",
        "price_change",
        "quote_band",
        "quote_history",
        "reanchor_after",
        "rules",
        "session",
        "tol_us",
        "valid_conditions",
    )

    def __init__(self, config: TradeValidationConfig) -> None:
        r = config.rules
        self.config = config
        self.rules = r
        self.tol_us = round(config.future_tolerance_seconds * 1_000_000)
        self.exchanges: frozenset[str] | None = (
            frozenset(config.exchanges) if config.exchanges else None
        )
        self.exchanges_text = ", ".join(sorted(config.exchanges))
        conds = {normalize_conditions(c) for c in config.valid_conditions}
        if config.allow_no_conditions:
            conds.add("")
        else:
            conds.discard("")
        self.valid_conditions = frozenset(conds)
        s = config.session
        self.session = SessionClock(s.timezone, s.open, s.close)
        self.optional = (
            r.outside_session or r.correction or r.abnormal_condition or bool(config.exchanges)
        )
        self.out_of_order = r.out_of_order
        self.price_change = r.price_change
        self.quote_band = r.outside_quote_band
        self.band_k = config.quote_band_spreads
        self.quote_history = config.quote_history
        self.ids = config.duplicate_id_window
        self.limit_pct = config.max_price_change_pct
        self.change_lim = config.max_price_change_pct / 100.0 * (1.0 + LIMIT_SLACK)
        self.agree_lim = 1.0 + config.reanchor_tolerance_pct / 100.0 * (1.0 + LIMIT_SLACK)
        self.reanchor_after = config.reanchor_after


def price_range_for(config: TradeValidationConfig, symbol: str) -> tuple[float, float]:
    """The ``(min_price, max_price)`` that applies to ``symbol``."""
    override = config.price_ranges.get(symbol)
    if override is not None:
        return override.min_price, override.max_price
    return config.min_price, config.max_price


def trade_stateless_failure(
    p: TradeParams,
    price: float | None,
    size: float | None,
    ts_us: int,
    recv_us: int,
    venue: str | None,
    conditions: str | None,
    correction: int | None,
    lo: float,
    hi: float,
) -> tuple[str, str] | None:
    """The first failing stateless trade rule as ``(rule, reason)``, or ``None``.

    Comparisons with NaN are false (plain Python); the polars twin in
    ``trade_frame.py`` guards its comparisons to mean the same.
    """
    rules = p.rules
    if rules.bad_timestamp and bad_timestamp(ts_us, recv_us):
        return "bad_timestamp", bad_timestamp_reason(ts_us)
    if price is None:
        return "bad_price", "no price"  # nothing else could judge it: even with the switch off
    if rules.bad_price:
        if not math.isfinite(price):
            return "bad_price", f"price {price} is not finite"
        if price <= 0:
            return "bad_price", f"price {price:g} is not positive"
    if rules.bad_size and size is not None:
        if not math.isfinite(size):
            return "bad_size", f"size {size} is not finite"
        if size <= 0:
            return "bad_size", f"size {size:g} is not positive"
    if rules.price_range and not (lo <= price <= hi):
        return "price_range", f"price {price:.2f} out of range [{lo:.2f}, {hi:.2f}]"
    if rules.future_timestamp and ts_us - recv_us > p.tol_us:
        return "future_timestamp", (
            f"exchange time {fmt_us(ts_us)} is {(ts_us - recv_us) / 1e6:.3f} s after "
            f"receive time {fmt_us(recv_us)} (tolerance {p.config.future_tolerance_seconds:g} s)"
        )
    if not p.optional:
        return None
    if rules.outside_session and not p.session.inside(ts_us):
        return "outside_session", p.session.reason(ts_us)
    if p.exchanges is not None and venue not in p.exchanges:
        return "exchange", f"venue {venue!r} is not one of the kept exchanges ({p.exchanges_text})"
    if rules.correction and correction is not None and correction != 0:
        return "correction", f"correction indicator {correction}: a corrected or cancelled trade"
    if rules.abnormal_condition and normalize_conditions(conditions) not in p.valid_conditions:
        return "abnormal_condition", f"sale conditions {conditions!r} are not a regular trade's"
    return None


def band_limits(bid: float, ask: float, k: float) -> tuple[float, float]:
    """``(bid - k x spread, ask + k x spread)``: the prices ``outside_quote_band`` keeps."""
    spread = ask - bid
    return bid - k * spread, ask + k * spread


def outside_band(price: float, bid: float, ask: float, k: float) -> bool:
    """Whether ``price`` is outside the band; its edges are kept despite binary rounding
    (100.02 + (100.02 - 100.00) is 100.03999999999999), with ``LIMIT_SLACK``."""
    lo, hi = band_limits(bid, ask, k)
    return not (lo - abs(lo) * LIMIT_SLACK <= price <= hi + abs(hi) * LIMIT_SLACK)


def quote_band_reason(price: float, bid: float, ask: float, k: float) -> str:
    lo, hi = band_limits(bid, ask, k)
    return (
        f"price {price:.4f} outside the band [{lo:.4f}, {hi:.4f}] of the prevailing quote "
        f"{bid:.4f} x {ask:.4f} ({k:g} spread)"
    )


def trade_reanchor_note(price: float, count: int) -> str:
    return f"re-anchored at {price:.2f} after {count} agreeing trades"
