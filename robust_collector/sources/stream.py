"""The streaming form of the ``Source`` protocol, and the two clocks-injected pieces it needs.

A polling source answers ``fetch(symbol)``; a streaming source opens ONE
connection for many symbols (``connect(symbols)``, which authenticates and
subscribes) and hands back a ``StreamConnection``: an async iterator of raw
frames. ``parse(frame)`` turns a frame into quote fields, trade fields, problems
(malformed items) and control messages. Reading and parsing are separate so the
collector's reader only reads (it never waits on validation or storage) and a
benchmark can time a bare parse of the same frames.

``ReconnectBackoff`` spaces reconnect attempts (exponential, equal jitter) and
``SilenceDetector`` learns each symbol's normal gap between quotes (and, apart, between
trades) and says which have gone quiet; both take a clock so tests never sleep.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from robust_collector.errors import PermanentSourceError, TransientSourceError
from robust_collector.model import Quote
from robust_collector.resilience.backoff import Backoff

__all__ = [
    "Control",
    "ParsedFrame",
    "QuoteFields",
    "ReconnectBackoff",
    "Silence",
    "SilenceDetector",
    "StreamAuthError",
    "StreamClosed",
    "StreamConnection",
    "StreamRefused",
    "StreamSource",
    "TradeFields",
    "is_streaming",
    "iter_quotes",
]

QuoteFields = tuple[str, int | None, float | None, float | None, float | None, float | None]
"""One parsed quote: (symbol, ts_us or None, bid, ask, bid_size, ask_size)."""

TradeFields = tuple[
    str, int, float | None, float | None, str | None, str | None, str | None, str | None
]
"""One parsed trade: (symbol, ts_us, price, size, venue, conditions, provider_id, tape);
conditions are the codes joined with single spaces, every text bounded and clean."""

NoticeFields = tuple[
    str, int, float | None, float | None, str | None, str | None, str | None, str | None, int
]
"""One parsed correction or cancel of an earlier trade: ``TradeFields`` plus the
correction code (10 cancel, 11 error, 12 correction)."""


class StreamClosed(TransientSourceError):
    """The connection closed (dropped, ping timeout, or closed by us); reconnecting may help."""

    def __init__(self, message: str, *, cause: str = "connection closed") -> None:
        super().__init__(message)
        self.cause = cause


class StreamRefused(TransientSourceError):
    """The server refused us for now (e.g. connection limit exceeded): back off and retry."""


class StreamAuthError(PermanentSourceError):
    """The server refused the credentials or the subscription: reconnecting cannot help."""


@dataclass(frozen=True, slots=True)
class Control:
    """A non-data message: ``kind`` is subscribed, error or status.

    A ``subscribed`` control lists the symbols acknowledged on any channel in
    ``symbols`` and per channel in ``channels``, e.g. ``(("quotes", ("SPY",)),
    ("trades", ("SPY", "IWM")))``.
    """

    kind: str
    message: str
    code: int | str | None = None
    permanent: bool = False
    symbols: tuple[str, ...] = ()
    channels: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(slots=True)
class ParsedFrame:
    """What one frame held: quotes, trades, notices (corrections and cancels of earlier
    trades), problems (one line per malformed item) and controls; ``ignored`` counts
    well-formed messages of kinds not collected (bars...)."""

    quotes: list[QuoteFields] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    controls: list[Control] = field(default_factory=list)
    ignored: int = 0
    trades: list[TradeFields] = field(default_factory=list)
    notices: list[NoticeFields] = field(default_factory=list)


@runtime_checkable
class StreamConnection(Protocol):
    """One open, authenticated, subscribed connection: an async iterator of raw frames."""

    def __aiter__(self) -> AsyncIterator[str | bytes]: ...

    async def close(self) -> None:
        """Close the connection; the iterator then ends with ``StreamClosed``."""


@runtime_checkable
class StreamSource(Protocol):
    """A streaming market-data source (see the module docs)."""

    name: str
    streaming: bool

    async def start(self, run_id: str) -> None:
        """Prepare (nothing is opened yet); ``run_id`` goes into every tick id."""

    async def connect(self, symbols: Sequence[str]) -> StreamConnection:
        """Open, authenticate and subscribe each symbol to the channels of its kinds
        (quotes, trades); ``StreamAuthError`` when that cannot work."""
        ...

    def parse(self, frame: str | bytes) -> ParsedFrame:
        """Quote and trade fields, problems and controls from one frame; never raises."""
        ...

    async def aclose(self) -> None:
        """Release everything; called once when the collector stops."""


def is_streaming(source: object) -> bool:
    """True for a source that streams (``streaming = True`` and a ``connect`` method)."""
    return bool(getattr(source, "streaming", False)) and hasattr(source, "connect")


async def iter_quotes(
    source: StreamSource,
    symbols: Sequence[str],
    *,
    run_id: str = "stream",
    clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
) -> AsyncIterator[Quote]:
    """Quotes from one connection, unvalidated, until it closes: for notebooks and tools.

    The collector does more (reconnects, silence, validation, storage); this is
    the bare feed, e.g. ``async for q in iter_quotes(src, ["SPY"]): ...``.
    """
    from robust_collector.model import make_tick_id

    await source.start(run_id)
    seq: dict[str, int] = {}
    conn = await source.connect(symbols)
    try:
        async for frame in conn:
            recv = clock_us()
            for sym, ts, bid, ask, bs, asz in source.parse(frame).quotes:
                n = seq[sym] = seq.get(sym, 0) + 1
                yield Quote(
                    make_tick_id(run_id, sym, n),
                    sym,
                    n,
                    ts or recv,
                    recv,
                    bid,
                    ask,
                    bs,
                    asz,
                    None,
                    source.name,
                )
    finally:
        await conn.close()


class _DrawRandom(random.Random):
    """A ``random.Random`` whose ``random()`` is a zero-argument callable (the ``rng`` given)."""

    def __init__(self, draw: Callable[[], float]) -> None:
        self._draw = draw
        super().__init__(0)

    def random(self) -> float:
        return self._draw()


class ReconnectBackoff:
    """Waits between reconnect attempts: ``base × 2^(n-1)`` capped, with equal jitter.

    Equal jitter keeps at least half of each wait (no instant retries) and spreads
    the rest, so many collectors cut off at once do not reconnect in lockstep.
    ``reset()`` after a connection has delivered data. The schedule is a
    :class:`~robust_collector.resilience.Backoff`; this class counts the attempts.
    """

    def __init__(
        self, base: float, cap: float, *, rng: Callable[[], float] = random.random
    ) -> None:
        self.attempts = 0
        self._draw = _DrawRandom(rng)
        self._base = base
        self._cap = max(cap, base)
        self._rebuild()

    def _rebuild(self) -> None:
        # Growth has always stopped at base * 2**60; capping there keeps that exact.
        self.schedule = Backoff(
            self._base, 2.0, min(self._cap, self._base * 2**60), "equal", rng=self._draw
        )

    @property
    def base(self) -> float:
        """The first wait's bound, in seconds."""
        return self._base

    @base.setter
    def base(self, value: float) -> None:
        self._base = value
        self._rebuild()

    @property
    def cap(self) -> float:
        """The largest bound, in seconds (never below ``base``)."""
        return self._cap

    @cap.setter
    def cap(self, value: float) -> None:
        self._cap = value
        self._rebuild()

    def next_delay(self, at_least: float | None = None) -> float:
        """The wait before the next attempt (and count the attempt); ``at_least`` is a floor."""
        self.attempts += 1
        return max(self.schedule.delay(self.attempts), at_least or 0.0)

    def reset(self) -> None:
        self.attempts = 0


