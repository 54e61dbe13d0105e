"""RateLimitGate: the per-source "slow down" signal shared by all symbols."""

from __future__ import annotations

import asyncio
import threading

from robust_collector.resilience import ManualClock, RateLimitGate


def test_a_new_gate_is_open() -> None:
    gate = RateLimitGate(clock=ManualClock())
    assert gate.is_open()
    assert gate.remaining() == 0.0
    assert gate.wait(lambda _s: None) == 0.0


def test_block_for_closes_it_until_the_time_passes() -> None:
    clock = ManualClock()
    gate = RateLimitGate("demo", clock=clock)
    gate.block_for(60)
    assert not gate.is_open()
    clock.advance(45)
    assert gate.remaining() == 15
    clock.advance(15)
    assert gate.is_open()
    assert repr(gate) == "<RateLimitGate 'demo' remaining=0.0s>"


def test_a_shorter_block_never_shortens_a_longer_one() -> None:
    clock = ManualClock()
    gate = RateLimitGate(clock=clock)
    gate.block_for(60)
    gate.block_for(5)
    assert gate.remaining() == 60
    clock.advance(10)
    gate.block_for(70)
    assert gate.remaining() == 70
    assert gate.blocks == 3


def test_non_positive_or_nan_blocks_are_ignored() -> None:
    gate = RateLimitGate(clock=ManualClock())
    for seconds in (0, -5, float("nan")):
        gate.block_for(seconds)
    assert gate.is_open()
    assert gate.blocks == 0


def test_reopen_drops_the_block() -> None:
    gate = RateLimitGate(clock=ManualClock())
    gate.block_for(60)
    gate.reopen()
    assert gate.is_open()


def test_wait_sleeps_the_remaining_time() -> None:
    clock = ManualClock()
    gate = RateLimitGate(clock=clock)
    gate.block_for(30)
    clock.advance(10)
    assert gate.wait(clock.sleep) == 20
    assert clock.sleeps == [20]
    assert gate.is_open()


def test_wait_honours_a_block_extended_while_sleeping() -> None:
    clock = ManualClock()
    gate = RateLimitGate(clock=clock)
    gate.block_for(10)

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 1:
            gate.block_for(5)  # another symbol hit the limit meanwhile

    assert gate.wait(sleep) == 15
    assert clock.sleeps == [10, 5]


def test_wait_does_not_spin_when_the_sleep_returns_early() -> None:
    clock = ManualClock()
    gate = RateLimitGate(clock=clock)
    gate.block_for(10)
    slept: list[float] = []
    assert gate.wait(slept.append) == 10  # an interrupted sleep: the clock did not move
    assert slept == [10]
    assert not gate.is_open()


def test_wait_async() -> None:
    clock = ManualClock()
    gate = RateLimitGate(clock=clock)
    gate.block_for(8)
    assert asyncio.run(gate.wait_async(clock.async_sleep)) == 8
    assert clock() == 8


def test_block_for_is_thread_safe_and_keeps_the_latest_end() -> None:
    clock = ManualClock()
    gate = RateLimitGate(clock=clock)
    barrier = threading.Barrier(8, timeout=5)

    def worker(seconds: int) -> None:
        barrier.wait()
        for _ in range(200):
            gate.block_for(seconds)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert gate.remaining() == 8
    assert gate.blocks == 1600
