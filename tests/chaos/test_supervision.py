"""Supervision: a unit that raises is logged, recorded, shown in health and restarted."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import pytest
from helpers.waiting import wait_until

from robust_collector import Collector
from robust_collector.health import CollectorFacts, HealthLevel, StorageFacts, TroubledUnit
from robust_collector.model import Quote
from robust_collector.runtime.supervisor import CRASH_LOOP, Supervisor

# -- the supervisor alone (injected sleep: no real waiting) ------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_crashing_task_is_restarted_with_doubling_backoff_and_reported() -> None:
    waits: list[float] = []
    crashes: list[tuple[str, str]] = []

    async def fake_sleep(s: float) -> None:
        waits.append(s)

    sup = Supervisor(
        on_crash=lambda name, exc: crashes.append((name, str(exc))),
        base_delay=0.1,
        max_delay=0.5,
        sleep=fake_sleep,
    )
    calls = 0

    async def unit() -> None:
        nonlocal calls
        calls += 1
        if calls <= 4:
            raise ValueError(f"boom {calls} \ud83d")

    run(sup.run("worker", unit))
    assert calls == 5
    assert waits == [0.1, 0.2, 0.4, 0.5]  # doubling, capped
    assert [c[0] for c in crashes] == ["worker"] * 4
    st = sup.status()["worker"]
    assert st.state == "done" and st.restarts == 4 and st.recent_crashes == 4
    # the crash text is safe to store and print: the lone surrogate is escaped
    assert st.last_error == "ValueError: boom 4 \\ud83d"
    st.last_error.encode("utf-8")


def test_facts_name_a_restarting_unit_and_health_reads_it() -> None:
    from robust_collector.config import HealthCheckConfig
    from robust_collector.health import HealthChecker, MarketSession, evaluate

    sup = Supervisor(base_delay=60.0)  # stays in its backoff for the test
    gate = asyncio.Event()

    async def unit() -> None:
        raise RuntimeError("unexpected")

    async def main() -> None:
        task = asyncio.create_task(sup.run("poll-SPY", unit))
        while (
            sup.status().get("poll-SPY") is None or sup.status()["poll-SPY"].state != "restarting"
        ):
            await asyncio.sleep(0)
        checker = HealthChecker("RobustDataCollector", kind="collector")
        checker.record_success()
        checker.facts.collector = CollectorFacts(sup.troubled())
        comp = evaluate(checker, HealthCheckConfig(), MarketSession(), 0.0)
        assert comp.level == HealthLevel.UNHEALTHY
        assert any(
            "poll-SPY crashed (RuntimeError: unexpected); restarting" in r for r in comp.reasons
        )
        task.cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sup.status()["poll-SPY"].state == "stopped"

    run(main())


def test_a_crash_loop_is_critical() -> None:
    from robust_collector.config import HealthCheckConfig
    from robust_collector.health import HealthChecker, MarketSession, evaluate

    checker = HealthChecker("c", kind="runtime")
    checker.facts.collector = CollectorFacts(
        (TroubledUnit("flusher", "restarting", 9, CRASH_LOOP, "KeyError: 'x'"),),
        crash_loop_threshold=CRASH_LOOP,
    )
    comp = evaluate(checker, HealthCheckConfig(), MarketSession(), 0.0)
    assert comp.level == HealthLevel.CRITICAL
    assert comp.reasons == (
        f"flusher is crash-looping: {CRASH_LOOP} crashes in a minute (last: KeyError: 'x')",
    )


def test_a_crashing_thread_is_restarted_until_stop() -> None:
    sup = Supervisor(base_delay=0.001, max_delay=0.001)
    runs = []

    def body() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise OSError("gone")

    t = sup.thread("rc-test", body)
    t.join(5)
    assert not t.is_alive() and len(runs) == 3
    assert sup.status()["rc-test"].restarts == 2 and sup.status()["rc-test"].state == "done"


# -- the real collector -------------------------------------------------------------------


def plant_a_bug(c: Collector, symbol: str = "SPY", at_seq: int = 20) -> list[Quote]:
    """Make the pipeline raise once, on one quote: a bug nobody planned for."""
    real = c.validator.check
    hit: list[Quote] = []

    def check(q: Quote) -> Any:
        if q.symbol == symbol and q.seq == at_seq and not hit:
            hit.append(q)
            raise RuntimeError("a bug nobody planned for")
        return real(q)

    c.validator.check = check  # type: ignore[method-assign]
    return hit


@pytest.mark.integration
def test_a_crashing_poll_task_is_restarted_recorded_and_shown(make_config) -> None:
    cfg = make_config(realtime_data={"health_check": {"check_interval_seconds": 0.2}})
    c = Collector(cfg)
    hit = plant_a_bug(c)
    c.start()
    try:
        # SPY's poll task crashed on the poison quote, and was restarted: it keeps storing
        wait_until(
            lambda: getattr(c.status().units.get("poll-SPY"), "restarts", 0) >= 1, what="a restart"
        )
        first = c.status().symbols["SPY"].stored
        wait_until(lambda: c.status().symbols["SPY"].stored > first + 5, what="SPY storing again")
        # the crash is an error row, a recent error and a health reason (DEGRADED for a minute)
        wait_until(
            lambda: any("poll-SPY crashed" in r for r in c.health().reasons),
            timeout=2,
            what="the health reason",
        )
        assert c.health().level >= HealthLevel.DEGRADED
        assert any(e.component == "supervisor" for e in c.monitor.errors)
        # the dashboard's status banner shows it (what the user reads)
        from robust_collector.dashboard.model import view_from_collector
        from robust_collector.dashboard.render import render_status

        banner = render_status(view_from_collector(c))
        assert "poll-SPY crashed" in banner and "DEGRADED" in banner.upper()
        # the heartbeat file says so too, within 2 s
        hb = c.db_path.with_name(c.db_path.name + ".health.json")
        wait_until(
            lambda: hb.exists() and "poll-SPY crashed" in hb.read_text(),
            timeout=2,
            what="the heartbeat to name the crash",
        )
    finally:
        c.stop()
    conn = sqlite3.connect(c.db_path)
    rows = conn.execute(
        "SELECT component, error_type, message FROM errors WHERE component = 'supervisor'"
    ).fetchall()
    assert rows and rows[0][1] == "RuntimeError" and rows[0][2].startswith("poll-SPY crashed")
    # the quote in hand is counted lost, never silently gone
    assert len(hit) == 1 and c.status().symbols["SPY"].lost == 1
    # the other symbols never noticed
    assert c.status().symbols["QQQ"].stored > 0 and c.status().symbols["IWM"].stored > 0


@pytest.mark.integration
def test_a_stalled_event_loop_is_unhealthy_within_seconds(make_config) -> None:
    cfg = make_config()
    c = Collector(cfg).start()
    try:
        c.wait_for(lambda s: s.stored > 10)
        assert c._loop is not None
        release = __import__("threading").Event()
        # something blocks the loop thread (a library call that hangs)
        c._loop.call_soon_threadsafe(lambda: release.wait(10))
        wait_until(
            lambda: any("event loop stalled" in r for r in c.health().reasons),
            timeout=5,
            what="a stalled-loop reason",
        )
        hb = c.db_path.with_name(c.db_path.name + ".health.json")
        wait_until(lambda: "event loop stalled" in hb.read_text(), timeout=3, what="the heartbeat")
        assert json.loads(hb.read_text())["level"] in ("UNHEALTHY", "CRITICAL")
        release.set()
        wait_until(
            lambda: not any("event loop stalled" in r for r in c.health().reasons),
            timeout=5,
            what="the loop to turn again",
        )
    finally:
        c.stop()


def test_the_writer_restarting_itself_or_not_running_shows_in_storage_health() -> None:
    from robust_collector.config import HealthCheckConfig
    from robust_collector.health import HealthChecker, MarketSession, evaluate

    checker = HealthChecker("storage", kind="storage")
    checker.facts.storage = StorageFacts(writer_recent_crashes=1, writer_crashes=3)
    comp = evaluate(checker, HealthCheckConfig(), MarketSession(), 0.0)
    assert comp.level == HealthLevel.DEGRADED
    assert comp.reasons == (
        "storage: writer restarted after an unexpected error (1x in the last minute, 3 in all)",
    )
    checker.facts.storage = StorageFacts(writer_alive=False)
    comp = evaluate(checker, HealthCheckConfig(), MarketSession(), 0.0)
    assert comp.level == HealthLevel.CRITICAL
    assert comp.reasons == ("storage: the database writer thread is not running",)


@pytest.mark.integration
def test_a_stop_in_progress_is_not_reported_as_a_dead_writer_or_a_stalled_loop(make_config) -> None:
    c = Collector(make_config()).start()
    c.wait_for(lambda s: s.stored > 5)
    seen: list[tuple[str, ...]] = []
    real_stop = c._writer.stop

    def stop_and_look(timeout: float | None = None) -> bool:
        done = real_stop(timeout)
        seen.append(c.health().reasons)  # the writer has ended; the collector has not yet
        return done

    c._writer.stop = stop_and_look  # type: ignore[method-assign]
    c.stop()
    assert seen and not any(
        "writer thread is not running" in r or "event loop stalled" in r for r in seen[0]
    ), seen


def test_restarts_back_off_on_the_shared_backoff_doubling_to_the_cap() -> None:
    sup = Supervisor(base_delay=0.1, max_delay=5.0)
    assert [sup.delay(n) for n in range(0, 10)] == [
        0.1,
        0.1,
        0.2,
        0.4,
        0.8,
        1.6,
        3.2,
        5.0,
        5.0,
        5.0,
    ]
    assert sup.delay(10**6) == 5.0  # a long crash series never overflows
    assert sup.backoff.jitter == "none"  # restarts are not a herd: no randomness


@pytest.mark.integration
def test_a_crashing_writer_is_unhealthy_while_it_restarts_then_recovers(
    make_config, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.ERROR, logger="robust_collector.storage.writer")
    c = Collector(make_config()).start()
    try:
        c.wait_for(lambda s: s.stored > 10)
        w = c._writer
        assert w is not None
        broken = {"on": True}
        real = w._service_queue

        def service_queue(**kw: Any) -> bool:
            if broken["on"]:
                raise RuntimeError("a bug nobody planned for")
            return real(**kw)

        w._service_queue = service_queue  # type: ignore[method-assign]

        def storage() -> Any:
            return c.health().component("storage")

        comp = wait_until(
            lambda: (s := storage()).level >= HealthLevel.UNHEALTHY and s,
            timeout=2,
            what="storage UNHEALTHY while the writer restarts",
            detail=lambda: storage(),
        )
        assert any(
            "the database writer crashed (RuntimeError: a bug nobody planned for); restarting" in r
            or "crash-looping" in r
            for r in comp.reasons
        ), comp.reasons
        assert c.status().storage.restarting and c.status().storage.restarts >= 1
        # it keeps crashing: a crash loop is CRITICAL, and the heartbeat says so too
        wait_until(
            lambda: storage().level == HealthLevel.CRITICAL,
            timeout=10,
            what="a crash loop",
            detail=lambda: storage(),
        )
        hb = c.db_path.with_name(c.db_path.name + ".health.json")
        wait_until(
            lambda: "the database writer is crash-looping" in hb.read_text(),
            timeout=3,
            what="the heartbeat to name the crash loop",
        )
        broken["on"] = False
        wait_until(
            lambda: not c.status().storage.restarting,
            timeout=5,
            what="the writer to run a full cycle again",
        )
        # the crashes stay visible for a minute (once the success rate has recovered too)
        comp = wait_until(
            lambda: (s := storage()).level == HealthLevel.DEGRADED and s,
            timeout=5,
            what="storage DEGRADED after the restart",
            detail=lambda: storage(),
        )
        assert any("writer restarted after an unexpected error" in r for r in comp.reasons)
        n = c.status().stored
        c.wait_for(lambda s: s.stored > n + 20)  # and it stores again
    finally:
        c.stop()
    st = c.status()
    # the batches that came while it restarted waited in the queue or went to backup: none lost
    assert st.storage is not None and st.storage.lost_rows == 0
    assert all(s.lost == 0 for s in st.symbols.values())
    # the crash series logged its traceback once, then one line per restart
    crashes = [r for r in caplog.records if "nobody planned for" in r.getMessage() or r.exc_info]
    assert len(crashes) >= 5 and [r.exc_info is not None for r in crashes].count(True) == 1
