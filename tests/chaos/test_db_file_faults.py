"""The SQLite database file replaced, deleted or its folder removed under a running Collector.

A counting source emits good quotes (and every seventh a price out of range, a
reject) for two symbols while the collector writes to a real SQLite file. Mid-run
the file is replaced (``os.replace`` of another SQLite file over it), deleted, or
its folder removed. The writer notices at its next write, keeps what the old file
held (copied back to the path, or set aside as ``<name>.orphaned-<time>`` when
another file took the path), reopens and goes on. Afterwards every quote the
source emitted is a tick or a reject in the database files, a counted duplicate or
a counted loss (none); the event is an error row of the storage component with
its explanation, it is counted as a database error, and the collector, every
supervised unit and collection itself kept running.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.waiting import wait_until

from robust_collector import Collector
from robust_collector.config import Config
from robust_collector.model import Quote, make_tick_id, now_us

pytestmark = pytest.mark.integration

SYMBOLS = ["SPY", "QQQ"]


class CountingFeed:
    """Good quotes, every seventh out of the price range (a reject); counts what it emits."""

    name = "counting"

    def __init__(self) -> None:
        self.emitted: dict[str, int] = {}
        self.run_id = "r"
        self._lock = threading.Lock()

    async def start(self, run_id: str) -> None:
        self.run_id = run_id

    async def fetch(self, symbol: str) -> Quote:
        with self._lock:
            seq = self.emitted[symbol] = self.emitted.get(symbol, 0) + 1
        p = 1e7 if seq % 7 == 0 else 100.0 + (seq % 5) * 0.01
        now = now_us()
        return Quote(
            make_tick_id(self.run_id, symbol, seq),
            symbol,
            seq,
            now,
            now,
            p,
            p + 0.02,
            1.0,
            1.0,
            None,
            self.name,
        )

    async def aclose(self) -> None:
        pass


def replace(db: Path) -> None:
    """Another SQLite file (someone else's, with a table of its own) moved over the path."""
    other = db.with_name("other.db")
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (x TEXT)")
    conn.execute("INSERT INTO notes VALUES ('not yours')")
    conn.commit()
    conn.close()
    os.replace(other, db)


def delete(db: Path) -> None:
    db.unlink()


def remove_folder(db: Path) -> None:
    shutil.rmtree(db.parent)


FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "replaced": (replace, "was replaced by another file while open"),
    "deleted": (delete, "was removed while open"),
    "folder_removed": (remove_folder, "was removed while open"),
}


