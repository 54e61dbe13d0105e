"""The streaming trade engine: per-symbol state, one ``check(trade) -> Verdict`` per print.

The stateful rules live in ``TradeSymbolState`` (identity, out of order, the quote
band, price change with re-anchoring) and the polars engine (``trade_frame.py``)
calls the very same methods row by row, so the two engines cannot drift apart.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from typing import Any, Final

from robust_collector.boundary import TS_MAX_US, TS_MIN_US
from robust_collector.model import Trade
from robust_collector.validation.config import TradeValidationConfig
from robust_collector.validation.rules import has_nan, out_of_order_reason, price_change_reason
from robust_collector.validation.streaming import ACCEPTED, Verdict, warn_reject
from robust_collector.validation.trade_rules import (
    NOTICE_CORRECTIONS,
    TRADE_RULES,
    TradeParams,
    outside_band,
    price_range_for,
    quote_band_reason,
    trade_reanchor_note,
    trade_stateless_failure,
)

_INF: Final[float] = math.inf

TRADE_COUNTER_KEYS: Final[tuple[str, ...]] = ("accepted", "rejected", "reanchored", *TRADE_RULES)
"""Keys of every per-symbol trade counter dict (``TradeValidator.counts``)."""

DUPLICATE_ID: Final[Verdict] = Verdict(
    "duplicate", "duplicate", "same provider trade id as a recent trade"
)
DUPLICATE_NOTICE: Final[Verdict] = Verdict(
    "duplicate",
    "duplicate",
    "the same correction or cancel (same code and provider trade id) as a recent one",
)
DUPLICATE_RECORD: Final[Verdict] = Verdict(
    "duplicate",
    "duplicate",
    "same time, price, size, venue, conditions and correction as a trade accepted at that time",
)

TradeKey = tuple[Any, ...]
"""``(ts_us, price, size, venue, conditions, correction)``: a trade's record without ids."""

_NOTICES: Final[frozenset[int]] = NOTICE_CORRECTIONS


def notice_identity(key: TradeKey, provider_id: str | None) -> tuple[Any, ...]:
    """What makes a correction or cancel row the same as another: its code and provider
    id (without an id, its whole record); never equal to a trade's plain id."""
    return ("notice", key[5], provider_id) if provider_id else ("notice", key)


class QuoteBook:
    """The last ``size`` two-sided quotes of one symbol, ordered by time, for the quote band.

    ``at(ts)`` is the quote prevailing at ``ts``: the last noted one whose time is
    at or before ``ts`` (an as-of join, backward, ties to the last noted).
    """

    __slots__ = ("_asks", "_bids", "_size", "_ts")

    def __init__(self, size: int) -> None:
        self._size = size
        self._ts: list[int] = []
        self._bids: list[float] = []
        self._asks: list[float] = []

    def note(self, ts_us: int, bid: float, ask: float) -> None:
        ts = self._ts
        if not ts or ts_us >= ts[-1]:
            ts.append(ts_us)
            self._bids.append(bid)
            self._asks.append(ask)
        else:  # a quote arriving after a later one: keep the book in time order
            i = bisect_right(ts, ts_us)
            ts.insert(i, ts_us)
            self._bids.insert(i, bid)
            self._asks.insert(i, ask)
        if len(ts) > self._size:
            del ts[0], self._bids[0], self._asks[0]

    def at(self, ts_us: int) -> tuple[float, float] | None:
        ts = self._ts
        if ts and ts_us >= ts[-1]:
            return self._bids[-1], self._asks[-1]
        i = bisect_right(ts, ts_us) - 1
        return None if i < 0 else (self._bids[i], self._asks[i])


def usable_quote(bid: Any, ask: Any) -> bool:
    """Whether a quote can set a band: both sides finite, positive, not crossed."""
    try:
        return 0.0 < bid <= ask < _INF
    except TypeError:
        return False


