"""The writer under hostile values and a hostile world: it never dies, never blocks the
event loop on I/O, never loses a batch silently (issue 14, the storage half)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.waiting import wait_until
from helpers.writer_rows import RUN, Errors, error_event, reject, tick

from robust_collector.boundary import INT64_MAX
from robust_collector.errors import CircuitOpenError
from robust_collector.storage.backend import SQLiteBackend, SQLiteSink
from robust_collector.storage.backup import BackupWriter, encode_batch, read_backup_file
from robust_collector.storage.recovery import replay_backlog
from robust_collector.storage.writer import Batch, StorageWriter

pytestmark = pytest.mark.integration  # real writer threads and SQLite files


class OpenGate:
    """A database breaker that is always open: every batch goes to backup."""

    def before_call(self) -> Any:
        raise CircuitOpenError("storage", 1.0)

    def on_success(self, token: Any) -> None:
        pass

    def on_failure(self, token: Any, exc: BaseException) -> None:
        pass


def count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


# -- finding 1: a lone surrogate -------------------------------------------------------


def test_a_lone_surrogate_in_an_event_row_never_kills_the_writer(tmp_path):
    db = tmp_path / "t.db"
    w = StorageWriter(db, fallback=BackupWriter(tmp_path / "b", RUN))
    w.start()
    try:
        w.submit(Batch([tick(1)], [], [error_event("quota exceeded for \ud83d")]))
        w.submit(Batch([tick(2)]))
        wait_until(lambda: w.stats().ticks_written == 2, timeout=10.0, detail=lambda: w.stats())
        st = w.stats()
        assert st.alive and st.lost_rows == 0 and st.mode == "database"
        # the database is not left locked by an open transaction
        other = sqlite3.connect(db, timeout=0.5, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        other.close()
    finally:
        w.stop(10)
    messages = [r[0] for r in sqlite3.connect(db).execute("SELECT message FROM errors")]
    assert messages == ["quota exceeded for \\ud83d"]


def test_a_surrogate_in_a_tick_is_stored_cleaned_on_the_retry(tmp_path):
    db = tmp_path / "t.db"
    w = StorageWriter(db, fallback=BackupWriter(tmp_path / "b", RUN))
    w.start()
    try:
        bad = (*tick(1)[:10], "sim\udcff", RUN)
        w.submit(Batch([bad, tick(2)]))
        w.submit(Batch([tick(3)]))
        wait_until(lambda: w.stats().ticks_written == 3, timeout=10.0, detail=lambda: w.stats())
        assert w.stats().alive and w.stats().lost_rows == 0
    finally:
        w.stop(10)
    assert count(db, "SELECT count(*) FROM ticks WHERE source = 'sim\\udcff'") == 1


def test_an_unexpected_error_in_the_loop_is_counted_and_the_loop_resumes(tmp_path):
    errors = Errors()
    w = StorageWriter(tmp_path / "t.db", on_error=errors)
    real_idle = w._idle
    calls = {"n": 0}

    def exploding_idle() -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom in the loop")
        real_idle()

    w._idle = exploding_idle  # type: ignore[method-assign]
    w.start()
    try:
        wait_until(lambda: w.stats().crashes == 1, timeout=10.0)
        w.submit(Batch([tick(1)]))
        wait_until(lambda: w.stats().ticks_written == 1, timeout=10.0)
        assert w.stats().alive
    finally:
        w.stop(10)
    assert not w.stats().alive
    assert "boom in the loop" in errors.text()


def test_a_batch_whose_write_fails_unexpectedly_goes_to_backup(tmp_path):
    class Exploding(SQLiteBackend):
        def write(self, conn, ticks, rejects, events, trades=None, trade_rejects=None):
            raise RuntimeError("a driver bug")

    errors = Errors()
    w = StorageWriter(
        Exploding(tmp_path / "t.db"),
        fallback=BackupWriter(tmp_path / "b", RUN),
        on_error=errors,
    )
    w.start()
    try:
        w.submit(Batch([tick(1)]))
        w.submit(Batch([tick(2)]))
        wait_until(lambda: w.stats().ticks_to_backup == 2, timeout=10.0, detail=lambda: w.stats())
        assert w.stats().alive and w.stats().lost_rows == 0
    finally:
        w.stop(10)
    assert "a driver bug" in errors.text()
    saved = [r for p in sorted((tmp_path / "b").glob("*.jsonl")) for r in read_backup_file(p).ticks]
    assert [r[0] for r in saved] == [tick(1)[0], tick(2)[0]]


# -- finding 2: a timestamp past 64 bits --------------------------------------------------


def test_a_reject_past_64_bits_is_stored_clamped(tmp_path):
    db = tmp_path / "t.db"
    w = StorageWriter(db, fallback=BackupWriter(tmp_path / "b", RUN))
    w.start()
    try:
        w.submit(Batch([tick(1)], [reject(2, 2**63 + 7), reject(3, 2**64 + 7)]))
        w.submit(Batch([tick(4)]))
        wait_until(lambda: w.stats().ticks_written == 2, timeout=10.0, detail=lambda: w.stats())
        assert w.stats().alive and w.stats().rejects_written == 2
    finally:
        w.stop(10)
    assert count(db, f"SELECT count(*) FROM rejects WHERE ts_us = {INT64_MAX}") == 2


def test_a_reject_past_64_bits_reaches_the_backup_file(tmp_path):
    w = StorageWriter(
        tmp_path / "t.db", fallback=BackupWriter(tmp_path / "b", RUN), gate=OpenGate()
    )
    w.start()
    try:
        w.submit(Batch([tick(1)], [reject(2, 2**64 + 7)]))
        wait_until(lambda: w.stats().rejects_to_backup == 1, timeout=10.0, detail=lambda: w.stats())
        assert w.stats().lost_rows == 0 and w.stats().alive
    finally:
        w.stop(10)
    (path,) = (tmp_path / "b").glob("*.jsonl")
    contents = read_backup_file(path)
    assert [r[3] for r in contents.rejects] == [INT64_MAX] and not contents.problems


def test_backup_encoding_never_fails_on_out_of_range_or_unencodable_values():
    blob = encode_batch([(*tick(1)[:3], 2**70, *tick(1)[4:10], "s\ud800", RUN)])
    assert b"9223372036854775807" in blob and b"\\\\ud800" in blob


# -- finding 4: the database file deleted, replaced, its folder removed --------------------


def run_with_file_fault(tmp_path: Path, fault: Callable[[Path], None]) -> tuple[Path, Errors]:
    db = tmp_path / "data" / "t.db"
    errors = Errors()
    w = StorageWriter(db, fallback=BackupWriter(tmp_path / "b", RUN), on_error=errors)
    w.start()
    try:
        for i in range(50):
            w.submit(Batch([tick(i)]))
        wait_until(lambda: w.stats().ticks_written == 50, timeout=10.0)
        fault(db)
        for i in range(50, 100):
            w.submit(Batch([tick(i)]))
        wait_until(lambda: w.stats().ticks_written == 100, timeout=10.0)
    finally:
        w.stop(10)
    assert w.stats().lost_rows == 0
    return db, errors


def test_a_deleted_database_file_is_noticed_reopened_and_keeps_every_row(tmp_path):
    db, errors = run_with_file_fault(tmp_path, lambda p: p.unlink())
    assert "was removed while open" in errors.text()
    assert count(db, "SELECT count(*) FROM ticks") == 100  # old rows copied back, new ones in


def test_a_removed_database_folder_is_recreated(tmp_path):
    db, errors = run_with_file_fault(tmp_path, lambda p: shutil.rmtree(p.parent))
    assert "was removed while open" in errors.text()
    assert count(db, "SELECT count(*) FROM ticks") == 100


def test_a_replaced_database_file_is_reopened_and_the_old_rows_kept_aside(tmp_path):
    def replace(p: Path) -> None:
        other = p.with_name("other.db")
        sqlite3.connect(other).close()
        os.replace(other, p)

    db, errors = run_with_file_fault(tmp_path, replace)
    assert "was replaced by another file" in errors.text()
    (aside,) = db.parent.glob("t.db.orphaned-*")
    new = count(db, "SELECT count(*) FROM ticks")
    old = count(aside, "SELECT count(*) FROM ticks")
    assert new >= 50 and new + old >= 100
    ids = {
        r[0] for p in (db, aside) for r in sqlite3.connect(p).execute("SELECT tick_id FROM ticks")
    }
    assert len(ids) == 100


# -- finding 6: a deadline scoped to each write and each replay chunk ----------------------


def test_the_write_deadline_never_cuts_a_later_replay(tmp_path):
    folder = tmp_path / "b"
    with BackupWriter(folder, "old-run", fsync="never") as bw:
        for start in range(0, 60_000, 5_000):
            bw.write_batch([tick(i) for i in range(start + 1, start + 5_001)])
    backend = SQLiteBackend(tmp_path / "t.db", timeout=0.05)
    conn = backend.connect()
    try:
        backend.set_deadline(conn, 0.05)
        backend.write(conn, [tick(0)], [], [])
        t0 = time.monotonic()
        report = replay_backlog(backend.sink(conn), folder, batch_size=1_000)
        took = time.monotonic() - t0
    finally:
        backend.close(conn)
    assert took > 0.05  # the replay outlived the write timeout ...
    assert report.ok, report.summary()  # ... and was never cut by the write's deadline
    assert report.inserted == 60_000


# -- finding 7: submit never waits on I/O ----------------------------------------------------


def test_submit_returns_while_a_replay_is_in_progress_and_the_queue_is_full(tmp_path, monkeypatch):
    """The writer replays a big file (paused mid-file by a test hook) while the queue
    fills up: every submit returns while the replay is still in progress, and batches
    are durable in submission order."""
    folder = tmp_path / "b"
    with BackupWriter(folder, "old-run", fsync="never") as bw:
        for start in range(0, 40_000, 5_000):
            bw.write_batch([tick(i) for i in range(start + 100_000, start + 105_000)])
    in_replay = threading.Event()
    release = threading.Event()
    real_insert = SQLiteSink.insert

    def paused_insert(self, ticks, rejects, trades=None, trade_rejects=None):
        in_replay.set()
        release.wait(30)  # the test hook: one chunk "takes" until the test is done
        return real_insert(self, ticks, rejects, trades, trade_rejects)

    monkeypatch.setattr(SQLiteSink, "insert", paused_insert)
    backend = SQLiteBackend(tmp_path / "t.db")

    def replay(conn: Any) -> tuple[int, int]:
        report = replay_backlog(backend.sink(conn), folder, max_files=1)
        report.raise_for_errors()
        return report.inserted, int(report.totals["recovered"])

    spill = BackupWriter(tmp_path / "spill", RUN)
    w = StorageWriter(
        backend,
        queue_max_batches=2,
        queue_full_block_ms=0,
        fallback=spill,
        replay=replay,
        backlog=lambda: len(list(folder.glob("*.jsonl"))),
    )
    w.start()
    latencies: list[float] = []
    returned_during_replay: list[bool] = []
    try:
        w.submit(Batch([tick(0)]))  # the first good write starts the replay
        assert in_replay.wait(10)
        done = threading.Event()

        def producer() -> None:
            for i in range(1, 21):
                t0 = time.monotonic()
                w.submit(Batch([tick(i)]))
                latencies.append(time.monotonic() - t0)
                returned_during_replay.append(not release.is_set())
            done.set()

        threading.Thread(target=producer, daemon=True).start()
        assert done.wait(10), "submit blocked while the writer was replaying"
        assert all(returned_during_replay) and len(latencies) == 20
    finally:
        release.set()
        w.stop(30)
    st = w.stats()
    assert st.lost_rows == 0 and st.queue_full_spills >= 1
    spilled = [
        int(r[2])
        for p in sorted((tmp_path / "spill").glob("*.jsonl"))
        for r in read_backup_file(p).ticks
    ]
    assert spilled == sorted(spilled)  # durable in submission order
    conn = sqlite3.connect(tmp_path / "t.db")
    stored = {r[0] for r in conn.execute("SELECT seq FROM ticks WHERE seq <= 20")}
    assert stored | set(spilled) == set(range(21))


# -- finding 8: a hung database call is cut by the watchdog ----------------------------------


class HangingBackend(SQLiteBackend):
    """A SQLite backend whose writes hang (a server that stopped) until interrupted."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, timeout=0.5)
        self.hang = threading.Event()
        self.entered = threading.Event()
        self.cut = threading.Event()

    def write(self, conn, ticks, rejects, events, trades=None, trade_rejects=None):
        if self.hang.is_set():
            self.entered.set()
            if not self.cut.wait(30):
                raise AssertionError("never interrupted")
            raise sqlite3.OperationalError("connection cut")
        super().write(conn, ticks, rejects, events, trades, trade_rejects)

    def interrupt(self, conn: Any) -> None:
        self.cut.set()


def test_the_watchdog_cuts_a_call_that_never_returns(tmp_path):
    now = [1000.0]
    backend = HangingBackend(tmp_path / "t.db")
    errors = Errors()
    w = StorageWriter(
        backend,
        write_timeout=0.5,
        watchdog_grace=1.0,
        watchdog_poll=0.005,
        clock=lambda: now[0],
        fallback=BackupWriter(tmp_path / "b", RUN),
        on_error=errors,
    )
    w.start()
    try:
        w.submit(Batch([tick(1)]))
        wait_until(lambda: w.stats().ticks_written == 1, timeout=10.0)
        backend.hang.set()
        w.submit(Batch([tick(2)]))
        assert backend.entered.wait(10)
        assert not backend.cut.wait(0.05)  # within the deadline: left alone
        now[0] += 1.6  # past write_timeout + grace
        assert backend.cut.wait(10)
        wait_until(lambda: w.stats().ticks_to_backup == 1, timeout=10.0)
        backend.hang.clear()
    finally:
        w.stop(10)
    assert "did not answer within 1.5s" in errors.text()
    assert w.stats().lost_rows == 0
