"""The quotes and trades every stage passes along, and the clock helpers they are stamped with.

Timestamps are integer epoch microseconds (UTC): exact, cheap to compare and
store, and turned into tz-aware datetimes only by the loaders.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

QUOTE_FIELDS: tuple[str, ...] = (
    "tick_id",
    "symbol",
    "seq",
    "ts_us",
    "recv_us",
    "bid",
    "ask",
    "bid_size",
    "ask_size",
    "last",
    "source",
)


@dataclass(frozen=True, slots=True)
class Quote:
    """One market-data observation of one symbol.

    ``ts_us`` is the exchange (or provider) time, ``recv_us`` our receive time.
    ``bid``/``ask`` are ``None`` for feeds that only give a last price. ``seq``
    numbers the quotes a source emitted for a symbol (1, 2, 3, ...), and
    ``tick_id`` is unique across runs, so replaying a tick twice stores it once.
    """

    tick_id: str
    symbol: str
    seq: int
    ts_us: int
    recv_us: int
    bid: float | None = None
    ask: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None
    last: float | None = None
    source: str = ""

    @property
    def mid(self) -> float | None:
        """The mid-quote, or ``None`` without both sides."""
        if self.bid is None or self.ask is None:
            return None
        return (self.bid + self.ask) / 2.0

    @property
    def price(self) -> float | None:
        """The price the price rules judge: the last price, else the mid-quote."""
        return self.last if self.last is not None else self.mid

    def as_row(self) -> tuple[Any, ...]:
        """The quote as a tuple in ``QUOTE_FIELDS`` order (the storage row)."""
        return (
            self.tick_id,
            self.symbol,
            self.seq,
            self.ts_us,
            self.recv_us,
            self.bid,
            self.ask,
            self.bid_size,
            self.ask_size,
            self.last,
            self.source,
        )

    def tick_row(self, run_id: str) -> tuple[Any, ...]:
        """The ``ticks`` table row: ``as_row()`` plus the run id (built in one step: hot path)."""
        return (
            self.tick_id,
            self.symbol,
            self.seq,
            self.ts_us,
            self.recv_us,
            self.bid,
            self.ask,
            self.bid_size,
            self.ask_size,
            self.last,
            self.source,
            run_id,
        )

    def as_dict(self) -> dict[str, Any]:
        """The quote as a plain dict (JSON-ready)."""
        return asdict(self)


class _QuoteBuilder:
    """``Quote``'s slot layout without the frozen ``__setattr__``: a hot-path constructor.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``
    (about 1 µs for a quote); this class fills the same slots with plain stores and
    then becomes a ``Quote`` (``__class__`` assignment between identical slot
    layouts), which is then exactly what ``Quote(...)`` builds, frozen as usual.
    """

    __slots__ = QUOTE_FIELDS

    def __init__(
        self,
        tick_id: str,
        symbol: str,
        seq: int,
        ts_us: int,
        recv_us: int,
        bid: float | None,
        ask: float | None,
        bid_size: float | None,
        ask_size: float | None,
        last: float | None,
        source: str,
    ) -> None:
        self.tick_id = tick_id
        self.symbol = symbol
        self.seq = seq
        self.ts_us = ts_us
        self.recv_us = recv_us
        self.bid = bid
        self.ask = ask
        self.bid_size = bid_size
        self.ask_size = ask_size
        self.last = last
        self.source = source
        self.__class__ = Quote  # type: ignore[assignment]


def _fast_quote_works() -> bool:
    try:
        q = _QuoteBuilder("t", "S", 1, 2, 3, 1.0, 2.0, 3.0, 4.0, None, "x")
    except TypeError:  # an interpreter that refuses the layout swap
        return False
    return type(q) is Quote and q == Quote("t", "S", 1, 2, 3, 1.0, 2.0, 3.0, 4.0, None, "x")


new_quote: Callable[..., Quote] = _QuoteBuilder if _fast_quote_works() else Quote  # type: ignore[assignment]
"""``new_quote(tick_id, symbol, seq, ts_us, recv_us, bid, ask, bid_size, ask_size, last,
source)``: the same ``Quote`` as ``Quote(...)`` with all eleven fields given by position,
built about five times faster (for sources that emit many quotes)."""


TRADE_FIELDS: tuple[str, ...] = (
    "trade_id",
    "symbol",
    "seq",
    "ts_us",
    "recv_us",
    "price",
    "size",
    "venue",
    "conditions",
    "correction",
    "provider_id",
    "tape",
    "source",
)


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade (a print) of one symbol, as the venue or provider reported it.

    ``ts_us`` is the exchange time, ``recv_us`` ours. ``venue`` is the reporting
    exchange (TAQ ``EX``), ``conditions`` the sale-condition codes as given (TAQ
    ``COND``), ``correction`` the correction indicator (TAQ ``CORR``; 0 = none),
    ``provider_id`` the provider's own trade id and ``tape`` its tape, where it has
    them. Two trades in the same microsecond at the same price are two trades:
    only identity (``provider_id``, or the whole record) makes a duplicate.
    ``trade_id`` is ours, unique across runs (``run:symbol:t<seq>``).
    """

    trade_id: str
    symbol: str
    seq: int
    ts_us: int
    recv_us: int
    price: float | None
    size: float | None
    venue: str | None = None
    conditions: str | None = None
    correction: int | None = None
    provider_id: str | None = None
    tape: str | None = None
    source: str = ""

    def as_row(self) -> tuple[Any, ...]:
        """The trade as a tuple in ``TRADE_FIELDS`` order."""
        return (
            self.trade_id,
            self.symbol,
            self.seq,
            self.ts_us,
            self.recv_us,
            self.price,
            self.size,
            self.venue,
            self.conditions,
            self.correction,
            self.provider_id,
            self.tape,
            self.source,
        )

    def trade_row(self, run_id: str) -> tuple[Any, ...]:
        """The ``trades`` table row: ``as_row()`` plus the run id."""
        return (*self.as_row(), run_id)

    def as_dict(self) -> dict[str, Any]:
        """The trade as a plain dict (JSON-ready)."""
        return asdict(self)


def make_trade_id(run_id: str, symbol: str, seq: int) -> str:
    """A trade id unique across runs, apart from tick ids: ``run:symbol:t<seq>``."""
    return f"{run_id}:{symbol}:t{seq}"


def make_tick_id(run_id: str, symbol: str, seq: int) -> str:
    """A tick id unique across runs: the run, the symbol, the source's sequence."""
    return f"{run_id}:{symbol}:{seq}"


def now_us() -> int:
    """Wall-clock time as integer epoch microseconds (UTC)."""
    return time.time_ns() // 1000
