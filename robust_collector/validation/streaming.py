"""The streaming engine: per-symbol state, one ``check(quote) -> Verdict`` per tick.

The stateful half of the rules lives in ``SymbolState.judge`` and is shared with
the polars engine (``frame.py``), which calls the very same method row by row, so
the two engines cannot drift apart on the rules that need history.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final, Literal

from robust_collector.boundary import TS_MAX_US, TS_MIN_US
from robust_collector.model import Quote
from robust_collector.validation.config import ValidationConfig
from robust_collector.validation.rules import (
    LIMIT_SLACK,
    RULES,
    future_tolerance_us,
    has_nan,
    mid_outlier_reason,
    out_of_order_reason,
    price_change_reason,
    price_range_for,
    reanchor_note,
    spread_reason,
    stateless_failure,
)


def warn_reject(
    logged: dict[str, tuple[int | None, int]],
    what: str,
    verdict: Verdict,
    at_us: int,
    every_us: float,
) -> None:
    """Log a reject at most once per rule per ``every_us`` (of receive time), counting the
    ones held back; ``logged`` is the symbol's ``rule -> (last logged, suppressed)``."""
    rule = verdict.rule or ""
    last_us, suppressed = logged.get(rule, (None, 0))
    if last_us is not None and at_us - last_us < every_us:
        logged[rule] = (last_us, suppressed + 1)
        return
    more = f" ({suppressed} more since the last warning)" if suppressed else ""
    log.warning("%s rejected by %s: %s%s", what, rule, verdict.reason, more)
    logged[rule] = (at_us, 0)


log = logging.getLogger("robust_collector.validation")

_INF: Final[float] = math.inf

Status = Literal["accepted", "rejected", "duplicate"]

COUNTER_KEYS: Final[tuple[str, ...]] = ("accepted", "rejected", "locked", "reanchored", *RULES)
"""Keys of every per-symbol counter dict (``Validator.counts``); ``duplicate`` is a rule id."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision on one quote.

    ``status`` is ``"accepted"``, ``"rejected"`` or ``"duplicate"``; ``rule`` is the
    id of the rule that decided (``None`` when accepted, ``"duplicate"`` for a
    duplicate); ``reason`` is human text (the re-anchor note on an accepted quote).
    """

    status: Status
    rule: str | None = None
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"

    @property
    def rejected(self) -> bool:
        return self.status == "rejected"

    @property
    def duplicate(self) -> bool:
        return self.status == "duplicate"


ACCEPTED: Final[Verdict] = Verdict("accepted")
"""The shared verdict of every plainly accepted quote (no allocation on the hot path)."""

DUPLICATE: Final[Verdict] = Verdict("duplicate", "duplicate", "same quote as the last accepted one")


def _mad_of(sl: list[float], med: float) -> float:
    """Mean absolute deviation of the sorted ``sl`` from its median ``med``."""
    n = len(sl)
    h = n >> 1
    # sum |x - med| = (sum of the upper half) - (sum of the lower half) + med * (2h - n)
    return (sum(sl) - 2.0 * sum(sl[:h]) + med * (2 * h - n)) / n


class RollingWindow:
    """The last ``size`` values in arrival order plus a sorted copy, for a cheap median.

    ``push`` is O(log n) search plus a small memmove; ``median`` is refreshed on
    each push once the window holds ``active`` values (then ``ready``), so a check
    reads an attribute. ``mad`` (with ``with_mad``: the mean absolute deviation
    from the median) is computed from the sorted copy when first read after a
    push: the rules need it only for a mid far from the median, so most pushes
    never pay its O(n) sum. The value is the one an eager refresh would store.
    """

    __slots__ = ("_fifo", "_mad", "_size", "_sorted", "active", "median", "ready", "with_mad")

    def __init__(self, size: int, active: int, with_mad: bool = False) -> None:
        self._size = size
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []
        self.active = min(active, size)
        self.with_mad = with_mad
        self.ready = False
        self.median = 0.0
        self._mad: float | None = 0.0  # None: stale, recomputed on read

    def __len__(self) -> int:
        return len(self._fifo)

    @property
    def mad(self) -> float:
        """Mean absolute deviation from ``median`` (0.0 until ``ready`` or without ``with_mad``)."""
        m = self._mad
        if m is None:
            m = self._mad = _mad_of(self._sorted, self.median)
        return m

    def clear(self) -> None:
        self._fifo.clear()
        self._sorted.clear()
        self.ready = False
        self.median = 0.0
        self._mad = 0.0

    def push(self, x: float) -> None:
        fifo = self._fifo
        sl = self._sorted
        fifo.append(x)
        insort(sl, x)
        n = len(sl)
        if n > self._size:
            old = fifo.popleft()
            i = bisect_left(sl, old)
            if i < n and sl[i] == old:
                del sl[i]
            else:  # only reachable with NaN in the window (non_finite switched off)
                sl.remove(old)
            n -= 1
        elif n < self.active:
            return
        self.ready = True
        h = n >> 1
        self.median = sl[h] if n & 1 else (sl[h - 1] + sl[h]) / 2.0
        if self.with_mad:
            self._mad = None


