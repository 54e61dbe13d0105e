"""The writer thread on its own: order of durability, queue overflow, stop."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from helpers.waiting import wait_until

from robust_collector.errors import CircuitOpenError
from robust_collector.storage.writer import Batch, SQLiteWriter

pytestmark = pytest.mark.integration  # real writer threads and SQLite files


class RecordingFallback:
    def __init__(self) -> None:
        self.written: list[str] = []

    def write_batch(self, ticks, rejects, trades=(), trade_rejects=()) -> int:
        self.written.append(ticks[0][0])
        return len(ticks)

    def rotate(self) -> None:
        pass

    def close(self) -> None:
        pass


class StuckGate:
    """A database breaker whose first call hangs until released, then says OPEN."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def before_call(self):
        self.entered.set()
        self.release.wait(10)
        raise CircuitOpenError("storage", 1.0)

    def on_success(self, token) -> None:
        pass

    def on_failure(self, token, exc) -> None:
        pass


def batch(name: str) -> Batch:
    row = (name, "SPY", 1, 1, 1, 1.0, 1.01, 1.0, 1.0, None, "t", "r")
    return Batch([row])


def test_a_spill_never_saves_a_newer_batch_before_older_ones(tmp_path):
    fb, gate = RecordingFallback(), StuckGate()
    w = SQLiteWriter(
        tmp_path / "x.db", queue_max_batches=2, queue_full_block_ms=0, fallback=fb, gate=gate
    )
    w.start()
    w.submit(batch("b1"))
    assert gate.entered.wait(5)  # the writer is busy with b1
    w.submit(batch("b2"))
    w.submit(batch("b3"))  # the queue is full now
    spiller = threading.Thread(target=w.submit, args=(batch("b4"),))
    spiller.start()
    # before the fix b4 went to backup at once, ahead of b1..b3; now it waits its turn
    assert not wait_until(lambda: fb.written, timeout=0.3, fail=False)
    gate.release.set()
    spiller.join(10)
    w.stop(10)
    assert fb.written == ["b1", "b2", "b3", "b4"]
    assert 1 <= w.stats().queue_full_spills <= 3  # the writer may take b2, b3 first


def test_stop_writes_everything_queued(tmp_path):
    w = SQLiteWriter(tmp_path / "x.db")
    w.start()
    for i in range(50):
        w.submit(batch(f"t{i}"))
    w.stop(10)
    st = w.stats()
    assert st.ticks_written == 50 and st.mode == "database" and st.lost_rows == 0


def test_after_a_stop_that_timed_out_no_batch_waits_in_a_dead_queue(tmp_path):
    fb, gate = RecordingFallback(), StuckGate()
    w = SQLiteWriter(tmp_path / "x.db", queue_max_batches=4, fallback=fb, gate=gate)
    w.start()
    w.submit(batch("b1"))
    assert gate.entered.wait(5)  # the writer hangs on b1 (a database that never answers)
    w.submit(batch("b2"))
    assert w.stop(timeout=0.2) is False  # it did not finish: say so
    assert fb.written == ["b2"]  # what was still queued went straight to backup
    w.submit(batch("b3"))  # a late batch (the collector's last flush) too
    assert fb.written == ["b2", "b3"]
    gate.release.set()
    wait_until(lambda: "b1" in fb.written, timeout=5.0)  # the stuck batch still ends in backup
    assert w.stats().lost_rows == 0


def test_a_replay_that_fails_on_a_busy_database_is_tried_again(tmp_path):
    """A replay step hitting 'database is locked' once must not leave the backlog
    waiting until the next outage (the drill's flaky 'replayed' check)."""
    import sqlite3

    files = [1]
    calls: list[str] = []

    def replay(conn):
        calls.append("call")
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        if files[0] == 0:  # like the collector's: nothing left, nothing recovered
            return 0, 0
        files[0] = 0
        return 7, 1

    w = SQLiteWriter(
        tmp_path / "t.db",
        fallback=RecordingFallback(),
        replay=replay,
        backlog=lambda: files[0],
        replay_on_start=True,
    )
    w.start()
    try:
        w.submit(batch("a"))
        wait_until(lambda: len(calls) >= 1, timeout=5.0)
        w.submit(batch("b"))
        wait_until(lambda: w.stats().replayed_rows == 7, timeout=5.0, detail=lambda: calls)
        assert w.stats().backup_files == 0
        assert w.stats().mode == "database"
    finally:
        w.stop()