def count_by_symbol(paths: list[Path], table: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in paths:
        conn = sqlite3.connect(p)
        try:
            for sym, n in conn.execute(f"SELECT symbol, count(*) FROM {table} GROUP BY symbol"):
                out[sym] = out.get(sym, 0) + n
        finally:
            conn.close()
    return out


def ids(paths: list[Path], table: str, col: str) -> list[str]:
    out: list[str] = []
    for p in paths:
        conn = sqlite3.connect(p)
        try:
            out += [r[0] for r in conn.execute(f"SELECT {col} FROM {table}")]
        finally:
            conn.close()
    return out


@pytest.mark.parametrize(
    "fault",
    [
        "replaced",
        "deleted",
        "folder_removed",
    ],
)
def test_the_database_file_vanishing_under_a_running_collector_loses_nothing(
    make_config: Callable[..., Config], fault: str
) -> None:
    do, message = FAULTS[fault]
    cfg = make_config(
        symbols=SYMBOLS,
        realtime_data={
            "collect_interval_seconds": 0.01,
            "health_check": {"check_interval_seconds": 0.1},
        },
    )
    feed = CountingFeed()
    c = Collector(cfg, source=feed).start()
    db = Path(c.db_path)
    levels: list[tuple[str, int, tuple[str, ...]]] = []  # (level, db errors, reasons) seen

    def seen() -> Any:
        st = c.status()
        assert st.storage is not None
        h = c.health()
        levels.append((h.level.name, st.storage.db_errors, h.reasons))
        return st

    try:
        wait_until(
            lambda: all(s.stored >= 20 for s in seen().symbols.values()),
            timeout=10.0,
            what="ticks in the first file",
        )
        before = {s: c.status().symbols[s].stored for s in SYMBOLS}
        do(db)
        wait_until(
            lambda: seen().storage.db_errors >= 1,
            timeout=10.0,
            what="the writer to notice",
            detail=lambda: c.status().storage,
        )
        # collection goes on into the reopened file (a second database error: it does not)
        wait_until(
            lambda: (
                all(seen().symbols[s].stored >= before[s] + 20 for s in SYMBOLS)
                or c.status().storage.db_errors > 1
            ),
            timeout=10.0,
            what="ticks after the fault",
        )
        assert c.status().storage.db_errors == 1, c.status().storage.last_error
        # health says so (DEGRADED for a minute, the reason naming what happened)
        storage = c.health().component("storage")
        assert storage.level.name == "DEGRADED", storage
        assert any(message in r for r in storage.reasons), storage.reasons
        st = seen()
        assert st.running and st.storage is not None and st.storage.mode == "database"
        assert all(u.state == "running" and u.restarts == 0 for u in st.units.values()), st.units
    finally:
        summary = c.stop()
    ws = summary.storage
    assert ws is not None and ws.lost_rows == 0 and ws.db_errors >= 1
    assert db.exists()
    aside = sorted(db.parent.glob(f"{db.name}.orphaned-*"))
    assert len(aside) == (1 if fault == "replaced" else 0), aside
    files = [db, *aside]
    for f in files:  # no file is a mix of two databases
        conn = sqlite3.connect(f)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], f
        finally:
            conn.close()
    ticks = count_by_symbol(files, "ticks")
    rejects = count_by_symbol(files, "rejects")
    for sym in SYMBOLS:
        s = summary.symbols[sym]
        emitted = feed.emitted[sym]
        accounted = ticks.get(sym, 0) + rejects.get(sym, 0) + s.duplicates + s.lost
        assert accounted == emitted, (sym, emitted, ticks.get(sym), rejects.get(sym), s)
        assert s.lost == 0 and ticks[sym] == s.stored
    tick_ids = ids(files, "ticks", "tick_id")
    assert len(tick_ids) == len(set(tick_ids))  # the old file's rows kept once, not twice
    # the event is recorded where a notebook or `robust-collector health` looks for it
    conn = sqlite3.connect(db)
    try:
        errors = conn.execute(
            "SELECT error_type, message FROM errors WHERE component = 'storage'"
        ).fetchall()
        if fault == "replaced":  # the other file's own table is left alone
            assert conn.execute("SELECT x FROM notes").fetchall() == [("not yours",)]
    finally:
        conn.close()
    assert any(t == "StorageError" and message in m for t, m in errors), errors
    kept = "its rows were copied to"
    assert all(kept in m for t, m in errors if message in m), errors
    # what health said while it was handled: never worse than DEGRADED (it is no
    # outage), and once noticed, DEGRADED with the reason (asserted above)
    assert {lvl for lvl, _, _ in levels} <= {"HEALTHY", "DEGRADED"}, levels


def test_a_table_dropped_under_a_running_collector_is_set_up_again(
    make_config: Callable[..., Config],
) -> None:
    """DROP TABLE ticks (its rows copied aside in the same transaction) while collecting:
    the next write meets 'no such table', sets the schema up again and goes on in the
    database, not in backup until the run ends; nothing lost, nothing twice."""
    cfg = make_config(symbols=SYMBOLS, realtime_data={"collect_interval_seconds": 0.01})
    feed = CountingFeed()
    c = Collector(cfg, source=feed).start()
    try:
        c.wait_for(lambda s: all(x.stored >= 20 for x in s.symbols.values()), timeout=10)
        other = sqlite3.connect(c.db_path, timeout=10, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("CREATE TABLE aside AS SELECT * FROM ticks")
        other.execute("DROP TABLE ticks")
        other.execute("COMMIT")
        other.close()

        def in_table() -> int:
            conn = sqlite3.connect(c.db_path)
            try:
                return conn.execute("SELECT count(*) FROM ticks").fetchone()[0]
            except sqlite3.OperationalError:  # not there yet
                return 0
            finally:
                conn.close()

        wait_until(lambda: in_table() > 20, timeout=10, what="ticks in the re-created table")
        st = c.status().storage
        assert st is not None and st.mode == "database" and st.backup_files == 0, st
    finally:
        summary = c.stop()
    assert summary.storage is not None and summary.storage.lost_rows == 0
    ticks = count_by_symbol([c.db_path], "ticks")
    aside = count_by_symbol([c.db_path], "aside")
    rejects = count_by_symbol([c.db_path], "rejects")
    for sym in SYMBOLS:
        s = summary.symbols[sym]
        stored = ticks.get(sym, 0) + aside.get(sym, 0)
        assert stored + rejects.get(sym, 0) + s.duplicates == feed.emitted[sym], sym
    ids = [*ids_of(c.db_path, "ticks"), *ids_of(c.db_path, "aside")]
    assert len(ids) == len(set(ids))


def ids_of(db: Path, table: str) -> list[str]:
    return ids([db], table, "tick_id")