class LazyWindow:
    """A rolling window whose median is worked out only when it is read.

    Same values as ``RollingWindow`` (``ready``, ``median``), for a window whose
    median is rarely needed (the spread rule reads it only for a spread above
    ``k`` times its floor): ``push`` only appends to the arrival-order deque and
    remembers what left it; reading ``median`` brings the sorted copy up to date,
    by insorting the pending values (few of them) or by re-sorting the window
    (many), whichever is cheaper. Both give the list ``RollingWindow`` keeps: the
    window stably sorted by value (ties in arrival order). A NaN breaks that
    order, so once one is pushed the window falls back to ``RollingWindow``'s
    eager update, step for step (reachable only with ``non_finite`` switched off).
    """

    __slots__ = (
        "_eager",
        "_fifo",
        "_median",
        "_out",
        "_pending",
        "_size",
        "_sorted",
        "active",
        "ready",
    )

    def __init__(self, size: int, active: int) -> None:
        self._size = size
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []
        self._out: list[float] | None = []  # values that left since the last sync (None: many)
        self._pending = 0  # values pushed since the last sync
        self._eager: RollingWindow | None = None
        self.active = min(active, size)
        self.ready = False
        self._median = 0.0

    def __len__(self) -> int:
        return len(self._fifo)

    @property
    def median(self) -> float:
        if self._eager is not None:
            return self._eager.median
        if self._pending:
            self._sync()
        return self._median

    def clear(self) -> None:
        self._fifo.clear()
        self._sorted.clear()
        self._out = []
        self._pending = 0
        self._eager = None
        self.ready = False
        self._median = 0.0

    def push(self, x: float) -> None:
        eager = self._eager
        if eager is None and x != x:  # NaN: switch to the eager window, from the same state
            eager = self._to_eager()
        if eager is not None:
            eager.push(x)
            self.ready = eager.ready
            return
        fifo = self._fifo
        fifo.append(x)
        self._pending += 1
        if len(fifo) > self._size:
            old = fifo.popleft()
            out = self._out
            if out is not None:
                if len(out) < 64:
                    out.append(old)
                else:
                    self._out = None
        elif not self.ready and len(fifo) >= self.active:
            self.ready = True

    def _sync(self) -> None:
        fifo = self._fifo
        n = len(fifo)
        out = self._out
        if out is None or 4 * self._pending > n:
            sl = self._sorted = sorted(fifo)
        else:
            sl = self._sorted
            for x in islice(fifo, n - self._pending, None):
                insort(sl, x)
            for old in out:  # the oldest first, each the first of its equal run
                del sl[bisect_left(sl, old)]
        self._out = []
        self._pending = 0
        if self.ready:
            h = n >> 1
            self._median = sl[h] if n & 1 else (sl[h - 1] + sl[h]) / 2.0

    def _to_eager(self) -> RollingWindow:
        if self._pending:
            self._sync()
        w = RollingWindow(self._size, self.active)
        w._fifo = self._fifo
        w._sorted = self._sorted
        w.ready = self.ready
        w.median = self._median
        self._eager = w
        return w