def test_many_row_statements_store_every_tick_once_and_skip_stored_ones(tmp_path):
    """Ticks go in 64 per INSERT: a batch not a multiple of 64, and one that repeats
    stored ticks, store each tick exactly once."""
    import sqlite3

    from robust_collector.storage.backend import TICKS_PER_STATEMENT, SQLiteBackend

    def rows(lo, hi):
        return [
            (f"r:SPY:{i}", "SPY", i, i, i, 1.0, 1.01, 1.0, 1.0, None, "t", "r")
            for i in range(lo, hi)
        ]

    n = TICKS_PER_STATEMENT
    b = SQLiteBackend(tmp_path / "m.db")
    conn = b.connect()
    b.write(conn, rows(0, 2 * n + 5), [], [])
    b.write(conn, rows(n, 3 * n + 7), [], [])  # overlaps the first batch by n + 5 rows
    got = conn.execute(
        "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM ticks"
    ).fetchone()
    assert got == (3 * n + 7, 3 * n + 7, 0, 3 * n + 6)
    stored = (
        sqlite3.connect(tmp_path / "m.db")
        .execute("SELECT bid, ask, last, source FROM ticks WHERE seq = ?", (n + 3,))
        .fetchone()
    )
    assert stored == (1.0, 1.01, None, "t")
    b.close(conn)


class RecordingStop(threading.Event):
    """The writer's stop event, recording each restart wait and whether it ran its course."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[tuple[float, bool]] = []

    def wait(self, timeout: float | None = None) -> bool:
        cut = super().wait(timeout)
        self.waits.append((timeout or 0.0, cut))
        return cut


def test_a_crash_series_is_paced_by_a_doubling_wait_new_batches_cannot_cut_short(tmp_path):
    """The restart wait doubles within a crash series and starts over at 0.05 s for a new
    one (it stayed at the 2 s cap); batches submitted meanwhile never end it early (they
    did: a crash loop ran at the flush rate)."""
    w = SQLiteWriter(tmp_path / "m.db", fallback=RecordingFallback())
    stop = w._stop_requested = RecordingStop()
    w.start()
    try:
        crashes = {"left": 4}
        real = w._service_queue

        def service_queue(**kw: Any) -> bool:
            if crashes["left"] > 0:
                crashes["left"] -= 1
                w.submit(batch(f"during{crashes['left']}"))  # a flush while it restarts
                raise RuntimeError("a bug nobody planned for")
            return real(**kw)

        w._service_queue = service_queue  # type: ignore[method-assign]
        wait_until(lambda: crashes["left"] == 0 and not w.stats().restarting, timeout=10)
        crashes["left"] = 1
        w._wakeup.set()
        wait_until(lambda: crashes["left"] == 0 and not w.stats().restarting, timeout=5)
        assert w.stats().restarts == 5
    finally:
        w.stop()
    assert stop.waits == [(0.05, False), (0.1, False), (0.2, False), (0.4, False), (0.05, False)]


def test_a_queue_collection_keeps_full_does_not_starve_the_backlog(tmp_path):
    """Each write queues another batch (collection as fast as the writer): the backlog
    must still be replayed between rounds, not only once the queue runs dry (under a
    loaded CI machine it never did within 20 s)."""
    files = [1]
    writes = [0]
    replayed_at: list[int] = []

    def replay(conn):
        if files[0]:
            files[0] = 0
            replayed_at.append(writes[0])
            return 5, 1
        return 0, 0

    w = SQLiteWriter(
        tmp_path / "t.db",
        fallback=RecordingFallback(),
        replay=replay,
        backlog=lambda: files[0],
        replay_on_start=True,
    )
    real = w._write

    def write(item):
        real(item)
        writes[0] += 1
        if writes[0] < 400:  # keep the queue from ever running dry
            w.submit(batch(f"n{writes[0]}"))

    w._write = write  # type: ignore[method-assign]
    for i in range(5):
        w.submit(batch(f"first{i}"))
    w.start()
    try:
        wait_until(lambda: writes[0] >= 400, timeout=20.0, what="the writes")
        wait_until(lambda: w.stats().replayed_rows == 5, timeout=5.0)
    finally:
        w.stop()
    assert replayed_at and replayed_at[0] < 50, replayed_at  # within the first rounds
