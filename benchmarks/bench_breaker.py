"""Per-call overhead of CircuitBreaker (CLOSED state) and RetryPolicy vs other libraries.

Run: ``python -m benchmarks.bench_breaker [--rounds 7] [--calls 100000]``

Every candidate runs the same loop around the same trivial function; rounds are
interleaved (each round times every candidate once, in a shuffled order) so
machine noise hits all of them alike; the table shows the best and the median
round in ns per call. pybreaker, circuitbreaker and tenacity are imported lazily
and reported as "not installed" when absent. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from robust_collector.resilience import CircuitBreaker, RetryPolicy

Runner = Callable[[int], float]
"""Runs ``n`` calls and returns the elapsed nanoseconds."""


@dataclass
class Candidate:
    """One row of a table: a label and a runner, or the reason it cannot run."""

    label: str
    runner: Runner | None
    note: str = ""
    samples: list[float] = field(default_factory=list)


def target(x: int) -> int:
    """The wrapped function: as cheap as possible, so only the wrapper is measured."""
    return x


async def atarget(x: int) -> int:
    """The async twin of :func:`target`."""
    return x


def optional(module: str) -> Any | None:
    """Import ``module`` if it is installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


# ------------------------------------------------------------------ loops


def time_fn(fn: Callable[[int], Any]) -> Runner:
    def run(n: int) -> float:
        start = time.perf_counter_ns()
        for i in range(n):
            fn(i)
        return time.perf_counter_ns() - start

    return run


def time_call(call: Callable[..., Any], fn: Callable[[int], Any]) -> Runner:
    def run(n: int) -> float:
        start = time.perf_counter_ns()
        for i in range(n):
            call(fn, i)
        return time.perf_counter_ns() - start

    return run


def time_primitives(breaker: CircuitBreaker) -> Runner:
    def run(n: int) -> float:
        before, success = breaker.before_call, breaker.on_success
        start = time.perf_counter_ns()
        for i in range(n):
            token = before()
            target(i)
            success(token)
        return time.perf_counter_ns() - start

    return run


def time_async(loop: asyncio.AbstractEventLoop, make: Callable[[int], Awaitable[float]]) -> Runner:
    return lambda n: loop.run_until_complete(make(n))


def aloop_fn(fn: Callable[[int], Awaitable[Any]]) -> Callable[[int], Awaitable[float]]:
    async def run(n: int) -> float:
        start = time.perf_counter_ns()
        for i in range(n):
            await fn(i)
        return time.perf_counter_ns() - start

    return run


def aloop_call(
    call: Callable[..., Awaitable[Any]], fn: Callable[[int], Awaitable[Any]]
) -> Callable[[int], Awaitable[float]]:
    async def run(n: int) -> float:
        start = time.perf_counter_ns()
        for i in range(n):
            await call(fn, i)
        return time.perf_counter_ns() - start

    return run


# ------------------------------------------------------------- candidates


def sync_breakers() -> list[Candidate]:
    ours = CircuitBreaker("bench")
    decorated = CircuitBreaker("bench-decorated")(target)
    windowed = CircuitBreaker("bench-rate", failure_rate_threshold=0.5)
    rows = [
        Candidate("bare function call", time_fn(target)),
        Candidate("ours: breaker.call(fn, x)", time_call(ours.call, target)),
        Candidate("ours: @breaker", time_fn(decorated)),
        Candidate("ours: before_call/on_success", time_primitives(CircuitBreaker("bench-p"))),
        Candidate("ours: call(), failure-rate mode", time_call(windowed.call, target)),
    ]
    pybreaker = optional("pybreaker")
    if pybreaker is None:
        rows.append(Candidate("pybreaker", None, "not installed"))
    else:
        version = _dist_version("pybreaker")
        pb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
        rows.append(Candidate(f"pybreaker {version}: call(fn, x)", time_call(pb.call, target)))
    circuitbreaker = optional("circuitbreaker")
    if circuitbreaker is None:
        rows.append(Candidate("circuitbreaker", None, "not installed"))
    else:
        version = _dist_version("circuitbreaker")
        cb = circuitbreaker.CircuitBreaker(failure_threshold=5, recovery_timeout=60, name="b")
        rows.append(Candidate(f"circuitbreaker {version}: @circuit", time_fn(cb(target))))
    return rows