class TradeSymbolState:
    """What the stateful trade rules remember about one symbol.

    Accepted trades move ``last_ts``, ``ref`` and the identity memory (the records
    accepted at ``seen_ts``, the recent provider ids); the re-anchoring run is the
    one thing rejected trades change. Bounded: one timestamp's records and at most
    ``duplicate_id_window`` ids.
    """

    __slots__ = (
        "counts",
        "hi",
        "id_order",
        "ids",
        "last_ts",
        "lo",
        "logged",
        "p",
        "ref",
        "run_hi",
        "run_lo",
        "run_n",
        "seen",
        "seen_ts",
    )

    def __init__(self, params: TradeParams, symbol: str) -> None:
        self.p = params
        self.lo, self.hi = price_range_for(params.config, symbol)
        self.last_ts: int | None = None
        self.ref: float | None = None
        self.seen_ts: int | None = None
        self.seen: set[TradeKey] = set()
        self.ids: set[Any] = set()
        self.id_order: deque[Any] = deque()
        self.run_n = 0
        self.run_lo = 0.0
        self.run_hi = 0.0
        self.counts: dict[str, int] = dict.fromkeys(TRADE_COUNTER_KEYS, 0)
        self.logged: dict[str, tuple[int, int]] = {}

    def duplicate(self, key: TradeKey, provider_id: str | None) -> Verdict | None:
        """The duplicate verdict (counted) when this trade was accepted before, else ``None``.

        A correction or cancel row (``NOTICE_CORRECTIONS``) is a duplicate only of the
        same notice: it names the original's id, and must not be taken for it."""
        if key[5] in _NOTICES:
            if not provider_id and has_nan(key):
                return None
            if notice_identity(key, provider_id) not in self.ids:
                return None
            verdict = DUPLICATE_NOTICE
        elif provider_id:
            if provider_id not in self.ids:
                return None
            verdict = DUPLICATE_ID
        elif key[0] == self.seen_ts and key in self.seen and not has_nan(key):
            verdict = DUPLICATE_RECORD
        else:
            return None
        self.counts["duplicate"] += 1
        return verdict

    def reject(self, rule: str, reason: str) -> Verdict:
        c = self.counts
        c[rule] += 1
        c["rejected"] += 1
        return Verdict("rejected", rule, reason)

    def judge(
        self,
        ts: int,
        price: float,
        key: TradeKey,
        provider_id: str | None,
        quote: tuple[float, float] | None,
    ) -> Verdict:
        """Apply the stateful rules (after ``duplicate`` and the stateless ones passed).

        ``quote`` is the prevailing ``(bid, ask)`` for ``outside_quote_band`` (``None``:
        no quote yet, or the rule is off). A correction or cancel row is a notice about
        an earlier trade, not a print: no sequence rule judges it and it moves nothing
        but the identity memory."""
        if key[5] in _NOTICES:
            return self._notice(key, provider_id)
        p = self.p
        last_ts = self.last_ts
        if p.out_of_order and last_ts is not None and ts < last_ts:
            return self.reject("out_of_order", out_of_order_reason(ts, last_ts))
        if quote is not None and outside_band(price, quote[0], quote[1], p.band_k):
            return self.reject(
                "outside_quote_band", quote_band_reason(price, quote[0], quote[1], p.band_k)
            )
        ref = self.ref
        if p.price_change and ref is not None and abs(price - ref) > ref * p.change_lim:
            n = self.run_n
            if n:
                lo = self.run_lo if self.run_lo < price else price
                hi = self.run_hi if self.run_hi > price else price
                if hi <= lo * p.agree_lim:
                    if n >= p.reanchor_after:
                        self.counts["reanchored"] += 1
                        self._accept(ts, price, key, provider_id)
                        return Verdict("accepted", None, trade_reanchor_note(price, n))
                    self.run_n = n + 1
                    self.run_lo = lo
                    self.run_hi = hi
                    return self.reject("price_change", price_change_reason(price, ref, p.limit_pct))
            self.run_n = 1
            self.run_lo = self.run_hi = price
            return self.reject("price_change", price_change_reason(price, ref, p.limit_pct))
        # Accepted: the common path, inlined (same as _accept).
        self.run_n = 0
        self.counts["accepted"] += 1
        self.last_ts = ts
        self.ref = price
        if ts == self.seen_ts:
            self.seen.add(key)
        else:
            self.seen_ts = ts
            self.seen = {key}
        if provider_id:
            self._remember(provider_id)
        return ACCEPTED

    def _notice(self, key: TradeKey, provider_id: str | None) -> Verdict:
        """Accept a correction or cancel row: remembered (so a re-sent one is a duplicate),
        but the last time, the price reference and the re-anchoring run stay as they were."""
        self.counts["accepted"] += 1
        if provider_id or not has_nan(key):
            self._remember(notice_identity(key, provider_id))
        return ACCEPTED

    def _accept(self, ts: int, price: float, key: TradeKey, provider_id: str | None) -> None:
        self.run_n = 0
        self.counts["accepted"] += 1
        self.last_ts = ts
        self.ref = price
        if ts == self.seen_ts:
            self.seen.add(key)
        else:
            self.seen_ts = ts
            self.seen = {key}
        if provider_id:
            self._remember(provider_id)

    def _remember(self, provider_id: Any) -> None:
        """Add an accepted trade's id (or a notice's identity) to the bounded recent-id
        memory (oldest out first)."""
        ids = self.ids
        if provider_id not in ids:
            order = self.id_order
            if len(order) >= self.p.ids:
                ids.discard(order.popleft())
            order.append(provider_id)
            ids.add(provider_id)


def new_trade_state_table(
    config: TradeValidationConfig,
) -> tuple[TradeParams, dict[str, TradeSymbolState]]:
    """Compiled parameters and an empty symbol -> state table (used by both engines)."""
    return TradeParams(config), {}


def summarize_trades(states: dict[str, TradeSymbolState]) -> dict[str, Any]:
    """``{"total": counters, "symbols": {symbol: counters}}`` from the state table."""
    symbols = {s: dict(st.counts) for s, st in states.items()}
    total = dict.fromkeys(TRADE_COUNTER_KEYS, 0)
    for counts in symbols.values():
        for k, v in counts.items():
            total[k] += v
    return {"total": total, "symbols": symbols}


