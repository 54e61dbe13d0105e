"""The simulated feed: realistic, deterministic for a seed, and every fault knob works."""

from __future__ import annotations

import asyncio
import math

import pytest

from robust_collector.errors import RateLimitError, TransientSourceError
from robust_collector.resilience import ManualClock
from robust_collector.sources import SimulatedSource, create_source
from robust_collector.sources.settings import FaultConfig, OutageConfig, SimulatedSourceConfig


def make(
    faults: FaultConfig | None = None, seed: int = 42, **kw
) -> tuple[SimulatedSource, ManualClock]:
    """A source on a manual clock (its sleeps advance it); wall time is the same clock."""
    ft = ManualClock(1000.0)
    cfg = SimulatedSourceConfig(seed=seed, faults=faults or FaultConfig(), **kw)
    src = SimulatedSource(
        cfg, clock_us=lambda: int(ft() * 1_000_000), monotonic=ft, sleep=ft.async_sleep
    )
    asyncio.run(src.start("run1"))
    return src, ft


def fetch_n(src: SimulatedSource, symbol: str, n: int) -> list:
    async def go():
        out = []
        for _ in range(n):
            try:
                out.append(await src.fetch(symbol))
            except Exception as exc:
                out.append(exc)
        return out

    return asyncio.run(go())


def values(q):
    return (q.bid, q.ask, q.bid_size, q.ask_size)


def test_same_seed_same_quotes_different_seed_different():
    a, _ = make(seed=7)
    b, _ = make(seed=7)
    c, _ = make(seed=8)
    qa, qb, qc = (fetch_n(s, "SPY", 50) for s in (a, b, c))
    assert [values(q) for q in qa] == [values(q) for q in qb]
    assert [values(q) for q in qa] != [values(q) for q in qc]


def test_a_symbols_path_does_not_depend_on_other_symbols():
    a, _ = make()
    b, _ = make()
    fetch_n(b, "QQQ", 17)  # interleave another symbol on b only
    assert [values(q) for q in fetch_n(a, "SPY", 30)] == [values(q) for q in fetch_n(b, "SPY", 30)]


@pytest.mark.parametrize(
    ("symbol", "lo", "hi"), [("SPY", 450, 600), ("QQQ", 380, 520), ("IWM", 180, 240)]
)
def test_prices_and_spreads_are_realistic(symbol, lo, hi):
    src, _ = make()
    quotes = fetch_n(src, symbol, 2000)
    for q in quotes:
        assert lo <= q.bid < q.ask <= hi
        assert 0.01 <= round(q.ask - q.bid, 2) <= 0.04
        assert q.bid_size > 0 and q.ask_size > 0
        assert q.source == "simulated"


def test_sequence_numbers_and_tick_ids():
    src, _ = make()
    qs = fetch_n(src, "SPY", 5) + fetch_n(src, "QQQ", 3)
    assert [q.seq for q in qs] == [1, 2, 3, 4, 5, 1, 2, 3]
    assert qs[0].tick_id == "run1:SPY:1"
    assert len({q.tick_id for q in qs}) == 8
    assert src.emitted == {"SPY": 5, "QQQ": 3}


def test_timestamps_come_from_the_injected_clock():
    src, ft = make()
    ft.advance(2000.5 - ft())
    (q,) = fetch_n(src, "SPY", 1)
    assert q.ts_us == q.recv_us == 2_000_500_000


def test_error_rate_one_fails_every_fetch_without_using_a_sequence_number():
    src, _ = make(FaultConfig(error_rate=1.0))
    out = fetch_n(src, "SPY", 5)
    assert all(isinstance(e, TransientSourceError) for e in out)
    assert src.emitted == {"SPY": 0}


def test_error_rate_is_roughly_the_configured_probability():
    src, _ = make(FaultConfig(error_rate=0.2))
    out = fetch_n(src, "SPY", 2000)
    errors = sum(isinstance(e, Exception) for e in out)
    assert 300 < errors < 500
    good = [q for q in out if not isinstance(q, Exception)]
    assert [q.seq for q in good] == list(range(1, len(good) + 1))


def test_latency_is_awaited_through_the_injected_sleep():
    src, ft = make(FaultConfig(latency_seconds=0.5, symbol_latency_seconds={"IWM": 2.0}))
    fetch_n(src, "SPY", 1)
    fetch_n(src, "IWM", 1)
    assert ft.sleeps == [0.5, 2.5]


