"""The built-in offline feed: per-symbol random-walk quotes and trades with injectable faults.

Prices are deterministic for a seed (each symbol has its own random streams, so
the timing of other symbols never changes a symbol's path). ``fetch_trade`` prints
a trade near the symbol's simulated mid (inside its usual spread), with a size
(round lots, some odd lots marked ``I``), a venue, a provider id and a tape;
trades draw from their own streams, so asking for trades never changes the
quotes. A symbol that collects trades only has its mid walked by its trades.
Faults (errors, latency, outages, failing symbols, bad ticks, duplicates, rate
limits) come from config, apply to quotes and trades alike, and can be changed
while running with ``inject()`` and ``heal()``. A duplicated trade repeats the
previous one with its provider id (a duplicate by identity); a bad trade has a
spiked, zero or NaN price or a zero size.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from robust_collector.errors import RateLimitError, TransientSourceError
from robust_collector.model import Quote, Trade, make_tick_id, make_trade_id, now_us
from robust_collector.sources.base import kinds_for, register_source
from robust_collector.sources.settings import FaultConfig, SimulatedSourceConfig

DEFAULT_START_PRICES = {"SPY": 520.0, "QQQ": 450.0, "IWM": 210.0}
BAD_TICK_KINDS = ("spike", "crossed", "nan", "zero")
BAD_TRADE_KINDS = ("spike", "zero", "nan", "zero_size")
TRADE_VENUES = ("N", "P", "Q", "Z", "K", "V", "D", "D", "D")  # D: FINRA TRF (off-exchange)
DEFAULT_TAPES = {"SPY": "B", "IWM": "B", "QQQ": "C"}  # tape B: NYSE Arca listed; C: Nasdaq


@dataclass
class FaultState:
    """The faults in force now; starts from ``FaultConfig`` and changes at run time."""

    error_rate: float = 0.0
    latency_seconds: float = 0.0
    symbol_latency_seconds: dict[str, float] = field(default_factory=dict)
    outages: list[tuple[float, float]] = field(default_factory=list)
    failing_symbols: set[str] = field(default_factory=set)
    bad_tick_rate: float = 0.0
    duplicate_rate: float = 0.0
    rate_limit_rate: float = 0.0
    rate_limit_retry_after_seconds: float = 1.0

    @classmethod
    def from_config(cls, cfg: FaultConfig) -> FaultState:
        return cls(
            error_rate=cfg.error_rate,
            latency_seconds=cfg.latency_seconds,
            symbol_latency_seconds=dict(cfg.symbol_latency_seconds),
            outages=[(o.start_seconds, o.start_seconds + o.duration_seconds) for o in cfg.outages],
            failing_symbols=set(cfg.failing_symbols),
            bad_tick_rate=cfg.bad_tick_rate,
            duplicate_rate=cfg.duplicate_rate,
            rate_limit_rate=cfg.rate_limit_rate,
            rate_limit_retry_after_seconds=cfg.rate_limit_retry_after_seconds,
        )


@dataclass
class _SymbolState:
    rng: random.Random
    fault_rng: random.Random
    mid: float
    tick: float
    trade_rng: random.Random
    trade_fault_rng: random.Random
    seq: int = 0
    last: Quote | None = None
    bad: dict[int, str] = field(default_factory=dict)
    trade_seq: int = 0
    prints: int = 0  # the provider ids handed out
    last_trade: Trade | None = None
    bad_trades: dict[int, str] = field(default_factory=dict)


class SimulatedSource:
    """A deterministic random-walk feed with fault injection, for demos and tests.

    ``clock_us`` stamps quotes (epoch µs), ``monotonic`` times outage windows and
    ``sleep`` waits out injected latency: all three are injectable for tests.
    """

    def __init__(
        self,
        config: SimulatedSourceConfig | None = None,
        *,
        clock_us: Callable[[], int] = now_us,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.config = config or SimulatedSourceConfig()
        self.name = "simulated"
        self.faults = FaultState.from_config(self.config.faults)
        self._clock_us = clock_us
        self._monotonic = monotonic
        self._sleep = sleep
        self._started: float | None = None
        self._run_id = "sim"
        self._symbols: dict[str, _SymbolState] = {}
        self._fail_next: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.trade_calls: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, run_id: str) -> None:
        self._run_id = run_id
        self._started = self._monotonic()

    async def aclose(self) -> None:
        return None

    # -- fault control -----------------------------------------------------------

    def inject(self, **changes: Any) -> None:
        """Change faults while running, e.g. ``inject(failing_symbols={"IWM"})``."""
        for key, value in changes.items():
            if not hasattr(self.faults, key):
                raise AttributeError(f"unknown fault {key!r}")
            if key == "failing_symbols":
                value = set(value)
            setattr(self.faults, key, value)

    def fail(self, *symbols: str) -> None:
        """Make every fetch of ``symbols`` fail until ``heal``."""
        self.faults.failing_symbols.update(symbols)

    def heal(self, *symbols: str) -> None:
        """Lift ``fail``; with no symbols, clear every fault."""
        if symbols:
            self.faults.failing_symbols.difference_update(symbols)
        else:
            self.faults = FaultState()

    def fail_next(self, symbol: str, count: int) -> None:
        """Make the next ``count`` fetches of ``symbol`` (quotes or trades) fail, then work."""
        self._fail_next[symbol] = self._fail_next.get(symbol, 0) + count

    def outage(self, duration_seconds: float) -> None:
        """Fail every fetch for the next ``duration_seconds``."""
        now = self.elapsed()
        self.faults.outages.append((now, now + duration_seconds))

    def elapsed(self) -> float:
        """Seconds since ``start`` (0 before it)."""
        return 0.0 if self._started is None else self._monotonic() - self._started

    # -- accounting --------------------------------------------------------------

    @property
    def emitted(self) -> dict[str, int]:
        """Quotes emitted per symbol: the highest sequence number handed out."""
        return {sym: st.seq for sym, st in self._symbols.items()}

    def bad_ticks(self, symbol: str) -> dict[int, str]:
        """The bad ticks ``symbol`` emitted: sequence number -> kind."""
        st = self._symbols.get(symbol)
        return dict(st.bad) if st else {}

    @property
    def emitted_trades(self) -> dict[str, int]:
        """Trades emitted per symbol: the highest trade sequence number handed out."""
        return {sym: st.trade_seq for sym, st in self._symbols.items() if st.trade_seq}

    def bad_trades(self, symbol: str) -> dict[int, str]:
        """The bad trades ``symbol`` emitted: trade sequence number -> kind."""
        st = self._symbols.get(symbol)
        return dict(st.bad_trades) if st else {}

    # -- the feed ----------------------------------------------------------------

    def _state(self, symbol: str) -> _SymbolState:
        st = self._symbols.get(symbol)
        if st is None:
            seed = self.config.seed
            start = self.config.start_prices.get(symbol, DEFAULT_START_PRICES.get(symbol, 100.0))
            st = _SymbolState(
                rng=random.Random(f"{seed}:{symbol}:price"),
                fault_rng=random.Random(f"{seed}:{symbol}:fault"),
                mid=float(start),
                tick=0.01,
                trade_rng=random.Random(f"{seed}:{symbol}:trade"),
                trade_fault_rng=random.Random(f"{seed}:{symbol}:trade-fault"),
            )
            self._symbols[symbol] = st
        return st

    def _in_outage(self) -> bool:
        now = self.elapsed()
        return any(a <= now < b for a, b in self.faults.outages)

    async def fetch(self, symbol: str) -> Quote:
        """The next quote of ``symbol``, or a simulated failure."""
        f = self.faults
        st = self._state(symbol)
        self.calls[symbol] = self.calls.get(symbol, 0) + 1
        await self._inject(symbol, st.fault_rng)
        frng = st.fault_rng
        st.seq += 1
        recv = self._clock_us()
        tick_id = make_tick_id(self._run_id, symbol, st.seq)
        if f.duplicate_rate and st.last is not None and frng.random() < f.duplicate_rate:
            return replace(st.last, tick_id=tick_id, seq=st.seq, recv_us=recv)
        quote = self._step(symbol, st, tick_id, recv)
        if f.bad_tick_rate and frng.random() < f.bad_tick_rate:
            return self._spoil(st, quote)
        st.last = quote
        return quote

    async def fetch_trade(self, symbol: str) -> Trade:
        """The next trade of ``symbol`` (near its simulated mid), or a simulated failure."""
        f = self.faults
        st = self._state(symbol)
        self.trade_calls[symbol] = self.trade_calls.get(symbol, 0) + 1
        frng = st.trade_fault_rng
        await self._inject(symbol, frng)
        st.trade_seq += 1
        recv = self._clock_us()
        trade_id = make_trade_id(self._run_id, symbol, st.trade_seq)
        last = st.last_trade
        if f.duplicate_rate and last is not None and frng.random() < f.duplicate_rate:
            # the same print again, provider id and all: a duplicate by identity
            return replace(last, trade_id=trade_id, seq=st.trade_seq, recv_us=recv)
        trade = self._print(symbol, st, trade_id, recv)
        if f.bad_tick_rate and frng.random() < f.bad_tick_rate:
            return self._spoil_trade(st, trade)
        st.last_trade = trade
        return trade

    async def _inject(self, symbol: str, frng: random.Random) -> None:
        """The faults in force for one fetch: wait out latency, or raise a failure."""
        f = self.faults
        latency = f.latency_seconds + f.symbol_latency_seconds.get(symbol, 0.0)
        if latency > 0:
            await self._sleep(latency)
        if symbol in f.failing_symbols:
            raise TransientSourceError(f"{symbol}: simulated connection refused", symbol=symbol)
        if self._fail_next.get(symbol):
            self._fail_next[symbol] -= 1
            raise TransientSourceError(f"{symbol}: simulated API timeout after 5s", symbol=symbol)
        if f.outages and self._in_outage():
            raise TransientSourceError("simulated API outage", symbol=symbol)
        if f.rate_limit_rate and frng.random() < f.rate_limit_rate:
            after = f.rate_limit_retry_after_seconds
            raise RateLimitError(
                f"rate limit exceeded (retry after {after:g}s)", symbol=symbol, retry_after=after
            )
        if f.error_rate and frng.random() < f.error_rate:
            raise TransientSourceError(f"{symbol}: simulated API timeout", symbol=symbol)

    def _step(self, symbol: str, st: _SymbolState, tick_id: str, recv: int) -> Quote:
        rng = st.rng
        vol = self.config.volatility_bps / 10_000.0
        st.mid *= math.exp(vol * rng.gauss(0.0, 1.0))
        half = st.tick * rng.choice((1, 1, 1, 2, 3)) / 2.0
        bid = round(st.mid - half, 2)
        ask = round(st.mid + half, 2)
        if ask <= bid:
            ask = round(bid + st.tick, 2)
        return Quote(
            tick_id=tick_id,
            symbol=symbol,
            seq=st.seq,
            ts_us=recv,
            recv_us=recv,
            bid=bid,
            ask=ask,
            bid_size=float(rng.randint(1, 20) * 100),
            ask_size=float(rng.randint(1, 20) * 100),
            last=None,
            source=self.name,
        )

    def _print(self, symbol: str, st: _SymbolState, trade_id: str, recv: int) -> Trade:
        rng = st.trade_rng
        if "quotes" not in kinds_for(self.config, symbol):  # no quotes walk the mid: trades do
            vol = self.config.volatility_bps / 10_000.0
            st.mid *= math.exp(vol * rng.gauss(0.0, 1.0))
        # within half a tick of the mid: between the bid and the ask a quote of this mid has
        half = st.tick / 2.0
        odd = rng.random() < 0.15
        st.prints += 1
        return Trade(
            trade_id=trade_id,
            symbol=symbol,
            seq=st.trade_seq,
            ts_us=recv,
            recv_us=recv,
            price=round(st.mid + rng.uniform(-half, half), 2),
            size=float(rng.randint(1, 99) if odd else rng.randint(1, 10) * 100),
            venue=rng.choice(TRADE_VENUES),
            conditions="@ I" if odd else "@",
            correction=0,
            provider_id=str(st.prints),
            tape=DEFAULT_TAPES.get(symbol, "A"),
            source=self.name,
        )

    def _spoil_trade(self, st: _SymbolState, t: Trade) -> Trade:
        kind = st.trade_fault_rng.choice(BAD_TRADE_KINDS)
        st.bad_trades[t.seq] = kind
        assert t.price is not None
        if kind == "spike":
            factor = st.trade_fault_rng.choice((100.0, 1.5, 0.5))
            return replace(t, price=round(t.price * factor, 2))
        if kind == "zero":
            return replace(t, price=0.0)
        if kind == "nan":
            return replace(t, price=math.nan)
        return replace(t, size=0.0)

    def _spoil(self, st: _SymbolState, q: Quote) -> Quote:
        kind = st.fault_rng.choice(BAD_TICK_KINDS)
        st.bad[q.seq] = kind
        if kind == "spike":
            factor = st.fault_rng.choice((100.0, 1.5, 0.5))
            return replace(q, bid=round(q.bid * factor, 2), ask=round(q.ask * factor, 2))
        if kind == "crossed":
            return replace(q, bid=q.ask + 0.05, ask=q.bid)
        if kind == "nan":
            return replace(q, bid=math.nan)
        return replace(q, bid=0.0, ask=0.0)


def _build(config: SimulatedSourceConfig, **kwargs: Any) -> SimulatedSource:
    return SimulatedSource(config, **kwargs)


register_source("simulated", _build)
