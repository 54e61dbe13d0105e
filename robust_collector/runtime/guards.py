"""The guards around the source: per-symbol circuit breakers, retry policies, one rate gate.

Built from ``realtime_data`` once per collector; every breaker change (a symbol's or
the database's) becomes a ``breaker_events`` row and the symbol's "since/why".
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from robust_collector.config import Config
from robust_collector.errors import EndOfData, PoolWaitError, RateLimitError, format_seconds
from robust_collector.model import now_us
from robust_collector.resilience import (
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    RateLimitGate,
    RetryPolicy,
)
from robust_collector.runtime.pipeline import Pipeline
from robust_collector.secrets import redact, scrub
from robust_collector.storage.tables import INSERT_BREAKER_EVENT

__all__ = ["Guards"]

TRADES_SUFFIX = "trades"  # a symbol's trade polls have their own breaker: ``SYM:trades``

log = logging.getLogger("robust_collector.collector")


def _not_a_breaker_failure(exc: BaseException) -> bool:
    """A 429 (or 503 with Retry-After) only slows the source through the shared gate,
    refused credentials pause the whole source, and a wait for a free connection of our
    pool never reached the API: none of them is this symbol's failure."""
    return isinstance(exc, (RateLimitError, PoolWaitError)) or bool(
        getattr(exc, "source_wide", False)
    )


class Guards:
    """The breakers (None when disabled), one retry policy per symbol, the source's gate."""

    def __init__(self, config: Config, source_name: str, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.transitions = 0
        rt = config.realtime_data
        cb = rt.circuit_breaker
        self.breakers: BreakerRegistry | None = None
        if cb.enabled:
            self.breakers = BreakerRegistry(
                failure_threshold=cb.failure_threshold,
                timeout_seconds=cb.timeout_seconds,
                success_threshold=cb.success_threshold,
                half_open_max_calls=cb.half_open_max_calls,
                exclude=(EndOfData,),
                ignore=_not_a_breaker_failure,
            )
            self.breakers.add_listener(self.on_breaker)
            for sym in pipeline.symbols:
                self.breakers.get(sym)
        r = rt.retry
        # one gate per source: a 429 for one symbol makes every symbol wait
        self.rate_gate = RateLimitGate(source_name)
        self.retries: dict[str, RetryPolicy] = {
            sym: RetryPolicy(
                max_retries=r.max_retries,
                retry_delay=r.retry_delay,
                exponential_backoff=r.exponential_backoff,
                max_delay=r.max_delay,
                jitter=r.jitter,
                deadline=r.deadline_seconds,
                gate=self.rate_gate,
                on_retry=_retry_hook(sym),
            )
            for sym in pipeline.symbols
        }

    def breaker(self, name: str) -> CircuitBreaker | None:
        """The breaker of ``name`` (a symbol, or a stream's name); None when disabled."""
        return None if self.breakers is None else self.breakers.get(name)

    def trade_breaker(self, symbol: str) -> CircuitBreaker | None:
        """The breaker of ``symbol``'s trade polls (``SYM:trades``) once a trade poll made
        it; None before, with breakers disabled, or for a stream (one breaker for all)."""
        name = f"{symbol}:{TRADES_SUFFIX}"
        reg = self.breakers
        return reg.get(name) if reg is not None and name in reg else None

    def on_breaker(self, name: str, old: BreakerState, new: BreakerState, reason: str) -> None:
        """A breaker changed state (any thread): a row, and the symbol's since/why."""
        self.transitions += 1
        ts = now_us()
        counters = self.pipeline.counters
        c = counters.get(name)
        if c is not None:
            c.breaker_since_us = ts
            c.breaker_reason = scrub(reason)
        elif name.endswith(f":{TRADES_SUFFIX}"):  # a symbol's trade breaker
            c = counters.get(name[: -len(TRADES_SUFFIX) - 1])
            if c is not None:
                c.trade_breaker_since_us = ts
                c.trade_breaker_reason = scrub(reason)
        self.pipeline.event(
            INSERT_BREAKER_EVENT,
            (self.pipeline.run_id, ts, name, old.value, new.value, scrub(reason)),
        )


def _retry_hook(symbol: str) -> Callable[[int, float, BaseException], None]:
    def hook(attempt: int, delay: float, exc: BaseException) -> None:
        log.info(
            "%s: attempt %d failed (%s); retrying in %s",
            symbol,
            attempt,
            redact(str(exc)),
            format_seconds(delay),
        )

    return hook
