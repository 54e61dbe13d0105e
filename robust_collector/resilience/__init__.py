"""Resilience primitives: circuit breakers, retry policies, backoff and a shared rate-limit gate.

The collector wraps each fetch as ``retry( breaker( fetch ) )``: every failed
attempt counts toward the symbol's breaker, and an open breaker ends the retries.
"""

from robust_collector.resilience.backoff import Backoff, JitterMode
from robust_collector.resilience.breaker import (
    BreakerListener,
    BreakerState,
    BreakerStats,
    CircuitBreaker,
)
from robust_collector.resilience.clock import ManualClock
from robust_collector.resilience.ratelimit import RateLimitGate
from robust_collector.resilience.registry import BreakerRegistry
from robust_collector.resilience.retry import (
    RetryInterrupted,
    RetryPolicy,
    RetryStats,
)

__all__ = [
    "Backoff",
    "BreakerListener",
    "BreakerRegistry",
    "BreakerState",
    "BreakerStats",
    "CircuitBreaker",
    "JitterMode",
    "ManualClock",
    "RateLimitGate",
    "RetryInterrupted",
    "RetryPolicy",
    "RetryStats",
]