class _Params:
    """The config turned into the plain numbers the hot path compares against."""

    __slots__ = (
        "agree_lim",
        "change_lim",
        "config",
        "limit_pct",
        "mad_floor",
        "mid_active",
        "mid_k",
        "mid_outlier",
        "mid_window",
        "out_of_order",
        "price_change",
        "reanchor_after",
        "spread_active",
        "spread_floor",
        "spread_k",
        "spread_outlier",
        "spread_window",
    )

    def __init__(self, config: ValidationConfig) -> None:
        r = config.rules
        self.config = config
        self.out_of_order = r.out_of_order
        self.spread_outlier = r.spread_outlier
        self.price_change = r.price_change
        self.mid_outlier = r.mid_outlier
        self.limit_pct = config.max_price_change_pct
        self.change_lim = config.max_price_change_pct / 100.0 * (1.0 + LIMIT_SLACK)
        self.agree_lim = 1.0 + config.reanchor_tolerance_pct / 100.0 * (1.0 + LIMIT_SLACK)
        self.reanchor_after = config.reanchor_after
        self.spread_k = config.spread_outlier_k
        self.spread_floor = config.spread_floor_pct / 100.0
        self.spread_window = config.spread_window
        self.spread_active = min(config.min_window_samples, config.spread_window)
        self.mid_k = config.mid_outlier_k
        self.mad_floor = config.mid_mad_floor_pct / 100.0
        self.mid_window = config.mid_window
        self.mid_active = min(config.min_window_samples, config.mid_window)


