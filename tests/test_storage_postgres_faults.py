"""The writer against a real PostgreSQL server that hangs or refuses a value (issue 14)."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
from helpers.waiting import wait_until
from helpers.writer_rows import RUN, Errors, error_event, tick

from robust_collector.storage.backup import BackupWriter, backlog
from robust_collector.storage.recovery import replay_backlog
from robust_collector.storage.writer import Batch, StorageWriter

pytestmark = pytest.mark.integration

psycopg = pytest.importorskip("psycopg")


def pg_count(url: str, sql: str) -> Any:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchone()


def make_writer(url: str, tmp_path: Any, errors: Errors, **kw: Any) -> StorageWriter:
    from robust_collector.storage.postgres import PostgresBackend

    backend = PostgresBackend(url, timeout=kw.pop("timeout", 5.0))
    folder = tmp_path / "backups"

    def replay(conn: Any) -> tuple[int, int]:
        report = replay_backlog(backend.sink(conn), folder, max_files=1)
        report.raise_for_errors()
        return report.inserted, int(report.totals["recovered"])

    return StorageWriter(
        backend,
        write_timeout=backend.timeout,
        fallback=BackupWriter(folder, RUN),
        replay=replay,
        backlog=lambda: backlog(folder)[0],
        on_error=errors,
        **kw,
    )


def test_a_nul_in_an_error_message_is_stored_cleaned_and_never_wedges_the_writer(pg_url, tmp_path):
    errors = Errors()
    w = make_writer(pg_url, tmp_path, errors)
    w.start()
    try:
        w.submit(Batch([tick(1)], [], [error_event("bad \x00 byte")]))
        w.submit(Batch([tick(2)]))
        wait_until(lambda: w.stats().ticks_written == 2, timeout=10.0, detail=lambda: w.stats())
        st = w.stats()
        assert st.mode == "database" and st.events_dropped == 0 and st.ticks_to_backup == 0
    finally:
        w.stop(10)
    assert pg_count(pg_url, "SELECT count(*), min(message) FROM errors") == (1, "bad \\x00 byte")


def test_an_event_row_that_still_fails_is_dropped_with_a_count_after_one_retry(pg_url, tmp_path):
    errors = Errors()
    w = make_writer(pg_url, tmp_path, errors)
    w.start()
    try:
        refused = (error_event("x")[0], (RUN, 1, None, None, "X", "no component"))  # NOT NULL
        w.submit(Batch([tick(1)], [], [refused]))
        w.submit(Batch([tick(2)], [], [error_event("fine")]))
        w.submit(Batch([tick(3)]))
        wait_until(lambda: w.stats().ticks_written == 3, timeout=10.0, detail=lambda: w.stats())
        st = w.stats()
        assert st.events_dropped == 1 and st.mode == "database" and st.ticks_to_backup == 0
    finally:
        w.stop(10)
    assert pg_count(pg_url, "SELECT count(*), min(message) FROM errors") == (1, "fine")
    assert "NotNullViolation" in errors.text()


def test_a_stopped_backend_is_cut_by_the_watchdog_and_nothing_is_lost(pg_server, pg_url, tmp_path):
    """SIGSTOP the server process serving the writer: within write_timeout + grace the
    writer cuts the call, saves the batch to backup, records an error, reconnects; after
    SIGCONT the backup is replayed and every tick is stored exactly once."""
    if not pg_server.restartable:
        pytest.skip("needs our own throwaway server (to signal its processes)")
    errors = Errors()
    timeout, grace = 1.0, 1.0
    w = make_writer(
        pg_url, tmp_path, errors, timeout=timeout, watchdog_grace=grace, queue_max_batches=4
    )
    w.start()
    submitted: list[int] = []
    latencies: list[float] = []
    stop_producing = threading.Event()

    def producer() -> None:
        i = 0
        while not stop_producing.is_set():
            t0 = time.monotonic()
            w.submit(Batch([tick(i)]))
            latencies.append(time.monotonic() - t0)
            submitted.append(i)
            i += 1
            stop_producing.wait(0.02)  # a 20 ms flush interval

    pid = None
    stopped_at = detected_at = None
    thread = threading.Thread(target=producer, daemon=True)
    try:
        w.submit(Batch([tick(-1)]))
        wait_until(lambda: w.stats().ticks_written == 1, timeout=10.0)
        pid = w._conn.info.backend_pid
        thread.start()
        wait_until(lambda: w.stats().ticks_written > 10, timeout=10.0)
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        wait_until(
            lambda: w.stats().ticks_to_backup > 0,
            timeout=timeout + grace + 5,
            detail=lambda: w.stats(),
        )
        detected_at = time.monotonic()
        assert "did not answer within" in errors.text()
        assert w.stats().alive
        # the writer reconnected (a new server process) and goes on storing
        written = w.stats().ticks_written
        wait_until(lambda: w.stats().ticks_written > written + 10, timeout=10.0)
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
    try:
        wait_until(lambda: w.stats().backup_files == 0 and w.stats().replayed_rows > 0, timeout=30)
    finally:
        stop_producing.set()
        thread.join(10)
        w.stop(30)
    detect = detected_at - stopped_at
    print(f"hung backend detected after {detect:.2f}s; max submit {max(latencies) * 1e3:.1f} ms")
    assert detect < timeout + grace + 3
    st = w.stats()
    assert st.lost_rows == 0
    n, distinct = pg_count(pg_url, "SELECT count(*), count(DISTINCT tick_id) FROM ticks")
    assert n == distinct == len(submitted) + 1


def test_a_hung_backend_under_a_running_collector_reads_degraded_and_loses_nothing(
    pg_server, pg_url, make_config
):
    """The same SIGSTOP through the whole collector: health leaves HEALTHY while the
    server process hangs (backup mode), collection never stops, and once it answers
    again every emitted quote is stored, rejected or a duplicate, exactly once."""
    if not pg_server.restartable:
        pytest.skip("needs our own throwaway server (to signal its processes)")
    from robust_collector import Collector
    from robust_collector.health import HealthLevel

    cfg = make_config(
        storage={"backend": "postgresql", "url": pg_url, "write_timeout_seconds": 1.0},
        realtime_data={"health_check": {"check_interval_seconds": 0.1}},
    )
    c = Collector(cfg).start()
    pid = None
    try:
        c.wait_for(lambda s: s.stored > 30, timeout=15)
        pid = c._writer._conn.info.backend_pid
        os.kill(pid, signal.SIGSTOP)
        quotes = c.status().symbols["SPY"].quotes
        wait_until(
            lambda: (
                c.health().component("storage").level >= HealthLevel.DEGRADED
                and c.status().storage.ticks_to_backup > 0
            ),
            timeout=10,
            what="backup mode while the server process hangs",
            detail=lambda: c.status().storage,
        )
        assert c.status().symbols["SPY"].quotes > quotes  # collection never stopped
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
    try:
        wait_until(
            lambda: c.status().storage.backup_files == 0 and c.status().storage.replayed_rows > 0,
            timeout=30,
            what="the backlog replayed",
            detail=lambda: c.status().storage,
        )
    finally:
        summary = c.stop()
    assert summary.storage.lost_rows == 0
    for sym, emitted in c.source.emitted.items():
        (n,) = pg_count(
            pg_url,
            f"SELECT (SELECT count(*) FROM ticks WHERE symbol = '{sym}')"
            f" + (SELECT count(*) FROM rejects WHERE symbol = '{sym}')",
        )
        assert n + summary.symbols[sym].duplicates == emitted, sym
    (dups,) = pg_count(
        pg_url, "SELECT count(*) - count(DISTINCT tick_id) FROM ticks"
    )  # nothing stored twice
    assert dups == 0
