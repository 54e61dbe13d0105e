"""RetryPolicy's sync and async paths drive one retry engine: the same scenario run
through ``call`` and ``call_async`` must try, wait, notify, count and fail alike."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from robust_collector.errors import (
    CircuitOpenError,
    PermanentSourceError,
    RateLimitError,
    TransientSourceError,
)
from robust_collector.resilience import (
    CircuitBreaker,
    ManualClock,
    RateLimitGate,
    RetryInterrupted,
    RetryPolicy,
)


@dataclass
class Setup:
    """One scenario's pieces, built afresh for each run."""

    errors: list[BaseException]
    policy: dict[str, Any] = field(default_factory=dict)
    breaker: dict[str, Any] | None = None
    gate_blocked_for: float | None = None
    gate: bool = False
    interrupt_after_sleep: bool = False


def glitches(n: int) -> list[BaseException]:
    return [TransientSourceError(f"glitch {i}") for i in range(n)]


SCENARIOS: dict[str, Callable[[], Setup]] = {
    "recovers on the third attempt": lambda: Setup(glitches(2)),
    "gives up after max attempts": lambda: Setup(glitches(5)),
    "single attempt": lambda: Setup(glitches(1), {"max_retries": 1}),
    "deadline ends it": lambda: Setup(glitches(10), {"max_retries": 10, "deadline": 10}),
    "permanent error": lambda: Setup([PermanentSourceError("unknown symbol")]),
    "not in retry_on": lambda: Setup([ValueError("a bug")], {"retry_on": (TransientSourceError,)}),
    "retry_after beyond max_delay, shared gate": lambda: Setup(
        [RateLimitError("429", retry_after=90), TransientSourceError("x")],
        {"max_delay": 60},
        gate=True,
    ),
    "gate closed before the first attempt": lambda: Setup(
        [RateLimitError("429", retry_after=5)], gate_blocked_for=12
    ),
    "equal jitter": lambda: Setup(
        glitches(3), {"max_retries": 4, "jitter": "equal", "rng": random.Random(3)}
    ),
    "decorrelated jitter, gives up": lambda: Setup(
        glitches(9),
        {"max_retries": 6, "jitter": "decorrelated", "rng": random.Random(5), "max_delay": 9},
    ),
    "breaker opens mid-retry": lambda: Setup(
        glitches(10), {"max_retries": 5}, breaker={"failure_threshold": 2}
    ),
    "interrupted while waiting": lambda: Setup(
        glitches(5), {"max_retries": 5}, interrupt_after_sleep=True
    ),
    "cancelled by a base exception": lambda: Setup([*glitches(1), KeyboardInterrupt()]),
}


def describe(exc: BaseException) -> tuple[object, ...]:
    """An error as comparable data (the sync and async runs raise distinct instances)."""
    extra: tuple[object, ...] = ()
    if isinstance(exc, RetryInterrupted):
        last = exc.last_error
        extra = (exc.attempts, None if last is None else str(last), str(exc.__cause__))
    if isinstance(exc, CircuitOpenError):
        extra = (exc.retry_after,)
    return (type(exc).__name__, str(exc), tuple(getattr(exc, "__notes__", ())), *extra)


def run(name: str, mode: str) -> dict[str, object]:
    """Run scenario ``name`` through ``call`` (mode "sync") or ``call_async`` ("async")."""
    setup = SCENARIOS[name]()
    clock = ManualClock()
    event = threading.Event() if setup.interrupt_after_sleep else None
    hooks: list[tuple[int, float, str]] = []
    times: list[float] = []
    errors = list(setup.errors)

    def fetch() -> str:
        times.append(clock())
        if errors:
            raise errors.pop(0)
        return "ok"

    async def fetch_async() -> str:
        await asyncio.sleep(0)
        return fetch()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if event is not None:
            event.set()

    async def async_sleep(seconds: float) -> None:
        await clock.async_sleep(seconds)
        if event is not None:
            event.set()

    gate = None
    if setup.gate or setup.gate_blocked_for is not None:
        gate = RateLimitGate(clock=clock)
        if setup.gate_blocked_for is not None:
            gate.block_for(setup.gate_blocked_for)
    policy = RetryPolicy(
        clock=clock,
        sleep=sleep,
        async_sleep=async_sleep,
        interrupt=event,
        gate=gate,
        on_retry=lambda attempt, wait, exc: hooks.append((attempt, wait, str(exc))),
        **setup.policy,
    )
    breaker = (
        None if setup.breaker is None else CircuitBreaker("SPY", clock=clock, **setup.breaker)  # type: ignore[arg-type]
    )
    outcome: tuple[object, ...]
    try:
        if mode == "sync":
            result = policy.call(fetch) if breaker is None else policy.call(breaker.call, fetch)
        elif breaker is None:
            result = asyncio.run(policy.call_async(fetch_async))
        else:
            result = asyncio.run(policy.call_async(breaker.call_async, fetch_async))
        outcome = ("returned", result)
    except BaseException as exc:  # the transcript records whatever ended the call
        outcome = ("raised", *describe(exc))
    return {
        "outcome": outcome,
        "attempt times": times,
        "sleeps": clock.sleeps,
        "on_retry": hooks,
        "stats": policy.stats,
        "breaker": None if breaker is None else breaker.stats.as_dict(),
        "gate blocks": None if gate is None else gate.blocks,
    }


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_sync_and_async_retries_behave_identically(name: str) -> None:
    assert run(name, "async") == run(name, "sync")


def test_the_transcripts_are_what_the_docs_promise() -> None:
    """Spot checks, so identical-but-wrong runs cannot pass the comparison above."""
    ok = run("recovers on the third attempt", "async")
    assert ok["outcome"] == ("returned", "ok")
    assert ok["attempt times"] == [0.0, 1.0, 3.0]
    assert ok["on_retry"] == [(1, 1.0, "glitch 0"), (2, 2.0, "glitch 1")]

    gave_up = run("gives up after max attempts", "async")
    assert gave_up["outcome"] == (
        "raised",
        "TransientSourceError",
        "glitch 2",
        ("robust_collector.RetryPolicy: gave up after 3 attempts",),
    )

    deadline = run("deadline ends it", "async")
    assert deadline["attempt times"] == [0.0, 1.0, 3.0, 7.0]

    gate = run("retry_after beyond max_delay, shared gate", "async")
    assert gate["sleeps"] == [90.0, 2.0]

    opened = run("breaker opens mid-retry", "async")
    assert opened["outcome"][1] == "CircuitOpenError"
    assert opened["sleeps"] == [1.0]

    interrupted = run("interrupted while waiting", "async")
    assert interrupted["outcome"][1] == "RetryInterrupted"
    assert interrupted["stats"].interrupted == 1  # type: ignore[attr-defined]

    cancelled = run("cancelled by a base exception", "async")
    assert cancelled["outcome"][1] == "KeyboardInterrupt"
    assert cancelled["stats"].cancelled == 1  # type: ignore[attr-defined]
    assert cancelled["stats"].attempts == 2  # type: ignore[attr-defined]