def test_outage_window_from_config():
    src, ft = make(FaultConfig(outages=(OutageConfig(start_seconds=10, duration_seconds=5),)))
    assert not isinstance(fetch_n(src, "SPY", 1)[0], Exception)
    ft.advance(10)
    assert isinstance(fetch_n(src, "SPY", 1)[0], TransientSourceError)
    ft.advance(4.9)
    assert isinstance(fetch_n(src, "QQQ", 1)[0], TransientSourceError)
    ft.advance(0.2)
    assert not isinstance(fetch_n(src, "SPY", 1)[0], Exception)


def test_outage_injected_at_run_time():
    src, ft = make()
    src.outage(3.0)
    assert isinstance(fetch_n(src, "SPY", 1)[0], TransientSourceError)
    ft.advance(3.0)
    assert not isinstance(fetch_n(src, "SPY", 1)[0], Exception)


def test_failing_symbol_fails_alone_and_heals():
    src, _ = make(FaultConfig(failing_symbols=("IWM",)))
    assert all(isinstance(e, TransientSourceError) for e in fetch_n(src, "IWM", 3))
    assert not any(isinstance(e, Exception) for e in fetch_n(src, "SPY", 3))
    src.heal("IWM")
    assert not isinstance(fetch_n(src, "IWM", 1)[0], Exception)
    src.fail("SPY")
    assert isinstance(fetch_n(src, "SPY", 1)[0], TransientSourceError)


def test_rate_limit_carries_retry_after():
    src, _ = make(FaultConfig(rate_limit_rate=1.0, rate_limit_retry_after_seconds=7.5))
    (err,) = fetch_n(src, "SPY", 1)
    assert isinstance(err, RateLimitError)
    assert err.retry_after == 7.5
    assert not err.permanent


def test_bad_ticks_are_every_kind_and_keep_sequence_numbers():
    src, _ = make(FaultConfig(bad_tick_rate=1.0))
    out = fetch_n(src, "SPY", 400)
    assert [q.seq for q in out] == list(range(1, 401))
    bad = src.bad_ticks("SPY")
    assert sorted(bad) == list(range(1, 401))
    assert set(bad.values()) == {"spike", "crossed", "nan", "zero"}
    assert any(q.bid is not None and math.isnan(q.bid) for q in out)
    assert any(q.bid == 0.0 for q in out)
    assert any(q.bid > q.ask for q in out)
    assert any(q.ask > 10_000 for q in out)


def test_duplicates_repeat_values_and_exchange_time_with_a_new_sequence_number():
    src, ft = make(FaultConfig(duplicate_rate=1.0))
    first = fetch_n(src, "SPY", 1)[0]
    ft.advance(1)
    again = fetch_n(src, "SPY", 1)[0]
    assert values(again) == values(first) and again.ts_us == first.ts_us
    assert again.seq == 2 and again.tick_id != first.tick_id
    assert again.recv_us > first.recv_us


def test_inject_changes_faults_and_rejects_unknown_names():
    src, _ = make()
    src.inject(error_rate=1.0)
    assert isinstance(fetch_n(src, "SPY", 1)[0], TransientSourceError)
    src.heal()
    assert not isinstance(fetch_n(src, "SPY", 1)[0], Exception)
    with pytest.raises(AttributeError):
        src.inject(explode=True)


def test_registry_builds_the_simulated_source():
    src = create_source(SimulatedSourceConfig(seed=3))
    assert isinstance(src, SimulatedSource) and src.config.seed == 3


def test_fail_next_fails_exactly_that_many_fetches_and_calls_are_counted():
    src, _ = make()
    src.fail_next("SPY", 2)
    out = fetch_n(src, "SPY", 3)
    assert [isinstance(x, TransientSourceError) for x in out] == [True, True, False]
    assert out[2].seq == 1
    assert src.calls == {"SPY": 3}


def test_a_sources_optional_traits_are_read_in_one_place(tmp_path):
    from robust_collector.sources import traits_of

    sim = traits_of(create_source(SimulatedSourceConfig()))
    assert (sim.name, sim.self_paced, sim.fetch_batch, sim.plan, sim.symbols) == (
        "simulated",
        False,
        None,
        None,
        None,
    )

    class Replayish:
        name = "replay"
        self_paced = True
        symbols = ("SPY", "QQQ")

        async def fetch_batch(self, symbol: str, limit: int) -> list:
            return []

    t = traits_of(Replayish())
    assert t.self_paced and t.fetch_batch is not None and t.symbols == frozenset({"SPY", "QQQ"})
    Replayish.self_paced = False  # a batch method without self-pacing is not used
    assert traits_of(Replayish()).fetch_batch is None
