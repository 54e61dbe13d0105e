"""The built-in offline feed: per-symbol random-walk quotes with injectable faults.

Prices are deterministic for a seed (each symbol has its own random stream, so
the timing of other symbols never changes a symbol's path). Faults (errors,
latency, outages, failing symbols, bad ticks, duplicates, rate limits) come from
config and can be changed while running with ``inject()`` and ``heal()``.
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
from robust_collector.model import Quote, make_tick_id, now_us
from robust_collector.sources.base import register_source
from robust_collector.sources.settings import FaultConfig, SimulatedSourceConfig

DEFAULT_START_PRICES = {"SPY": 520.0, "QQQ": 450.0, "IWM": 210.0}
BAD_TICK_KINDS = ("spike", "crossed", "nan", "zero")


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
    seq: int = 0
    last: Quote | None = None
    bad: dict[int, str] = field(default_factory=dict)


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
        """Make the next ``count`` fetches of ``symbol`` fail, then work again."""
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
        frng = st.fault_rng
        if f.rate_limit_rate and frng.random() < f.rate_limit_rate:
            after = f.rate_limit_retry_after_seconds
            raise RateLimitError(
                f"rate limit exceeded (retry after {after:g}s)", symbol=symbol, retry_after=after
            )
        if f.error_rate and frng.random() < f.error_rate:
            raise TransientSourceError(f"{symbol}: simulated API timeout", symbol=symbol)
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
