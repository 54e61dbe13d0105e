"""Backoff schedules: the exact sequences RetryPolicy and ReconnectBackoff produced
before they shared one implementation, pinned for seeded random sources."""

from __future__ import annotations

import random

import pytest

from robust_collector.resilience import RetryPolicy
from robust_collector.sources.stream import ReconnectBackoff

# ----------------------------------------------- pinned sequences (do not edit)
# Produced by the pre-Backoff code; any drift here changes what users wait.

RETRY_PINS: list[tuple[dict[str, object], list[float]]] = [
    (
        {"jitter": "none", "max_retries": 10, "retry_delay": 0.5, "max_delay": 30.0},
        [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0],
    ),
    (
        {"jitter": "none", "max_retries": 5, "retry_delay": 2.5, "exponential_backoff": False},
        [2.5, 2.5, 2.5, 2.5],
    ),
    (
        {"jitter": "full", "max_retries": 10, "retry_delay": 0.5, "max_delay": 30.0},
        [
            0.2261897767549093,
            0.559772386080496,
            1.8484211680474587,
            1.8626002803990933,
            4.062730184498169,
            9.398157261598351,
            5.5398103156462986,
            15.357259171254166,
            18.896481606504057,
        ],
    ),
    (
        {"jitter": "equal", "max_retries": 10, "retry_delay": 0.5, "max_delay": 30.0},
        [
            0.3630948883774546,
            0.779886193040248,
            1.9242105840237294,
            2.9313001401995464,
            6.031365092249084,
            12.699078630799175,
            17.76990515782315,
            22.678629585627082,
            24.448240803252027,
        ],
    ),
    (
        {"jitter": "equal", "max_retries": 5, "retry_delay": 0.3, "exponential_backoff": False},
        [0.2178569330264728, 0.2339658579120744, 0.2886315876035594, 0.21984751051496598],
    ),
    (
        {"jitter": "decorrelated", "max_retries": 10, "retry_delay": 0.5, "max_delay": 30.0},
        [
            0.9523795535098186,
            1.8194611323271577,
            5.08259041513781,
            7.367300714242186,
            11.470337484728857,
            20.418814246529102,
            11.719305607691314,
            18.24168703292388,
            30.0,
        ],
    ),
]


@pytest.mark.parametrize(("kwargs", "expected"), RETRY_PINS, ids=lambda v: str(v)[:40])
def test_retry_policy_delays_are_the_pinned_sequence(
    kwargs: dict[str, object], expected: list[float]
) -> None:
    p = RetryPolicy(rng=random.Random(11), **kwargs)  # type: ignore[arg-type]
    assert p.delays() == expected


def test_retry_policy_exponent_stops_growing_at_two_to_the_thousand() -> None:
    p = RetryPolicy(retry_delay=1e-300, max_delay=1e308)
    assert p.compute_delay(5000) == 1e-300 * 2.0**1000


def test_reconnect_backoff_is_the_pinned_equal_jitter_sequence() -> None:
    b = ReconnectBackoff(0.5, 30.0, rng=random.Random(11).random)
    assert [b.next_delay() for _ in range(9)] == RETRY_PINS[3][1]
    assert b.attempts == 9
    assert b.next_delay(100.0) == 100.0  # a floor above the wait wins
    assert b.next_delay(0.1) == 16.411851843438278  # and a floor below it does not


def test_reconnect_backoff_reset_starts_the_schedule_again() -> None:
    b = ReconnectBackoff(0.5, 30.0, rng=lambda: 0.0)
    assert [b.next_delay() for _ in range(3)] == [0.25, 0.5, 1.0]
    b.reset()
    assert b.attempts == 0
    assert b.next_delay() == 0.25


def test_reconnect_backoff_growth_stops_at_two_to_the_sixty() -> None:
    b = ReconnectBackoff(1e-12, 1e30, rng=lambda: 1.0)
    waits = [b.next_delay() for _ in range(70)]
    assert waits[60] == waits[69] == 1e-12 * 2**60
    assert waits[59] == 1e-12 * 2**59


def test_reconnect_backoff_cap_below_base_is_raised_to_base() -> None:
    b = ReconnectBackoff(4.0, 1.0, rng=lambda: 1.0)
    assert b.cap == 4.0
    assert [b.next_delay() for _ in range(3)] == [4.0, 4.0, 4.0]
