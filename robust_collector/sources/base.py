"""The ``Source`` protocol every feed implements, and the registry config picks from.

A polling source answers ``await fetch(symbol) -> Quote`` and numbers the quotes
it emits per symbol (seq 1, 2, 3, ...). Errors are typed (see ``errors``) so the
retry stage knows what to retry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from robust_collector.model import Quote


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


@dataclass(frozen=True)
class SourceTraits:
    """What a source offers beyond ``fetch``, read once when the collector is built, so
    the runtime asks these fields instead of probing the source with getattr/hasattr."""

    name: str
    symbols: frozenset[str] | None = None  # the only symbols it can serve (a replay's file)
    self_paced: bool = False  # poll without an interval (a replay at full speed)
    fetch_batch: Callable[[str, int], Awaitable[list[Quote]]] | None = None
    plan: Callable[[tuple[str, ...]], None] | None = None  # told the symbols before start
    auth_retry_seconds: float = 60.0  # between probes while credentials are refused


def traits_of(source: Any) -> SourceTraits:
    """The optional attributes a source declares (see ``SourceTraits``), in one place."""
    symbols = getattr(source, "symbols", None)
    batch = getattr(source, "fetch_batch", None)
    plan = getattr(source, "plan", None)
    self_paced = bool(getattr(source, "self_paced", False))
    retry = getattr(getattr(source, "config", None), "auth_retry_seconds", 60.0)
    return SourceTraits(
        name=str(getattr(source, "name", "source")),
        symbols=frozenset(symbols) if isinstance(symbols, (list, tuple, set, frozenset)) else None,
        self_paced=self_paced,
        fetch_batch=batch if self_paced and callable(batch) else None,
        plan=plan if callable(plan) else None,
        auth_retry_seconds=float(retry),
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