class TradeValidator:
    """Streaming trade validation with per-symbol state: ``check(trade) -> Verdict``.

    Rules run in ``TRADE_RULES`` order; the first failing rule wins. Feed it the
    accepted quotes with ``note_quote`` for ``outside_quote_band``. With
    ``config.enabled`` false every trade is accepted (duplicates included). Not
    thread-safe: one validator belongs to one collector loop.
    """

    def __init__(self, config: TradeValidationConfig | None = None) -> None:
        self.config = config if config is not None else TradeValidationConfig()
        self._params, self._states = new_trade_state_table(self.config)
        self._books: dict[str, QuoteBook] = {}
        self._enabled = self.config.enabled
        self._dup = self.config.rules.duplicate
        self._band = self.config.rules.outside_quote_band
        self._plain = not self._params.optional
        self._tol_us = self._params.tol_us
        self._log_every_us = round(self.config.log_interval_seconds * 1_000_000)

    def _state(self, symbol: str) -> TradeSymbolState:
        st = self._states.get(symbol)
        if st is None:
            st = self._states[symbol] = TradeSymbolState(self._params, symbol)
        return st

    def note_quote(self, symbol: str, bid: float | None, ask: float | None, ts_us: int) -> bool:
        """Remember an accepted quote for the band rule; False when it cannot set a band
        (a side missing, not finite or not positive, or crossed) or the rule is off."""
        if not (self._band and self._enabled and usable_quote(bid, ask)):
            return False
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = QuoteBook(self._params.quote_history)
        book.note(ts_us, bid, ask)  # type: ignore[arg-type]
        return True

    def check(self, trade: Trade) -> Verdict:
        """Judge one trade and update the symbol's state if it is accepted.

        A trade whose fields are not numbers (a custom source's bug) is rejected as
        ``bad_price`` rather than raising: every trade gets a verdict."""
        try:
            st = self._states.get(trade.symbol)
            if st is None:
                st = self._state(trade.symbol)
            if not self._enabled:
                st.counts["accepted"] += 1
                return ACCEPTED
            price = trade.price
            size = trade.size
            ts = trade.ts_us
            pid = trade.provider_id
            corr = trade.correction
            key = (ts, price, size, trade.venue, trade.conditions, corr)
            if self._dup and (pid or ts == st.seen_ts or corr in _NOTICES):
                dup = st.duplicate(key, pid)
                if dup is not None:
                    return dup
            # The common case, decided without trade_stateless_failure: a trade that passes
            # every basic rule whichever are switched on, with no optional rule on.
            if not (
                self._plain
                and price is not None
                and 0.0 < price < _INF
                and (size is None or 0.0 < size < _INF)
                and st.lo <= price <= st.hi
                and ts - trade.recv_us <= self._tol_us
                and TS_MIN_US <= ts <= TS_MAX_US
            ):
                fail = trade_stateless_failure(
                    self._params,
                    price,
                    size,
                    ts,
                    trade.recv_us,
                    trade.venue,
                    trade.conditions,
                    trade.correction,
                    st.lo,
                    st.hi,
                )
                if fail is not None:
                    verdict = st.reject(*fail)
                    self._log(st, trade, verdict)
                    return verdict
            quote = None
            if self._band:
                book = self._books.get(trade.symbol)
                if book is not None:
                    quote = book.at(ts)
            verdict = st.judge(ts, price, key, pid, quote)  # type: ignore[arg-type]
            if verdict is ACCEPTED:
                return verdict
            if verdict.status == "rejected":
                self._log(st, trade, verdict)
            return verdict
        except (TypeError, ValueError, OverflowError) as exc:
            st = self._state(str(trade.symbol))
            return st.reject("bad_price", f"not a valid trade: {type(exc).__name__}: {exc}"[:200])

    def _log(self, st: TradeSymbolState, trade: Trade, verdict: Verdict) -> None:
        """One warning per symbol and rule per ``log_interval_seconds`` (trade receive time)."""
        what = f"{trade.symbol} trade"
        warn_reject(st.logged, what, verdict, trade.recv_us, self._log_every_us)

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Per-symbol counters: ``{symbol: {key: n}}`` with keys ``TRADE_COUNTER_KEYS``."""
        return {s: dict(st.counts) for s, st in self._states.items()}

    def stats(self) -> dict[str, Any]:
        """``{"total": {key: n}, "symbols": {symbol: {key: n}}}`` (keys: ``TRADE_COUNTER_KEYS``)."""
        return summarize_trades(self._states)

    def reset(self, symbol: str | None = None) -> None:
        """Forget one symbol's state, quotes and counts (or every symbol's)."""
        if symbol is None:
            self._states.clear()
            self._books.clear()
        else:
            self._states.pop(symbol, None)
            self._books.pop(symbol, None)
