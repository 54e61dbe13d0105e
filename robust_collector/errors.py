"""The exception types shared by every stage, so each stage can tell what to retry.

Retry reads two duck-typed attributes rather than exception classes, so user code
can mark its own errors: ``permanent = True`` (never retried) and ``retry_after``
(seconds the caller asked us to wait, e.g. from an HTTP 429).
"""

from __future__ import annotations

import math


def format_seconds(seconds: float) -> str:
    """Seconds for a human: ``2.47s``, ``300s``, ``1e+308s``; never a 300-digit number.

    Here, in the lowest layer, so every error message (and the retry log) prints waits alike.
    """
    try:
        x = float(seconds)
    except (TypeError, ValueError):
        return f"{seconds}s"
    if not math.isfinite(x):
        return f"{x}s"
    if abs(x) >= 1e6:
        return f"{x:.3g}s"
    return f"{round(x, 2):g}s"


class CollectorError(Exception):
    """Base class of every error raised by robust_collector."""


class ConfigError(CollectorError, ValueError):
    """A bad configuration value; the message is one line naming the key path."""

    def __init__(self, message: str, *, path: str = "", source: str = "") -> None:
        self.path = path
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + message)


class SourceError(CollectorError):
    """A fetch from a data source failed.

    ``permanent`` errors (bad credentials, unknown symbol) are never retried;
    ``retry_after`` (seconds) is honoured by the retry policy as a minimum wait.
    """

    permanent: bool = False

    def __init__(
        self,
        message: str,
        *,
        symbol: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.symbol = symbol
        self.retry_after = retry_after


class TransientSourceError(SourceError):
    """A failure worth retrying: timeouts, connection errors, 5xx answers."""


class RateLimitError(TransientSourceError):
    """The source asked us to slow down (HTTP 429); carries ``retry_after``."""


class PoolWaitError(TransientSourceError):
    """No free connection of our own pool within ``pool_timeout_seconds``: the API was
    not asked, so the fault is the pool's (other symbols hold every connection), never the
    API's; it is retried but never counts toward a breaker or the source's health."""


class PermanentSourceError(SourceError):
    """A failure that retrying cannot fix: bad credentials, unknown symbol."""

    permanent = True


class EndOfData(SourceError):
    """A replayed symbol has no rows left: the collector stops polling it.

    Not a failure: no error row, no breaker count; ``permanent`` only so that a
    retry policy never retries it. ``served`` is how many rows were replayed.
    """

    permanent = True

    def __init__(self, message: str, *, symbol: str, served: int) -> None:
        super().__init__(message, symbol=symbol)
        self.served = served


class CircuitOpenError(CollectorError):
    """A call was refused because its circuit breaker is OPEN (or HALF_OPEN and full).

    Carries the breaker ``name`` and ``retry_after``: seconds until a trial call
    will be allowed.
    """

    permanent = True  # retrying while the breaker is open only wastes the wait

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = max(0.0, float(retry_after))
        super().__init__(
            f"circuit {name!r} is open; retry after {format_seconds(self.retry_after)}"
        )


class StorageError(CollectorError):
    """The database could not take a write (locked, read-only, full, missing)."""
