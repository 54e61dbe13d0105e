"""The validator's fast paths decide exactly as the plain computation they replace.

The streaming validator skips work that cannot change a decision: the mid
window's MAD is summed only when a mid is more than ``k`` floors from the
median, the spread window is sorted only when a spread is above ``k`` floors, a
quote that passes every stateless rule skips ``stateless_failure``. Here the
windows are checked value for value against the eager window they replace, and
the whole validator verdict for verdict (reasons and counters too) against a
copy of the plain implementation (rules checked in full, every window refreshed
on every push), over the agreement test's random sequences and configs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import struct
from bisect import bisect_left, insort
from collections import deque
from typing import Any

import pytest
from helpers.quote_strategies import configs, sequences
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robust_collector.model import Quote, new_quote
from robust_collector.validation import ValidationConfig, Validator
from robust_collector.validation.rules import has_nan, stateless_failure
from robust_collector.validation.streaming import (
    ACCEPTED,
    DUPLICATE,
    LazyWindow,
    RollingWindow,
    SymbolState,
    Verdict,
)

logging.getLogger("robust_collector.validation").setLevel(logging.ERROR)


# -- the plain implementation (as it was before the fast paths) ---------------------------


class EagerWindow:
    """The window as it was: sorted copy, median and MAD refreshed on every push."""

    def __init__(self, size: int, active: int, with_mad: bool = False) -> None:
        self._size = size
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []
        self.active = min(active, size)
        self.with_mad = with_mad
        self.ready = False
        self.median = 0.0
        self.mad = 0.0

    def clear(self) -> None:
        self._fifo.clear()
        self._sorted.clear()
        self.ready = False
        self.median = self.mad = 0.0

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
            else:
                sl.remove(old)
            n -= 1
        elif n < self.active:
            return
        self.ready = True
        h = n >> 1
        med = sl[h] if n & 1 else (sl[h - 1] + sl[h]) / 2.0
        self.median = med
        if self.with_mad:
            self.mad = (sum(sl) - 2.0 * sum(sl[:h]) + med * (2 * h - n)) / n


class PlainState(SymbolState):
    """``SymbolState`` with the eager windows and the judge as it was (no short cuts)."""

    def __init__(self, params: Any, symbol: str) -> None:
        super().__init__(params, symbol)
        self.spreads = EagerWindow(params.spread_window, params.spread_active)  # type: ignore[assignment]
        self.mids = EagerWindow(params.mid_window, params.mid_active, with_mad=True)  # type: ignore[assignment]

    def judge(
        self, ts: int, price: float, mid: float | None, spread: float | None, key: tuple[Any, ...]
    ) -> Verdict:
        from robust_collector.validation.rules import out_of_order_reason, spread_reason

        p = self.p
        last_ts = self.last_ts
        if p.out_of_order and last_ts is not None and ts < last_ts:
            return self.reject("out_of_order", out_of_order_reason(ts, last_ts))
        if spread is not None and p.spread_outlier:
            sw = self.spreads
            if sw.ready:
                med = sw.median
                floor = p.spread_floor * mid  # type: ignore[operator]
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
                mad = mw.mad
                mfloor = p.mad_floor * mmed
                if mad < mfloor:
                    mad = mfloor
                if abs(mid - mmed) > p.mid_k * mad:
                    failed = "mid_outlier"
        if failed is not None:
            n = self.run_n
            values = (key[1], key[2], key[5])
            if n:
                if values == self.run_last and not has_nan(values):
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
        self.run_n = 0
        self._accept(ts, price, mid, spread, key)
        return ACCEPTED


class PlainValidator(Validator):
    """``Validator.check`` as it was: ``stateless_failure`` on every quote."""

    def _state(self, symbol: str) -> SymbolState:
        st_ = self._states.get(symbol)
        if st_ is None:
            st_ = self._states[symbol] = PlainState(self._params, symbol)
        return st_

    def check(self, quote: Quote) -> Verdict:
        st_ = self._state(quote.symbol)
        if not self._enabled:
            st_.counts["accepted"] += 1
            return ACCEPTED
        bid, ask, last, ts = quote.bid, quote.ask, quote.last, quote.ts_us
        key = (ts, bid, ask, quote.bid_size, quote.ask_size, last)
        if self._dup and key == st_.last_key and not has_nan(key):
            st_.counts["duplicate"] += 1
            return DUPLICATE
        fail = stateless_failure(
            self.config,
            bid,
            ask,
            quote.bid_size,
            quote.ask_size,
            last,
            ts,
            quote.recv_us,
            st_.lo,
            st_.hi,
        )
        if fail is not None:
            return st_.reject(*fail)
        if bid is not None and ask is not None:
            mid: float | None = (bid + ask) / 2.0
            spread: float | None = ask - bid
        else:
            mid = spread = None
        return st_.judge(ts, last if last is not None else mid, mid, spread, key)  # type: ignore[arg-type]


# -- the windows, value for value ----------------------------------------------------------


def same_float(a: float, b: float) -> bool:
    """Bit for bit (so 0.0 is not -0.0), NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and struct.pack("<d", a) == struct.pack("<d", b)


POOL = [0.01, 0.02, 0.03, 0.05, 1.0, 100.0, 100.01, 99.99, 0.0, -0.0, 1e-300, 1e300, math.inf]
values = st.one_of(st.sampled_from(POOL), st.floats(-1e6, 1e6, allow_nan=False))
ops = st.lists(
    st.one_of(values.map(lambda x: ("push", x)), st.just(("read", 0.0)), st.just(("clear", 0.0))),
    max_size=120,
)