def async_breakers(loop: asyncio.AbstractEventLoop) -> list[Candidate]:
    ours = CircuitBreaker("bench-async")
    decorated = CircuitBreaker("bench-async-decorated")(atarget)
    rows = [
        Candidate("bare await", time_async(loop, aloop_fn(atarget))),
        Candidate(
            "ours: await call_async(fn, x)", time_async(loop, aloop_call(ours.call_async, atarget))
        ),
        Candidate("ours: @breaker (async def)", time_async(loop, aloop_fn(decorated))),
    ]
    circuitbreaker = optional("circuitbreaker")
    if circuitbreaker is None:
        rows.append(Candidate("circuitbreaker", None, "not installed"))
    else:
        version = _dist_version("circuitbreaker")
        cb = circuitbreaker.CircuitBreaker(failure_threshold=5, recovery_timeout=60, name="a")
        rows.append(
            Candidate(
                f"circuitbreaker {version}: @circuit (async def)",
                time_async(loop, aloop_fn(cb(atarget))),
            )
        )
    rows.append(
        Candidate(
            "pybreaker",
            None,
            "skipped: its call_async is a tornado coroutine holding the lock across the await",
        )
    )
    return rows


def retries() -> list[Candidate]:
    policy = RetryPolicy(max_retries=3, retry_delay=1.0)
    breaker = CircuitBreaker("bench-retry")
    rows = [
        Candidate("bare function call", time_fn(target)),
        Candidate("ours: policy.call(fn, x)", time_call(policy.call, target)),
        Candidate("ours: @policy", time_fn(policy(target))),
        Candidate(
            "ours: policy.call(breaker.call, fn, x)",
            time_fn(lambda x: policy.call(breaker.call, target, x)),
        ),
    ]
    tenacity = optional("tenacity")
    if tenacity is None:
        rows.append(Candidate("tenacity", None, "not installed"))
    else:
        version = _dist_version("tenacity")
        decorated = tenacity.retry(
            stop=tenacity.stop_after_attempt(3),
            wait=tenacity.wait_exponential(multiplier=1, max=60),
            reraise=True,
        )(target)
        rows.append(Candidate(f"tenacity {version}: @retry", time_fn(decorated)))
    return rows


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return ""


# ------------------------------------------------------------ measuring


def measure(rows: list[Candidate], rounds: int, calls: int, rng: random.Random) -> None:
    """Time every runnable candidate once per round, in a shuffled order each round."""
    runnable = [row for row in rows if row.runner is not None]
    for row in runnable:  # warm up: caches, specialisation of the 3.11 interpreter
        assert row.runner is not None
        row.runner(min(calls, 10_000))
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            rng.shuffle(runnable)
            for row in runnable:
                assert row.runner is not None
                row.samples.append(row.runner(calls) / calls)
    finally:
        if gc_was_enabled:
            gc.enable()


def print_table(title: str, rows: list[Candidate], ours_label: str) -> None:
    """Print best and median ns/call, the overhead over the bare call and the ratio to ours."""
    print(f"\n{title}")
    header = f"  {'candidate':<48} {'best ns':>8} {'median':>8} {'overhead':>9} {'vs ours':>8}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    bare = min(rows[0].samples) if rows[0].samples else 0.0
    ours = next((min(r.samples) for r in rows if r.label == ours_label and r.samples), None)
    for row in rows:
        if not row.samples:
            print(f"  {row.label:<48} {row.note}")
            continue
        best = min(row.samples)
        median = statistics.median(row.samples)
        overhead = "-" if row is rows[0] else f"{best - bare:9.0f}"
        ratio = "-" if row is rows[0] or not ours else f"{best / ours:7.2f}x"
        print(f"  {row.label:<48} {best:8.0f} {median:8.0f} {overhead:>9} {ratio:>8}")


def main(argv: list[str] | None = None) -> None:
    """Run all three tables and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--calls", type=int, default=100_000, help="calls per round")
    parser.add_argument("--seed", type=int, default=0, help="seed of the order shuffling")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.machine()}, {args.rounds} interleaved rounds x {args.calls} calls; "
        "ns per call (lower is better); 'vs ours' = candidate / ours"
    )

    rows = sync_breakers()
    measure(rows, args.rounds, args.calls, rng)
    print_table("Circuit breaker, sync, CLOSED state", rows, "ours: breaker.call(fn, x)")

    loop = asyncio.new_event_loop()
    try:
        rows = async_breakers(loop)
        measure(rows, args.rounds, args.calls, rng)
    finally:
        loop.close()
    print_table("Circuit breaker, async, CLOSED state", rows, "ours: await call_async(fn, x)")

    rows = retries()
    measure(rows, args.rounds, args.calls, rng)
    print_table("Retry policy, call that succeeds first time", rows, "ours: policy.call(fn, x)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