@dataclass(frozen=True, slots=True)
class Silence:
    """One symbol's quiet interval in one kind of data: from its last quote (or trade,
    ``kind``) at ``start`` to ``end`` (seconds)."""

    symbol: str
    start: float
    end: float
    threshold: float
    kind: str = "quotes"


class _SymbolTrack:
    __slots__ = ("gaps", "last", "silent_since", "threshold")

    def __init__(self, window: int, now: float, threshold: float) -> None:
        self.gaps: deque[float] = deque(maxlen=window)
        self.last = now
        self.silent_since: float | None = None
        self.threshold = threshold


_KIND_ORDER = ("quotes", "trades")  # a symbol's first kind is its quotes when it has them


class SilenceDetector:
    """Per-symbol, per-kind silence with an adaptive threshold: ``factor × p99`` of recent
    gaps.

    Each symbol has one track per kind of data it collects (``kinds``: symbol -> kinds,
    default quotes only), so a symbol whose trades are rare and quotes frequent is not
    judged by the mixed rhythm, and its quotes stopping while trades go on is a silence
    of its quotes. The threshold is clamped to ``[floor, ceiling]``; until
    ``min_samples`` gaps are known it is the ceiling (a track never seen is not judged
    on a guess). Time outside the trading session (``is_open`` false) never counts:
    ``check`` does nothing then and restarts every clock on the way back. The
    symbol-keyed methods without ``kind`` speak of a symbol's first kind (quotes when
    it collects them).
    """

    def __init__(
        self,
        symbols: Iterable[str],
        *,
        factor: float = 3.0,
        floor: float = 2.0,
        ceiling: float = 120.0,
        window: int = 100,
        min_samples: int = 10,
        clock: Callable[[], float] = time.time,
        is_open: Callable[[float], bool] = lambda _t: True,
        kinds: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.factor, self.floor, self.ceiling = factor, floor, ceiling
        self.window, self.min_samples = window, min_samples
        self.clock = clock
        self.is_open = is_open
        now = clock()
        self._kinds: dict[str, tuple[str, ...]] = {}
        self._tracks: dict[tuple[str, str], _SymbolTrack] = {}
        for s in symbols:
            wanted = set(kinds.get(s, ("quotes",))) if kinds is not None else {"quotes"}
            ordered = tuple(k for k in _KIND_ORDER if k in wanted)
            ordered += tuple(sorted(wanted - set(_KIND_ORDER)))
            self._kinds[s] = ordered or ("quotes",)
            for k in self._kinds[s]:
                self._tracks[(s, k)] = _SymbolTrack(window, now, ceiling)
        self._was_open = True

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._kinds)

    def kinds(self, symbol: str) -> tuple[str, ...]:
        """The kinds of data ``symbol`` is tracked for (quotes first)."""
        return self._kinds[symbol]

    def _track(self, symbol: str, kind: str | None) -> _SymbolTrack:
        return self._tracks[(symbol, kind or self._kinds[symbol][0])]

    def threshold(self, symbol: str, kind: str | None = None) -> float:
        """Seconds without a quote (or a ``kind``) after which ``symbol`` counts as silent."""
        return self._track(symbol, kind).threshold

    def _learn(self, t: _SymbolTrack) -> None:
        gaps = t.gaps
        if len(gaps) < self.min_samples:
            t.threshold = self.ceiling
            return
        ordered = sorted(gaps)
        p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
        t.threshold = min(self.ceiling, max(self.floor, self.factor * p99))

    def arrived(self, symbol: str, at: float | None = None, kind: str = "quotes") -> Silence | None:
        """A quote (or a ``kind``) of ``symbol`` arrived; returns the silence it ends, if any.

        An arrival of a kind the symbol is not tracked for is ignored."""
        t = self._tracks.get((symbol, kind))
        if t is None:
            return None
        now = self.clock() if at is None else at
        ended = None
        if t.silent_since is not None:
            ended = Silence(symbol, t.silent_since, now, t.threshold, kind)
            t.silent_since = None
        else:
            t.gaps.append(max(0.0, now - t.last))
            if len(t.gaps) % 8 == 0 or len(t.gaps) <= self.min_samples:
                self._learn(t)
        t.last = now
        return ended

    def check_kinds(self, now: float | None = None) -> list[tuple[str, str]]:
        """Mark tracks silent past their threshold; returns the newly marked (symbol, kind)."""
        now = self.clock() if now is None else now
        if not self.is_open(now):
            self._was_open = False
            return []
        if not self._was_open:  # the session just opened: nobody was late while it was shut
            self.restart(now)
            self._was_open = True
        newly = []
        for key, t in self._tracks.items():
            if t.silent_since is None and now - t.last > t.threshold:
                t.silent_since = t.last
                newly.append(key)
        return newly

    def check(self, now: float | None = None) -> list[str]:
        """Mark tracks silent past their threshold; returns the symbols newly marked (in
        any kind, each once)."""
        return list(dict.fromkeys(s for s, _ in self.check_kinds(now)))

    def silent(self, kind: str | None = None) -> list[str]:
        """Symbols currently silent in ``kind`` (``None``: in any kind)."""
        keys = [(s, k) for (s, k), t in self._tracks.items() if t.silent_since is not None]
        return list(dict.fromkeys(s for s, k in keys if kind is None or k == kind))

    def silent_kinds(self) -> list[tuple[str, str]]:
        """The (symbol, kind) tracks currently silent."""
        return [key for key, t in self._tracks.items() if t.silent_since is not None]

    def all_silent(self) -> bool:
        """True when every symbol is silent in its first kind (its quotes when it has them):
        the stream itself looks dead. Rare trades, with their long learned thresholds, must
        not hold back the reconnect of a stream that stopped sending."""
        firsts = [self._track(sym, None) for sym in self._kinds]
        return bool(firsts) and all(t.silent_since is not None for t in firsts)

    def silent_for(self, symbol: str, now: float | None = None, kind: str | None = None) -> float:
        """Seconds since ``symbol``'s last quote (or ``kind``), or since its clock restarted."""
        now = self.clock() if now is None else now
        return max(0.0, now - self._track(symbol, kind).last)

    def close_all(self, now: float | None = None) -> list[Silence]:
        """End every open silence at ``now`` (the stream went down, or we stop)."""
        now = self.clock() if now is None else now
        out = []
        for (sym, kind), t in self._tracks.items():
            if t.silent_since is not None:
                out.append(Silence(sym, t.silent_since, now, t.threshold, kind))
                t.silent_since = None
        return out

    def restart(self, now: float | None = None) -> None:
        """Restart every clock (after a reconnect): learned gaps are kept."""
        now = self.clock() if now is None else now
        for t in self._tracks.values():
            t.last = now

    def state(self, symbol: str, kind: str | None = None) -> dict[str, Any]:
        """Health facts of one symbol's quotes (or ``kind``): silent or not, for how long,
        against what threshold."""
        t = self._track(symbol, kind)
        return {
            "silent": t.silent_since is not None,
            "silent_seconds": self.silent_for(symbol, kind=kind)
            if t.silent_since is not None
            else 0.0,
            "silence_threshold_seconds": t.threshold,
        }
