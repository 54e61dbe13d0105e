"""Trades on the storage path (issue 19): the writer stores them with ticks in one
transaction, a database outage sends them to the backup files, replay stores each
exactly once, and recovery, its report, quarantine and the readers know them."""

from __future__ import annotations

import shutil
import sqlite3
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers.waiting import wait_until

from robust_collector.storage import recovery
from robust_collector.storage.backend import (
    TRADES_PER_STATEMENT,
    SQLiteBackend,
    sliced,
)
from robust_collector.storage.backup import (
    BackupWriter,
    backlog,
    decode_line,
    encode_batch,
    list_backup_files,
    read_backup_file,
)
from robust_collector.storage.reader import read_ticks, read_trade_rejects, read_trades
from robust_collector.storage.recovery import recover, replay_backlog
from robust_collector.storage.schema import connect, open_database
from robust_collector.storage.tables import TRADE_COLUMNS, TRADE_REJECT_COLUMNS
from robust_collector.storage.writer import Batch, StorageWriter

pytestmark = pytest.mark.integration  # real writer threads, SQLite files, a reader process

RUN = "20260101T000000Z-trades01"
T0 = 1_767_225_600_000_000


def trade(i: int, symbol: str = "SPY", **over: Any) -> tuple[Any, ...]:
    """A trades row in TRADE_COLUMNS order; keyword arguments replace columns."""
    values = dict(
        zip(
            TRADE_COLUMNS,
            (f"{RUN}:{symbol}:t{i}", symbol, i, T0 + i // 3, T0 + i // 3 + 400),
            strict=False,
        )
    )
    # several trades share a microsecond and a price: each is a trade of its own
    values.update(price=100.0 + (i // 3) / 100, size=float(100 * (i % 7 + 1)))
    values.update(venue="NQ"[i % 2], conditions="@ F" if i % 5 else None, correction=0)
    values.update(provider_id=f"p{i}" if i % 4 else None, tape="C", source="replay", run_id=RUN)
    values.update(over)
    return tuple(values[c] for c in TRADE_COLUMNS)


def trade_reject(i: int, symbol: str = "SPY", rule: str = "price_positive") -> tuple[Any, ...]:
    """A trade_rejects row in TRADE_REJECT_COLUMNS order."""
    return (*trade(i, symbol, price=-1.0), rule, f"trade {i} refused", T0 + 10_000 + i)


def tick(i: int) -> tuple[Any, ...]:
    """A ticks row (for batches that mix quotes and trades)."""
    return (f"{RUN}:SPY:{i}", "SPY", i, T0 + i, T0 + i, 99.9, 100.1, 3.0, 4.0, None, "sim", RUN)


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def count(db: Path, table: str) -> int:
    return rows(db, f"SELECT count(*) FROM {table}")[0][0]


def replayer(backend: SQLiteBackend, folder: Path) -> Any:
    """The collector's in-run replay: one file per call, errors raised to the writer."""

    def replay(conn: Any) -> tuple[int, int]:
        report = replay_backlog(backend.sink(conn), folder, max_files=1)
        report.raise_for_errors()
        return report.inserted, int(report.totals["recovered"])

    return replay


# -- the writer ------------------------------------------------------------------------------


def test_trades_and_trade_rejects_are_stored_with_ticks_by_the_writer(tmp_path):
    db = tmp_path / "t.db"
    w = StorageWriter(db)
    w.start()
    try:
        w.submit(Batch([tick(1)], [], [], [trade(i) for i in range(6)], [trade_reject(6)]))
        w.submit(Batch(trades=[trade(i, "QQQ") for i in range(3)]))
        wait_until(lambda: w.stats().batches_written == 2, timeout=10, detail=w.stats)
    finally:
        w.stop(10)
    st = w.stats()
    assert (st.ticks_written, st.trades_written, st.trade_rejects_written) == (1, 9, 1)
    assert st.trades_stored_by_symbol == {"SPY": 6, "QQQ": 3}
    assert st.stored_by_symbol == {"SPY": 1}  # ticks keep their own count
    assert (st.trades_to_backup, st.lost_rows, st.mode) == (0, 0, "database")
    assert rows(db, "PRAGMA journal_mode") == [("wal",)]
    stored = rows(db, f"SELECT {', '.join(TRADE_COLUMNS)} FROM trades ORDER BY symbol, seq")
    assert stored == [trade(i, "QQQ") for i in range(3)] + [trade(i) for i in range(6)]
    assert rows(db, "SELECT * FROM trade_rejects") == [trade_reject(6)]
    assert count(db, "ticks") == 1


def test_the_many_row_statements_store_every_trade_once_and_skip_stored_ones(tmp_path):
    n = TRADES_PER_STATEMENT
    b = SQLiteBackend(tmp_path / "m.db")
    conn = b.connect()
    try:
        b.write(conn, [], [], [], trades=[trade(i) for i in range(2 * n + 5)])
        # overlaps the first batch by n + 5 rows: OR IGNORE skips them, row by row
        b.write(conn, [], [], [], trades=[trade(i) for i in range(n, 3 * n + 7)])
    finally:
        b.close(conn)
    got = rows(
        tmp_path / "m.db", "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM trades"
    )
    assert got == [(3 * n + 7, 3 * n + 7, 0, 3 * n + 6)]


def test_a_trade_the_driver_refuses_is_stored_cleaned_not_sent_to_backup(tmp_path):
    """Trades carry the provider's text (venue, conditions, ids): a lone surrogate there
    is retried through safe_row, as a tick's would be."""
    db = tmp_path / "t.db"
    w = StorageWriter(db, fallback=BackupWriter(tmp_path / "b", RUN))
    w.start()
    try:
        w.submit(Batch(trades=[trade(1, conditions="@\ud83d"), trade(2)]))
        wait_until(lambda: w.stats().trades_written == 2, timeout=10, detail=w.stats)
    finally:
        w.stop(10)
    assert w.stats().trades_to_backup == 0 and w.stats().lost_rows == 0
    ((conditions,),) = rows(db, "SELECT conditions FROM trades WHERE seq = 1")
    assert conditions.startswith("@") and "\ud83d" not in conditions


# -- a database outage: backup, then replay exactly once ---------------------------------------


def test_an_outage_sends_trades_to_backup_and_replay_stores_them_exactly_once(tmp_path):
    db, folder = tmp_path / "t.db", tmp_path / "backups"
    backend = SQLiteBackend(db, timeout=0.3)
    w = StorageWriter(
        backend,
        write_timeout=0.3,
        fallback=BackupWriter(folder, RUN),
        replay=replayer(backend, folder),
        backlog=lambda: backlog(folder)[0],
    )
    locker: sqlite3.Connection | None = None
    w.start()
    try:
        w.submit(Batch(trades=[trade(0)]))
        wait_until(lambda: w.stats().trades_written == 1, timeout=10, detail=w.stats)
        # another connection holds the write lock: every write times out (an outage)
        locker = connect(db)
        locker.execute("BEGIN IMMEDIATE")
        spilled = [trade(i) for i in range(1, 301)]
        w.submit(Batch([tick(1)], [], [], spilled[:150], [trade_reject(1000)]))
        w.submit(Batch(trades=spilled[150:]))
        wait_until(lambda: w.stats().trades_to_backup == 300, timeout=20, detail=w.stats)
        st = w.stats()
        assert st.mode == "backup" and st.trade_rejects_to_backup == 1 and st.ticks_to_backup == 1
        assert count(db, "trades") == 1  # nothing of it reached the database
        on_disk = [read_backup_file(p) for p in list_backup_files(folder)]
        assert [r for c in on_disk for r in c.trades] == spilled
        assert [r for c in on_disk for r in c.trade_rejects] == [trade_reject(1000)]

        locker.execute("ROLLBACK")  # the database is back: the next good write replays
        w.submit(Batch(trades=[trade(301)]))
        wait_until(
            lambda: w.stats().backup_files == 0 and w.stats().replayed_rows == 302,
            timeout=20,
            detail=w.stats,
        )
    finally:
        if locker is not None:
            locker.close()
        w.stop(10)
    st = w.stats()
    assert st.mode == "database" and st.lost_rows == 0 and st.held_rows == 0
    seqs = [r[0] for r in rows(db, "SELECT seq FROM trades ORDER BY seq")]
    assert seqs == list(range(302))  # every trade once: no gap, no repeat
    assert count(db, "trade_rejects") == 1 and count(db, "ticks") == 1

    # replaying the same file again (and again) stores nothing twice
    (done,) = (folder / "recovered").glob("*.jsonl")
    for _ in range(2):
        shutil.copy(done, folder / done.name)
        report = recover(db, folder, after="delete")
        assert report.ok and report.inserted == 0
        assert report.totals["trades"] == 300 and report.totals["already_present"] == 302
    assert count(db, "trades") == 302 and count(db, "trade_rejects") == 1


def test_trades_held_while_backup_fails_too_are_stored_when_the_database_returns(tmp_path):
    db = tmp_path / "t.db"
    not_a_folder = tmp_path / "backups"
    not_a_folder.write_text("a file where the backup folder should be")
    w = StorageWriter(db, write_timeout=0.3, fallback=BackupWriter(not_a_folder, RUN))
    locker: sqlite3.Connection | None = None
    w.start()
    try:
        w.submit(Batch(trades=[trade(0)]))
        wait_until(lambda: w.stats().trades_written == 1, timeout=10, detail=w.stats)
        locker = connect(db)
        locker.execute("BEGIN IMMEDIATE")
        w.submit(Batch(trades=[trade(i) for i in range(1, 41)], trade_rejects=[trade_reject(99)]))
        wait_until(lambda: w.stats().held_rows == 41, timeout=20, detail=w.stats)
        assert w.stats().mode == "failing" and w.stats().trades_to_backup == 0
        locker.execute("ROLLBACK")
        wait_until(lambda: w.stats().held_rows == 0, timeout=20, detail=w.stats)
    finally:
        if locker is not None:
            locker.close()
        w.stop(10)
    assert w.stats().lost_rows == 0
    assert count(db, "trades") == 41 and count(db, "trade_rejects") == 1


def test_a_stopped_writer_saves_a_late_batch_of_trades_to_backup(tmp_path):
    folder = tmp_path / "backups"
    w = StorageWriter(tmp_path / "t.db", fallback=BackupWriter(folder, RUN))
    w.start()
    w.stop(10)
    w.submit(Batch(trades=[trade(1), trade(2)], trade_rejects=[trade_reject(3)]))
    (path,) = list_backup_files(folder)
    saved = read_backup_file(path)
    assert saved.trades == [trade(1), trade(2)] and saved.trade_rejects == [trade_reject(3)]
    assert w.stats().trades_to_backup == 2 and w.stats().lost_rows == 0


# -- the backup lines ---------------------------------------------------------------------------


def test_trade_lines_are_checksummed_records_of_their_own_kind():
    blob = encode_batch([tick(1)], [], [trade(1)], [trade_reject(2)])
    lines = blob.splitlines(keepends=True)
    assert [decode_line(line)[0] for line in lines] == ["tick", "trade", "trade_reject"]
    record = orjson.loads(lines[1])
    assert record["kind"] == "trade" and record["venue"] == "Q" and record["correction"] == 0
    head = lines[1][: lines[1].rfind(b',"crc32":')]
    assert record["crc32"] == zlib.crc32(head)
    assert decode_line(lines[1]) == ("trade", trade(1))
    assert decode_line(lines[2]) == ("trade_reject", trade_reject(2))


def test_a_torn_batch_loses_only_the_newest_trades_and_rejects_of_each_symbol():
    """Trade rejects sit among the trades by symbol and seq (as rejects among ticks), so
    a write cut at any line keeps, per symbol and kind family, a prefix of the batch."""
    trades = [
        trade(i, sym) for i in range(1, 9) for sym in ("SPY", "QQQ") if (i, sym) != (4, "SPY")
    ]
    rejects = [trade_reject(4, "SPY"), trade_reject(11, "QQQ")]
    ticks = [tick(i) for i in range(1, 4)]
    blob = encode_batch(ticks, [], trades, rejects)
    lines = blob.splitlines(keepends=True)
    assert len(lines) == len(ticks) + len(trades) + len(rejects)
    assert [decode_line(line)[0] for line in lines[:3]] == ["tick"] * 3  # quote lines first
    kinds = [decode_line(line)[1][0] for line in lines]
    assert kinds.index(trade_reject(4)[0]) == kinds.index(trade(5)[0]) - 1  # just before seq 5
    assert kinds[-1] == trade_reject(11, "QQQ")[0]  # past every QQQ trade: at the end
    for cut in range(len(lines) + 1):
        kept: dict[tuple[str, str], list[int]] = defaultdict(list)
        for line in lines[:cut]:
            kind, row = decode_line(line)
            family = "tick" if kind in ("tick", "reject") else "trade"
            kept[(family, row[1])].append(row[2])
        for (family, sym), seqs in kept.items():
            every = sorted(
                r[2] for r in (ticks if family == "tick" else trades + rejects) if r[1] == sym
            )
            assert seqs == every[: len(seqs)], (cut, family, sym)


def test_slices_of_a_replay_keep_every_kind_in_order():
    t, r, tr, trr = (
        [(k, i) for i in range(n)] for k, n in (("t", 5), ("r", 2), ("tr", 7), ("x", 3))
    )
    pieces = list(sliced(t, r, 3, trades=tr, trade_rejects=trr))
    assert all(sum(map(len, p)) <= 3 for p in pieces)
    for k, whole in enumerate((t, r, tr, trr)):
        assert [row for p in pieces for row in p[k]] == whole
    assert list(sliced(t, r, 100, trades=tr, trade_rejects=trr)) == [(t, r, tr, trr)]


# -- recovery and its report --------------------------------------------------------------------


def test_recovery_reports_trades_and_quarantines_a_refused_trade(tmp_path):
    folder = tmp_path / "backups"
    with BackupWriter(folder, RUN, max_file_bytes=1) as w:
        w.write_batch([], [], [trade(1), trade(2, ts_us=2**63 + 5), trade(3)], [trade_reject(4)])
        w.write_batch([tick(1)], [], [trade(5)])
    first = list_backup_files(folder)[0]
    data = first.read_bytes().splitlines(keepends=True)
    broken = bytearray(data[0])
    broken[20] ^= 0x01  # a flipped bit in the first trade line
    first.write_bytes(bytes(broken) + b"".join(data[1:]))

    dry = recover(tmp_path / "t.db", folder, dry_run=True)
    assert dry.inserted == 4 and dry.totals["quarantined"] == 1
    report = recover(tmp_path / "t.db", folder)
    assert report.ok, report.summary()
    files = report.files.select("trades", "trade_rejects", "ticks", "inserted").rows()
    assert files == [(2, 1, 0, 2), (1, 0, 1, 2)]  # the corrupt line is not counted as a trade
    t = report.totals
    assert (t["trades"], t["trade_rejects"], t["corrupt"], t["quarantined"]) == (3, 1, 1, 1)
    assert "3 trades, 1 trade rejects" in report.summary()
    assert report.problems["line"].to_list() == [1]
    stored = [r[0] for r in rows(tmp_path / "t.db", "SELECT seq FROM trades ORDER BY seq")]
    assert stored == [3, 5]
    (qfile,) = (folder / recovery.QUARANTINE_DIR).glob("*.jsonl")
    (line,) = qfile.read_text().splitlines()
    record = orjson.loads(line)
    assert record["kind"] == "trade" and record["row"]["trade_id"] == trade(2)[0]
    assert record["row"]["ts_us"] == str(2**63 + 5) and "64-bit" in record["reason"]


def test_a_backup_file_from_before_trades_still_replays(tmp_path):
    """A file written before trades existed (tick and reject lines only, as then) replays
    as it did, and the report's line says nothing about trades."""
    folder = tmp_path / "backups"
    folder.mkdir()
    head = (
        b'{"kind":"tick","tick_id":"old:SPY:1","symbol":"SPY","seq":1,"ts_us":10,'
        b'"recv_us":11,"bid":1.0,"ask":1.1,"bid_size":null,"ask_size":null,"last":null,'
        b'"source":"sim","run_id":"old"'
    )
    (folder / "ticks-old-000001.jsonl").write_bytes(b'%s,"crc32":%d}\n' % (head, zlib.crc32(head)))
    report = recover(tmp_path / "t.db", folder)
    assert report.ok and report.inserted == 1 and report.totals["trades"] == 0
    assert "trade" not in report.summary()
    assert read_ticks(tmp_path / "t.db")["tick_id"].to_list() == ["old:SPY:1"]


def test_200_000_trades_go_through_backup_and_recovery_once(tmp_path):
    folder, db = tmp_path / "backups", tmp_path / "t.db"
    n = 200_000
    symbols = ("SPY", "QQQ", "IWM", "AAPL")
    with BackupWriter(folder, RUN, fsync="never") as w:
        for start in range(0, n, 10_000):
            batch = [trade(i, symbols[i % 4]) for i in range(start, start + 10_000)]
            rejects = [trade_reject(n + start // 10_000)]
            w.write_batch([], [], batch, rejects)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    report = recover(db, folder, reader_process=True)  # the chunks cross a process boundary
    assert report.ok, report.summary()
    assert (report.totals["trades"], report.totals["trade_rejects"]) == (n, 20)
    assert report.inserted == n + 20 and report.totals["corrupt"] == 0
    got = rows(
        db,
        "SELECT count(*), count(DISTINCT trade_id), min(seq), max(seq), sum(seq), "
        "count(DISTINCT symbol) FROM trades",
    )
    assert got == [(n, n, 0, n - 1, n * (n - 1) // 2, 4)]
    assert count(db, "trade_rejects") == 20
    spot = rows(db, f"SELECT {', '.join(TRADE_COLUMNS)} FROM trades WHERE seq = 123457")
    assert spot == [trade(123457, symbols[123457 % 4])]
    again = recover(db, copy)  # the same files once more: nothing stored twice
    assert again.inserted == 0 and again.totals["already_present"] == n + 20
    assert count(db, "trades") == n


# -- readers ---------------------------------------------------------------------------------------


def test_read_trades_and_trade_rejects_filter_and_carry_utc_datetimes(tmp_path):
    db = tmp_path / "t.db"
    conn = open_database(db)
    conn.executemany(
        f"INSERT INTO trades VALUES ({', '.join('?' * len(TRADE_COLUMNS))})",
        [trade(i) for i in range(9)] + [trade(i, "QQQ", run_id="other") for i in range(3)],
    )
    conn.executemany(
        f"INSERT INTO trade_rejects VALUES ({', '.join('?' * len(TRADE_REJECT_COLUMNS))})",
        [trade_reject(20), trade_reject(21, rule="trade_outside_quotes")],
    )
    conn.close()
    df = read_trades(db)
    assert df.height == 12 and df["symbol"].to_list()[:3] == ["QQQ"] * 3
    assert str(df.schema["ts"]) == "Datetime(time_unit='us', time_zone='UTC')"
    assert df["ts"][0].isoformat() == "2026-01-01T00:00:00+00:00"
    # trades in one microsecond at one price stay apart, in sequence order
    spy = read_trades(db, symbol="SPY")
    assert spy.filter(spy["ts_us"] == T0)["seq"].to_list() == [0, 1, 2]
    assert read_trades(db, run_id="other").height == 3
    assert read_trades(db, since=T0 + 2)["seq"].to_list() == [6, 7, 8]
    rej = read_trade_rejects(db)
    assert rej["rule"].to_list() == ["price_positive", "trade_outside_quotes"]
    assert str(rej.schema["rejected_ts"]) == "Datetime(time_unit='us', time_zone='UTC')"
    assert read_trade_rejects(db, rule="trade_outside_quotes")["seq"].to_list() == [21]


def test_reading_trades_from_a_database_made_before_them_gives_an_empty_frame(tmp_path):
    db = tmp_path / "v2.db"
    conn = connect(db)
    conn.execute(
        "CREATE TABLE ticks (tick_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, seq INTEGER NOT NULL,"
        " ts_us INTEGER NOT NULL, recv_us INTEGER NOT NULL, bid REAL, ask REAL, bid_size REAL,"
        " ask_size REAL, last REAL, source TEXT NOT NULL, run_id TEXT NOT NULL)"
    )
    conn.execute("PRAGMA user_version=2")
    conn.close()
    df = read_trades(db)
    assert df.is_empty() and list(df.columns) == [*TRADE_COLUMNS, "ts", "recv_ts"]
    assert read_trade_rejects(db).is_empty()
    with pytest.raises(FileNotFoundError):
        read_trades(tmp_path / "missing.db")