@settings(max_examples=400, deadline=None)
@given(size=st.integers(1, 12), active=st.integers(1, 12), script=ops)
def test_the_mid_window_with_a_lazy_mad_matches_the_eager_window(
    size: int, active: int, script: list[tuple[str, float]]
) -> None:
    new, ref = RollingWindow(size, active, with_mad=True), EagerWindow(size, active, True)
    for op, x in script:
        if op == "push":
            new.push(x)
            ref.push(x)
        elif op == "clear":
            new.clear()
            ref.clear()
        assert new.ready == ref.ready
        assert same_float(new.median, ref.median)
        if op == "read" or new.ready:
            assert same_float(new.mad, ref.mad)


@settings(max_examples=400, deadline=None)
@given(
    size=st.integers(1, 40),
    active=st.integers(1, 40),
    script=ops,
    nan_at=st.one_of(st.none(), st.integers(0, 119)),
)
def test_the_lazy_spread_window_matches_the_eager_window(
    size: int, active: int, script: list[tuple[str, float]], nan_at: int | None
) -> None:
    new, ref = LazyWindow(size, active), EagerWindow(size, active)
    for i, (op, x) in enumerate(script):
        if i == nan_at:
            op, x = "push", math.nan  # from here on the lazy window is eager
        if op == "push":
            new.push(x)
            ref.push(x)
        elif op == "clear":
            new.clear()
            ref.clear()
        assert new.ready == ref.ready
        assert len(new) == len(ref._fifo)
        if op == "read":  # reading is what syncs it: read only sometimes
            assert same_float(new.median, ref.median)
    assert same_float(new.median, ref.median)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("read_every", [1, 3, 37, 200, 10_000])
def test_the_lazy_spread_window_matches_over_long_runs(seed: int, read_every: int) -> None:
    """Both ways of catching up (insort a few pending values, re-sort many), with ties."""
    rng = random.Random(seed)
    size = rng.choice([5, 50, 500])
    new, ref = LazyWindow(size, 20), EagerWindow(size, 20)
    for i in range(3000):
        x = rng.choice([0.01, 0.02, 0.0, -0.0, 0.05]) if rng.random() < 0.7 else rng.random()
        new.push(x)
        ref.push(x)
        if i % read_every == 0 or rng.random() < 0.01:
            assert same_float(new.median, ref.median)
        assert new.ready == ref.ready
    assert same_float(new.median, ref.median)
    assert new._sorted == ref._sorted


# -- the whole validator, verdict for verdict ----------------------------------------------


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), quotes=sequences())
def test_the_validator_decides_as_the_plain_implementation(
    config: ValidationConfig, quotes: list[Quote]
) -> None:
    new, ref = Validator(config), PlainValidator(config)
    for q in quotes:
        a, b = new.check(q), ref.check(q)
        assert (a.status, a.rule, a.reason) == (b.status, b.rule, b.reason)
    assert new.stats() == ref.stats()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=configs(),
    seed=st.integers(0, 2**32),
    n=st.integers(50, 400),
    k=st.sampled_from([2.0, 5.0, 10.0]),
)
def test_the_validator_decides_as_the_plain_implementation_with_full_windows(
    config: ValidationConfig, seed: int, n: int, k: float
) -> None:
    """Longer walks with noisy mids and spreads, so the windows fill and the MAD matters."""
    config = dataclasses.replace(
        config,
        enabled=True,
        mid_window=25,
        spread_window=60,
        min_window_samples=10,
        mid_outlier_k=k,
        spread_outlier_k=k,
        mid_mad_floor_pct=0.001,
    )
    rng = random.Random(seed)
    new, ref = Validator(config), PlainValidator(config)
    px, t = 100.0, 1_700_000_000_000_000
    for i in range(n):
        t += rng.choice([1, 1000, 0])
        px = round(px * (1 + rng.gauss(0, 0.002)), 2)
        mid = px * (1 + rng.choice([0.0, 0.0, 0.0, 0.01, -0.02, 0.05]))
        half = rng.choice([0.01, 0.01, 0.02, 0.05, 0.5])
        q = Quote(f"q{i}", "A", i, t, t, round(mid - half, 2), round(mid + half, 2), 1.0, 1.0)
        a, b = new.check(q), ref.check(q)
        assert (a.status, a.rule, a.reason) == (b.status, b.rule, b.reason)
    assert new.stats() == ref.stats()


# -- the quick constructor ------------------------------------------------------------------


def test_new_quote_builds_the_same_frozen_quote() -> None:
    args = ("r:SPY:1", "SPY", 1, 10, 11, 1.0, 2.0, None, 3.0, math.nan, "replay")
    q = new_quote(*args)
    ref = Quote(*args)
    assert type(q) is Quote
    assert q.as_row() == ref.as_row() or all(
        a == b or (a != a and b != b) for a, b in zip(q.as_row(), ref.as_row(), strict=True)
    )
    assert repr(q) == repr(ref)
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.bid = 5.0  # type: ignore[misc]
    assert dataclasses.replace(q, seq=2).seq == 2
    assert dataclasses.asdict(q)["tick_id"] == "r:SPY:1"
    same = new_quote("a", "S", 1, 2, 3, 1.0, 2.0, 3.0, 4.0, None, "x")
    assert same == Quote("a", "S", 1, 2, 3, 1.0, 2.0, 3.0, 4.0, None, "x")
    assert hash(same) == hash(Quote("a", "S", 1, 2, 3, 1.0, 2.0, 3.0, 4.0, None, "x"))
