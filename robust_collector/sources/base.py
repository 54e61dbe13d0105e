"""The ``Source`` protocol every feed implements, and the registry config picks from.

A polling source answers ``await fetch(symbol) -> Quote`` and numbers the quotes
it emits per symbol (seq 1, 2, 3, ...). Errors are typed (see ``errors``) so the
retry stage knows what to retry. A source that also serves trades answers
``await fetch_trade(symbol) -> Trade`` and numbers its trades per symbol apart
from its quotes; ``kinds_for(config, symbol)`` says which kinds a symbol collects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from robust_collector.boundary import clean_text
from robust_collector.model import Quote, Trade

QUOTES_ONLY: frozenset[str] = frozenset({"quotes"})


def kinds_for(config: Any, symbol: str) -> frozenset[str]:
    """What ``symbol`` collects: ``config.data_by_symbol[symbol]``, else ``config.data``
    (``{"quotes"}`` for a config without them). ``config`` may also be a source, or the
    ``source`` section as stored with a run (a mapping)."""
    if isinstance(config, Mapping):
        by = config.get("data_by_symbol")
        by_symbol: Mapping[str, Any] = by if isinstance(by, Mapping) else {}
        kinds = by_symbol.get(symbol) or config.get("data")
        return frozenset(kinds) if isinstance(kinds, list | tuple) and kinds else QUOTES_ONLY
    if not hasattr(config, "data") and hasattr(config, "config"):
        config = config.config
    by_symbol = getattr(config, "data_by_symbol", None) or {}
    kinds = by_symbol.get(symbol) or getattr(config, "data", None)
    return frozenset(kinds) if kinds else QUOTES_ONLY


def trade_text(value: Any, limit: int = 64) -> str | None:
    """A trade's venue, condition, id or tape as clean text of at most ``limit`` characters
    (``None`` stays ``None``): outside text, bounded before it is stored."""
    if value is None:
        return None
    if type(value) is str and len(value) <= limit and value.isascii() and value.isprintable():
        return value
    return clean_text(value, limit)


@runtime_checkable
class Source(Protocol):
    """A polling market-data source."""

    name: str

    async def start(self, run_id: str) -> None:
        """Open connections; ``run_id`` goes into every tick id."""

    async def fetch(self, symbol: str) -> Quote:
        """The latest quote of ``symbol``; raises a ``SourceError`` on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once when the collector stops."""


@runtime_checkable
class TradeSource(Protocol):
    """A polling source that also serves trades (simulated, http alpaca/polygon)."""

    async def fetch_trade(self, symbol: str) -> Trade:
        """The latest trade of ``symbol``; raises a ``SourceError`` on failure."""
        ...


@dataclass(frozen=True)
class SourceTraits:
    """What a source offers beyond ``fetch``, read once when the collector is built, so
    the runtime asks these fields instead of probing the source with getattr/hasattr."""

    name: str
    symbols: frozenset[str] | None = None  # the only symbols it can serve (a replay's file)
    self_paced: bool = False  # poll without an interval (a replay at full speed)
    # the next items of a symbol (a replay), quotes and trades merged in time order
    fetch_batch: Callable[[str, int], Awaitable[list[Quote | Trade]]] | None = None
    plan: Callable[[tuple[str, ...]], None] | None = None  # told the symbols before start
    auth_retry_seconds: float = 60.0  # between probes while credentials are refused
    fetch_trade: Callable[[str], Awaitable[Trade]] | None = None  # a polling source's trades
    data: tuple[str, ...] = ("quotes",)  # the kinds of symbols not in data_by_symbol
    data_by_symbol: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def kinds(self, symbol: str) -> frozenset[str]:
        """What ``symbol`` collects (see ``kinds_for``)."""
        return kinds_for(self, symbol)


def traits_of(source: Any) -> SourceTraits:
    """The optional attributes a source declares (see ``SourceTraits``), in one place."""
    symbols = getattr(source, "symbols", None)
    batch = getattr(source, "fetch_batch", None)
    plan = getattr(source, "plan", None)
    self_paced = bool(getattr(source, "self_paced", False))
    config = getattr(source, "config", None)
    retry = getattr(config, "auth_retry_seconds", 60.0)
    trade = getattr(source, "fetch_trade", None)
    if not getattr(source, "serves_trades", True):  # an http preset without a latest trade
        trade = None
    return SourceTraits(
        name=str(getattr(source, "name", "source")),
        symbols=frozenset(symbols) if isinstance(symbols, (list, tuple, set, frozenset)) else None,
        self_paced=self_paced,
        fetch_batch=batch if self_paced and callable(batch) else None,
        plan=plan if callable(plan) else None,
        auth_retry_seconds=float(retry),
        fetch_trade=trade if callable(trade) else None,
        data=tuple(getattr(config, "data", None) or ("quotes",)),
        data_by_symbol=dict(getattr(config, "data_by_symbol", None) or {}),
    )


SourceFactory = Callable[..., Source]
_REGISTRY: dict[str, SourceFactory] = {}


def register_source(type_name: str, factory: SourceFactory) -> None:
    """Make ``source: {type: type_name}`` build a source with ``factory(config, **kw)``."""
    _REGISTRY[type_name] = factory


def create_source(config: Any, **kwargs: Any) -> Source:
    """Build the source that ``config.type`` names."""
    try:
        factory = _REGISTRY[config.type]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown source type {config.type!r}; known: {known}") from None
    return factory(config, **kwargs)
