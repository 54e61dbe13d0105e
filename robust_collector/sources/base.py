"""The ``Source`` protocol every feed implements, and the registry config picks from.

A polling source answers ``await fetch(symbol) -> Quote`` and numbers the quotes
it emits per symbol (seq 1, 2, 3, ...). Errors are typed (see ``errors``) so the
retry stage knows what to retry.
"""

from __future__ import annotations

from collections.abc import Callable
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