class SymbolState:
    """What the stateful rules remember about one symbol.

    Only accepted quotes move ``last_key``, ``last_ts``, ``ref`` and the windows;
    the re-anchoring run (``run_n``, ``run_lo``, ``run_hi``, ``run_last``:
    consecutive distinct quotes rejected by ``price_change`` or ``mid_outlier``
    that agree with each other) is the one thing rejected quotes change.
    """

    __slots__ = (
        "counts",
        "hi",
        "last_key",
        "last_ts",
        "lo",
        "logged",
        "mids",
        "p",
        "ref",
        "run_hi",
        "run_last",
        "run_lo",
        "run_n",
        "spreads",
    )

    def __init__(self, params: _Params, symbol: str) -> None:
        self.p = params
        self.lo, self.hi = price_range_for(params.config, symbol)
        self.last_key: tuple[Any, ...] | None = None
        self.last_ts: int | None = None
        self.ref: float | None = None
        self.spreads = LazyWindow(params.spread_window, params.spread_active)
        self.mids = RollingWindow(params.mid_window, params.mid_active, with_mad=True)
        self.run_n = 0
        self.run_lo = 0.0
        self.run_hi = 0.0
        self.run_last: tuple[Any, ...] | None = None
        self.counts: dict[str, int] = dict.fromkeys(COUNTER_KEYS, 0)
        self.logged: dict[str, tuple[int, int]] = {}

    def reject(self, rule: str, reason: str) -> Verdict:
        c = self.counts
        c[rule] += 1
        c["rejected"] += 1
        return Verdict("rejected", rule, reason)

    def judge(
        self,
        ts: int,
        price: float,
        mid: float | None,
        spread: float | None,
        key: tuple[Any, ...],
    ) -> Verdict:
        """Apply the stateful rules (after ``duplicate`` and the stateless ones passed).

        ``mid`` and ``spread`` are ``None`` for a quote without a bid/ask pair,
        which then skips ``spread_outlier`` and ``mid_outlier``.
        """
        p = self.p
        last_ts = self.last_ts
        if p.out_of_order and last_ts is not None and ts < last_ts:
            return self.reject("out_of_order", out_of_order_reason(ts, last_ts))
        if spread is not None and p.spread_outlier:
            sw = self.spreads
            if sw.ready:
                floor = p.spread_floor * mid  # type: ignore[operator]
                # k * max(median, floor) >= k * floor: a spread within that needs no median
                if not spread <= p.spread_k * floor:
                    med = sw.median
                    if spread > p.spread_k * (med if med > floor else floor):
                        return self.reject(
                            "spread_outlier", spread_reason(spread, p.spread_k, med, floor)
                        )
        failed: str | None = None
        ref = self.ref
        if p.price_change and ref is not None and abs(price - ref) > ref * p.change_lim:
            failed = "price_change"
        elif mid is not None and p.mid_outlier:
            mw = self.mids
            if mw.ready:
                mmed = mw.median
                mfloor = p.mad_floor * mmed
                dev = abs(mid - mmed)
                # the MAD used is at least the floor: a mid within k floors needs no MAD
                if not dev <= p.mid_k * mfloor:
                    mad = mw.mad
                    if mad < mfloor:
                        mad = mfloor
                    if dev > p.mid_k * mad:
                        failed = "mid_outlier"
        if failed is not None:
            n = self.run_n
            values = (key[1], key[2], key[5])  # bid, ask, last
            if n:
                if values == self.run_last and not has_nan(values):
                    # A re-sent quote (a venue repeating its stale quote) confirms
                    # nothing: it neither extends nor breaks the run.
                    return self._level_reject(failed, price, mid, ref)
                lo = self.run_lo if self.run_lo < price else price
                hi = self.run_hi if self.run_hi > price else price
                if hi <= lo * p.agree_lim:
                    if n >= p.reanchor_after:
                        return self._reanchor(ts, price, mid, spread, key, n)
                    self.run_n = n + 1
                    self.run_lo = lo
                    self.run_hi = hi
                    self.run_last = values
                    return self._level_reject(failed, price, mid, ref)
            self.run_n = 1
            self.run_lo = self.run_hi = price
            self.run_last = values
            return self._level_reject(failed, price, mid, ref)
        # Accepted: the common path, inlined (same as _accept).
        self.run_n = 0
        c = self.counts
        c["accepted"] += 1
        self.last_ts = ts
        self.ref = price
        self.last_key = key
        if spread is not None:
            if spread == 0.0:
                c["locked"] += 1
            if p.spread_outlier:
                self.spreads.push(spread)
            if p.mid_outlier:
                self.mids.push(mid)  # type: ignore[arg-type]
        return ACCEPTED

    def _level_reject(
        self, rule: str, price: float, mid: float | None, ref: float | None
    ) -> Verdict:
        p = self.p
        if rule == "price_change":
            return self.reject(rule, price_change_reason(price, ref, p.limit_pct))  # type: ignore[arg-type]
        mw = self.mids
        mad = max(mw.mad, p.mad_floor * mw.median)
        return self.reject(rule, mid_outlier_reason(mid, mw.median, mad, p.mid_k))  # type: ignore[arg-type]

    def _reanchor(
        self,
        ts: int,
        price: float,
        mid: float | None,
        spread: float | None,
        key: tuple[Any, ...],
        n: int,
    ) -> Verdict:
        # The old level is history: the mid window restarts at the new level.
        self.mids.clear()
        self.run_n = 0
        self.counts["reanchored"] += 1
        self._accept(ts, price, mid, spread, key)
        return Verdict("accepted", None, reanchor_note(price, n))

    def _accept(
        self,
        ts: int,
        price: float,
        mid: float | None,
        spread: float | None,
        key: tuple[Any, ...],
    ) -> None:
        c = self.counts
        c["accepted"] += 1
        self.last_ts = ts
        self.ref = price
        self.last_key = key
        if spread is not None:
            if spread == 0.0:
                c["locked"] += 1
            p = self.p
            if p.spread_outlier:
                self.spreads.push(spread)
            if p.mid_outlier:
                self.mids.push(mid)  # type: ignore[arg-type]


def new_state_table(config: ValidationConfig) -> tuple[_Params, dict[str, SymbolState]]:
    """Compiled parameters and an empty symbol -> state table (used by both engines)."""
    return _Params(config), {}


def summarize(states: dict[str, SymbolState]) -> dict[str, Any]:
    """``{"total": counters, "symbols": {symbol: counters}}`` from the state table."""
    symbols = {s: dict(st.counts) for s, st in states.items()}
    total = dict.fromkeys(COUNTER_KEYS, 0)
    for counts in symbols.values():
        for k, v in counts.items():
            total[k] += v
    return {"total": total, "symbols": symbols}


