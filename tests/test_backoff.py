"""Backoff schedules: the exact sequences RetryPolicy and ReconnectBackoff produced
before they shared one implementation, pinned for seeded random sources."""

from __future__ import annotations

import random

import pytest

from robust_collector.resilience import Backoff, RetryPolicy
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


# ------------------------------------------------------------------ Backoff


def test_backoff_grows_by_the_multiplier_up_to_the_cap() -> None:
    b = Backoff(initial=0.1, multiplier=2.0, cap=5.0)
    assert [b.delay(n) for n in range(1, 10)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert [Backoff(1.0, 3.0, 100.0).delay(n) for n in (1, 2, 3, 4, 5, 6)] == [
        1.0,
        3.0,
        9.0,
        27.0,
        81.0,
        100.0,
    ]


def test_backoff_with_multiplier_one_is_constant() -> None:
    assert {Backoff(2.5, 1.0, 60.0).delay(n) for n in range(1, 50)} == {2.5}


def test_backoff_never_overflows() -> None:
    assert Backoff(1.0, 2.0, 60.0).delay(10**9) == 60.0
    assert Backoff(1.0, 10.0, 60.0).delay(5000) == 60.0  # 10.0 ** 1000 overflows a float
    assert Backoff(0.0, 10.0, 60.0).delay(5000) == 0.0


def test_full_jitter_is_uniform_below_the_bound() -> None:
    b = Backoff(1.0, 2.0, 8.0, "full", rng=random.Random(1))
    draws = [b.delay(4) for _ in range(2000)]
    assert all(0.0 <= d <= 8.0 for d in draws)
    assert min(draws) < 0.5 and max(draws) > 7.5  # spread over the whole range


def test_equal_jitter_keeps_half_the_bound() -> None:
    b = Backoff(1.0, 2.0, 8.0, "equal", rng=random.Random(1))
    draws = [b.delay(4) for _ in range(2000)]
    assert all(4.0 <= d <= 8.0 for d in draws)
    assert min(draws) < 4.5 and max(draws) > 7.5


def test_decorrelated_jitter_draws_between_initial_and_three_times_prev() -> None:
    b = Backoff(1.0, 2.0, 30.0, "decorrelated", rng=random.Random(1))
    draws = [b.delay(1, prev=5.0) for _ in range(2000)]
    assert all(1.0 <= d <= 15.0 for d in draws)
    assert max(draws) > 14.0
    assert all(1.0 <= b.delay(1) <= 3.0 for _ in range(100))  # no prev: from initial
    assert Backoff(10.0, 2.0, 12.0, "decorrelated").delay(3, prev=12.0) <= 12.0


def test_same_seed_same_waits() -> None:
    def waits(seed: int) -> list[float]:
        b = Backoff(0.5, 2.0, 30.0, "full", rng=random.Random(seed))
        return [b.delay(n) for n in range(1, 8)]

    assert waits(4) == waits(4)
    assert waits(4) != waits(5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": -1.0},
        {"initial": float("nan")},
        {"multiplier": 0.5},
        {"cap": -1.0},
        {"jitter": "random"},
    ],
)
def test_backoff_refuses_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("jitter", ["none", "full", "equal", "decorrelated"])
def test_attempt_numbers_start_at_one(jitter: str) -> None:
    with pytest.raises(ValueError):
        Backoff(jitter=jitter).delay(0)  # type: ignore[arg-type]


def test_backoff_is_frozen_and_compares_by_settings() -> None:
    b = Backoff(0.1, 2.0, 5.0)
    with pytest.raises(AttributeError):
        b.cap = 10.0  # type: ignore[misc]
    assert b == Backoff(0.1, 2.0, 5.0, rng=random.Random(3))


def test_retry_policy_and_reconnect_backoff_share_one_schedule() -> None:
    p = RetryPolicy(retry_delay=0.5, max_delay=30.0, jitter="equal")
    assert p.backoff == Backoff(0.5, 2.0, 30.0, "equal")
    assert RetryPolicy(exponential_backoff=False).backoff.multiplier == 1.0
    r = ReconnectBackoff(0.5, 30.0)
    assert r.schedule == Backoff(0.5, 2.0, 30.0, "equal")


def test_retry_policy_settings_write_through_to_its_backoff() -> None:
    p = RetryPolicy(max_retries=4, retry_delay=1.0, max_delay=60.0)
    p.retry_delay = 3.0
    p.max_delay = 10.0
    assert p.delays() == [3.0, 6.0, 10.0]
    p.exponential_backoff = False
    assert (p.exponential_backoff, p.delays()) == (False, [3.0, 3.0, 3.0])
    p.jitter = "full"
    assert p.backoff.jitter == "full"
    assert all(0.0 <= d <= 3.0 for d in p.delays())


def test_reconnect_backoff_settings_write_through_to_its_schedule() -> None:
    b = ReconnectBackoff(1.0, 8.0, rng=lambda: 1.0)
    b.cap = 2.0
    b.base = 0.5
    assert [b.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