class Validator:
    """Streaming validation with per-symbol state: ``check(quote) -> Verdict``.

    Rules run in ``RULES`` order; the first failing rule wins. Only accepted
    quotes update a symbol's state (reference price, windows, last time, the
    duplicate key), except the re-anchoring run. With ``config.enabled`` false
    every quote is accepted, duplicates included (pure pass-through, counted as
    accepted). Not thread-safe: one validator belongs to one collector loop.
    """

    def __init__(self, config: ValidationConfig | None = None) -> None:
        self.config = config if config is not None else ValidationConfig()
        self._params, self._states = new_state_table(self.config)
        self._enabled = self.config.enabled
        self._dup = self.config.rules.duplicate
        self._log_every_us = round(self.config.log_interval_seconds * 1_000_000)
        self._tol_us = future_tolerance_us(self.config)

    def _state(self, symbol: str) -> SymbolState:
        st = self._states.get(symbol)
        if st is None:
            st = self._states[symbol] = SymbolState(self._params, symbol)
        return st

    def check(self, quote: Quote) -> Verdict:
        """Judge one quote and update the symbol's state if it is accepted.

        A quote whose fields are not numbers (a custom source's bug) is rejected as
        ``non_finite`` rather than raising: every quote gets a verdict."""
        try:
            st = self._states.get(quote.symbol)
            if st is None:
                st = self._state(quote.symbol)
            if not self._enabled:
                st.counts["accepted"] += 1
                return ACCEPTED
            bid = quote.bid
            ask = quote.ask
            last = quote.last
            ts = quote.ts_us
            bsz = quote.bid_size
            asz = quote.ask_size
            key = (ts, bid, ask, bsz, asz, last)
            if self._dup and key == st.last_key and not has_nan(key):
                st.counts["duplicate"] += 1
                return DUPLICATE
            if bid is not None and ask is not None:
                fmid = (bid + ask) / 2.0
                price = fmid if last is None else last
                # The common case, decided without stateless_failure: a quote that passes
                # every stateless rule whichever are switched on (finite, positive, not
                # crossed, in range, not ahead of our clock). Anything else takes the
                # full path below, which names the failing rule.
                if (
                    0.0 < bid <= ask < _INF
                    and (last is None or 0.0 < last < _INF)
                    and (bsz is None or 0.0 <= bsz < _INF)
                    and (asz is None or 0.0 <= asz < _INF)
                    and st.lo <= price <= st.hi
                    and ts - quote.recv_us <= self._tol_us
                    and TS_MIN_US <= ts <= TS_MAX_US
                ):
                    verdict = st.judge(ts, price, fmid, ask - bid, key)
                    if verdict is ACCEPTED:
                        return verdict
                    if verdict.status == "rejected":
                        self._log(st, quote, verdict)
                    return verdict
            fail = stateless_failure(
                self.config,
                bid,
                ask,
                bsz,
                asz,
                last,
                ts,
                quote.recv_us,
                st.lo,
                st.hi,
            )
            if fail is not None:
                verdict = st.reject(*fail)
            else:
                if bid is not None and ask is not None:
                    mid: float | None = (bid + ask) / 2.0
                    spread: float | None = ask - bid
                else:
                    mid = spread = None
                verdict = st.judge(ts, last if last is not None else mid, mid, spread, key)  # type: ignore[arg-type]
                if verdict is ACCEPTED:
                    return verdict
            if verdict.status == "rejected":
                self._log(st, quote, verdict)
            return verdict
        except (TypeError, ValueError, OverflowError) as exc:
            st = self._state(str(quote.symbol))
            return st.reject("non_finite", f"not a valid quote: {type(exc).__name__}: {exc}"[:200])

    def _log(self, st: SymbolState, quote: Quote, verdict: Verdict) -> None:
        """One warning per symbol and rule per ``log_interval_seconds`` (quote time)."""
        warn_reject(st.logged, quote.symbol, verdict, quote.recv_us, self._log_every_us)

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Per-symbol counters: ``{symbol: {key: n}}`` with keys ``COUNTER_KEYS``."""
        return {s: dict(st.counts) for s, st in self._states.items()}

    def stats(self) -> dict[str, Any]:
        """``{"total": {key: n}, "symbols": {symbol: {key: n}}}`` (keys: ``COUNTER_KEYS``)."""
        return summarize(self._states)

    def reset(self, symbol: str | None = None) -> None:
        """Forget one symbol's state and counts (or every symbol's), e.g. at a new session."""
        if symbol is None:
            self._states.clear()
        else:
            self._states.pop(symbol, None)
