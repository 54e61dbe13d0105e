"""Replaying backup files into SQLite: idempotence, dry runs, locks, failures, the report."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from helpers.waiting import wait_until

from robust_collector.errors import StorageError
from robust_collector.storage import recovery
from robust_collector.storage.backup import RECOVERED_DIR, BackupWriter, backlog, list_backup_files
from robust_collector.storage.recovery import (
    FILE_REPORT_SCHEMA,
    PROBLEM_SCHEMA,
    RecoveryReport,
    recover,
    replay_backlog,
    replay_file,
)
from robust_collector.storage.schema import (
    INSERT_TICKS,
    REJECT_COLUMNS,
    TICK_COLUMNS,
    open_database,
)

pytestmark = pytest.mark.integration  # real SQLite files, real subprocesses

RUN = "20260101T000000Z-abcdef12"


def tick(i: int, **over: Any) -> tuple[Any, ...]:
    """A tick row in TICK_COLUMNS order; keyword arguments replace columns."""
    values = dict(
        zip(
            TICK_COLUMNS,
            (f"{RUN}:SPY:{i}", "SPY", i, 1_767_225_600_000_000 + i, 1_767_225_600_000_500 + i),
            strict=False,
        )
    )
    values.update(bid=100.0 + i / 7, ask=100.01 + i / 7, bid_size=300.0, ask_size=None)
    values.update(last=None if i % 2 else 100.005 + i / 7, source="simulated", run_id=RUN)
    values.update(over)
    return tuple(values[c] for c in TICK_COLUMNS)


def reject(i: int) -> tuple[Any, ...]:
    """A reject row in REJECT_COLUMNS order."""
    return (*tick(i), "price_range", f"price {i} out of range", 7 + i)


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def rewrite_line(path: Path, index: int, new: bytes) -> None:
    lines = lines_of(path)
    lines[index] = new
    path.write_bytes(b"".join(lines))


def stored(db: Path, table: str = "ticks") -> list[tuple[Any, ...]]:
    columns = TICK_COLUMNS if table == "ticks" else REJECT_COLUMNS
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY seq").fetchall()


def write_backups(
    folder: Path, batches: list[tuple[list[Any], list[Any]]], **kw: Any
) -> list[Path]:
    with BackupWriter(folder, RUN, **kw) as w:
        for ticks, rejects in batches:
            w.write_batch(ticks, rejects)
    return list_backup_files(folder)


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    """Three files: ticks 0-29 and rejects 100-102, in order."""
    folder = tmp_path / "backups"
    batches = [([tick(b * 10 + i) for i in range(10)], [reject(100 + b)]) for b in range(3)]
    files = write_backups(folder, batches, max_file_bytes=1)
    assert len(files) == 3
    return folder


def test_recover_replays_ticks_and_rejects_and_moves_files(tmp_path: Path, backups: Path) -> None:
    db = tmp_path / "new" / "dir" / "ticks.db"  # created, folder and all
    names = [p.name for p in list_backup_files(backups)]
    report = recover(db, backups)
    assert isinstance(report, RecoveryReport)
    assert stored(db) == [tick(i) for i in range(30)]
    assert stored(db, "rejects") == [reject(100 + b) for b in range(3)]
    assert list_backup_files(backups) == []
    assert sorted(p.name for p in (backups / "recovered").iterdir()) == names
    files = report.files
    assert files.schema == pl.Schema(FILE_REPORT_SCHEMA)
    assert files["file"].to_list() == names  # oldest first
    assert files["status"].to_list() == ["recovered"] * 3
    assert files["lines"].to_list() == [11] * 3
    assert files["ticks"].to_list() == [10] * 3
    assert files["rejects"].to_list() == [1] * 3
    assert files["inserted"].to_list() == [11] * 3
    assert files["already_present"].to_list() == [0] * 3
    assert report.problems.height == 0
    assert report.problems.schema == pl.Schema(PROBLEM_SCHEMA)
    assert report.totals["inserted"] == report.inserted == 33
    assert report.totals["recovered"] == 3 and report.ok
    assert all(r.moved_to is not None and r.moved_to.exists() for r in report.results)
    assert "3 recovered" in report.summary()


def test_recover_twice_inserts_nothing_the_second_time(tmp_path: Path, backups: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(backups, copy)
    db = tmp_path / "ticks.db"
    first = recover(db, backups)
    second = recover(db, copy)  # the same files again
    third = recover(db, backups)  # nothing left to do
    assert first.inserted == 33
    assert second.inserted == 0
    assert second.totals["already_present"] == 33
    assert second.files["status"].to_list() == ["recovered"] * 3
    assert third.results == [] and third.files.height == 0
    assert len(stored(db)) == 30


def test_dry_run_counts_without_writing_or_moving(tmp_path: Path, backups: Path) -> None:
    db = tmp_path / "ticks.db"
    before = sorted(p.name for p in backups.iterdir())
    report = recover(db, backups, dry_run=True)
    assert not db.exists()  # not even created
    assert sorted(p.name for p in backups.iterdir()) == before
    assert report.files["status"].to_list() == ["dry-run"] * 3
    assert report.inserted == 33
    # With part of it already stored, only the rest would be inserted.
    conn = open_database(db)
    conn.executemany(INSERT_TICKS, [tick(i) for i in range(5)])
    conn.close()
    report = recover(db, backups, dry_run=True)
    assert report.inserted == 28
    assert report.totals["already_present"] == 5
    assert len(stored(db)) == 5
    assert sorted(p.name for p in backups.iterdir()) == before
    with sqlite3.connect(db) as conn:  # the dry run left no temp tables behind in the file
        assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master")} >= {"ticks"}


def test_dry_run_counts_duplicates_across_files_once(tmp_path: Path) -> None:
    folder = tmp_path / "b"
    write_backups(folder, [([tick(1), tick(2)], []), ([tick(2), tick(3)], [])], max_file_bytes=1)
    assert recover(tmp_path / "t.db", folder, dry_run=True).inserted == 3
    real = recover(tmp_path / "t.db", folder)
    assert real.inserted == 3
    assert real.totals["already_present"] == 1


def test_after_delete_removes_files(tmp_path: Path, backups: Path) -> None:
    report = recover(tmp_path / "t.db", backups, after="delete")
    assert report.ok
    assert list(backups.iterdir()) == []
    assert all(r.moved_to is None for r in report.results)
    assert backlog(backups) == (0, 0)


def test_bad_arguments_are_refused(tmp_path: Path, backups: Path) -> None:
    with pytest.raises(ValueError, match="after"):
        recover(tmp_path / "t.db", backups, after="copy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        recover(tmp_path / "t.db", backups, batch_size=0)


def test_missing_backup_folder_is_an_empty_report(tmp_path: Path) -> None:
    report = recover(tmp_path / "t.db", tmp_path / "nothing")
    assert report.results == [] and report.ok
    assert report.totals["files"] == 0


def test_unopenable_database_raises_storage_error(tmp_path: Path, backups: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot open database"):
        recover(blocker / "t.db", backups)


def test_corrupt_lines_are_reported_and_good_lines_recovered(tmp_path: Path, backups: Path) -> None:
    first, second, third = list_backup_files(backups)
    flipped = bytearray(lines_of(first)[2])
    flipped[40] ^= 0x04
    rewrite_line(first, 2, bytes(flipped))
    rewrite_line(second, 0, b'{"kind":"tick", broken\n')
    third.write_bytes(third.read_bytes()[:-25])  # torn tail (the reject line)
    db = tmp_path / "t.db"
    report = recover(db, backups)
    assert report.ok
    files = report.files
    assert files["corrupt"].to_list() == [1, 1, 0]
    assert files["torn"].to_list() == [0, 0, 1]
    assert files["status"].to_list() == ["recovered"] * 3
    problems = report.problems
    assert problems.select("file", "line", "kind").rows() == [
        (first.name, 3, "corrupt"),
        (second.name, 1, "corrupt"),
        (third.name, 11, "torn"),
    ]
    assert "checksum mismatch" in problems["detail"][0]
    expected = [tick(i) for i in range(30) if i not in (2, 10)]
    assert stored(db) == expected
    assert stored(db, "rejects") == [reject(100), reject(101)]
    # Files with bad lines are kept (moved), so nothing is lost.
    assert sorted(p.name for p in (backups / "recovered").iterdir()) == sorted(
        p.name for p in (first, second, third)
    )
    assert "1 torn and 2 corrupt" in report.summary()


def test_file_locked_by_a_live_writer_is_skipped_as_in_use(tmp_path: Path) -> None:
    folder = tmp_path / "b"
    write_backups(folder, [([tick(1)], [])])
    live = BackupWriter(folder, RUN + "-live")
    live.write_batch([tick(2, run_id=RUN + "-live", tick_id="live:2")], [])
    db = tmp_path / "t.db"
    report = recover(db, folder)
    statuses = dict(zip(report.files["file"], report.files["status"], strict=True))
    assert live.active_path is not None
    assert statuses[live.active_path.name] == "in use"
    assert sorted(statuses.values()) == ["in use", "recovered"]
    assert report.ok  # in use is not a failure
    assert live.active_path.exists()
    live.close()
    report = recover(db, folder)
    assert report.files["status"].to_list() == ["recovered"]
    assert [r[0] for r in stored(db)] == [tick(1)[0], "live:2"]


def test_file_locked_by_another_process_is_in_use(tmp_path: Path) -> None:
    (path,) = write_backups(tmp_path / "b", [([tick(1)], [])])
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import fcntl, sys
                f = open({str(path)!r}, "ab")
                fcntl.flock(f, fcntl.LOCK_EX)
                print("locked", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        report = recover(tmp_path / "t.db", tmp_path / "b")
        assert report.files["status"].to_list() == ["in use"]
        assert path.exists()
    finally:
        holder.communicate("", timeout=10)
    assert recover(tmp_path / "t.db", tmp_path / "b").files["status"].to_list() == ["recovered"]


def fail_on(conn: sqlite3.Connection, tick_id: str) -> None:
    """Make inserting ``tick_id`` fail, as a database that breaks mid-file would."""
    conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON ticks "
        f"WHEN NEW.tick_id = '{tick_id}' BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
    )


def test_database_failure_mid_file_keeps_the_file_and_committed_chunks(tmp_path: Path) -> None:
    (path,) = write_backups(tmp_path / "b", [([tick(i) for i in range(25)], [])])
    db = tmp_path / "t.db"
    conn = open_database(db)
    fail_on(conn, tick(13)[0])
    result = replay_file(conn, path, batch_size=10)
    assert result.status.startswith("failed: database: IntegrityError")
    assert isinstance(result.error, sqlite3.Error)
    assert path.exists() and not (path.parent / "recovered").exists()
    assert result.inserted == 10  # the first chunk was committed, the second rolled back
    assert (result.lines, result.ticks, result.already_present) == (10, 10, 0)
    assert len(stored(db)) == 10
    assert not conn.in_transaction
    conn.execute("DROP TRIGGER boom")
    again = replay_file(conn, path, batch_size=10)
    assert again.status == "recovered"
    assert (again.inserted, again.already_present) == (15, 10)
    assert stored(db) == [tick(i) for i in range(25)]
    conn.close()


def test_database_error_stops_the_backlog_and_raise_for_errors(
    tmp_path: Path, backups: Path
) -> None:
    conn = open_database(tmp_path / "t.db")
    fail_on(conn, tick(15)[0])
    report = replay_backlog(conn, backups)
    assert report.files["status"].to_list()[0] == "recovered"
    assert report.files["status"][1].startswith("failed: database")
    assert report.files["status"][2] == "failed: not attempted after a database error"
    assert not report.ok and report.totals["failed"] == 2
    assert len(list_backup_files(backups)) == 2
    with pytest.raises(sqlite3.IntegrityError):
        report.raise_for_errors()
    assert "failed" in report.summary()
    conn.close()


def test_transactions_hold_batch_size_rows(tmp_path: Path) -> None:
    (path,) = write_backups(tmp_path / "b", [([tick(i) for i in range(25)], [reject(99)])])
    conn = open_database(tmp_path / "t.db")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    lines: list[int] = []
    result = replay_file(conn, path, batch_size=10, on_lines=lines.append)
    assert result.status == "recovered"
    assert lines == [10, 10, 6]
    assert sum(s.strip().upper() == "BEGIN" for s in statements) == 3
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL restored
    conn.close()


def test_replay_needs_a_connection_without_an_open_transaction(
    tmp_path: Path, backups: Path
) -> None:
    conn = open_database(tmp_path / "t.db")
    conn.execute("BEGIN")
    with pytest.raises(ValueError, match="open transaction"):
        replay_backlog(conn, backups)
    with pytest.raises(ValueError, match="open transaction"):
        replay_file(conn, list_backup_files(backups)[0])
    conn.rollback()
    conn.close()


def test_replay_backlog_on_the_writers_connection_with_max_files(
    tmp_path: Path, backups: Path
) -> None:
    conn = open_database(tmp_path / "t.db")
    report = replay_backlog(conn, backups, max_files=2)
    assert report.inserted == 22
    assert backlog(backups)[0] == 1
    assert replay_backlog(conn, backups).inserted == 11
    dry = replay_backlog(conn, backups, dry_run=True)
    assert dry.results == []
    conn.close()


def test_recovered_names_never_overwrite(tmp_path: Path) -> None:
    folder = tmp_path / "b"
    (path,) = write_backups(folder, [([tick(1)], [])])
    copy = path.read_bytes()
    recover(tmp_path / "t.db", folder)
    path.write_bytes(copy)  # the same name shows up again
    report = recover(tmp_path / "t.db", folder)
    assert report.results[0].moved_to == folder / "recovered" / f"{path.stem}.dup1.jsonl"
    assert len(list((folder / "recovered").iterdir())) == 2


def test_progress_bar_goes_to_stderr(
    tmp_path: Path, backups: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recover(tmp_path / "t.db", backups, progress=True)
    err = capsys.readouterr().err
    assert "recover" in err and "33" in err


@pytest.mark.parametrize("dry_run", [False, True])
def test_reader_process_gives_the_same_report(
    tmp_path: Path, backups: Path, dry_run: bool, caplog: pytest.LogCaptureFixture
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(backups, copy)
    rewrite_line(list_backup_files(backups)[1], 4, b"junk\n")
    rewrite_line(list_backup_files(copy)[1], 4, b"junk\n")
    inline = recover(tmp_path / "a.db", backups, dry_run=dry_run, reader_process=False)
    helper = recover(tmp_path / "b.db", copy, dry_run=dry_run, reader_process=True, batch_size=4)
    assert helper.files.drop("file").equals(inline.files.drop("file"))
    assert helper.problems.equals(inline.problems)
    assert "parsing inline" not in caplog.text  # the helper really did the parsing
    if not dry_run:
        assert stored(tmp_path / "a.db") == stored(tmp_path / "b.db")


def test_reader_process_that_cannot_start_falls_back_to_inline(
    tmp_path: Path, backups: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recovery.sys, "executable", "/bin/false")
    report = recover(tmp_path / "t.db", backups, reader_process=True)
    assert report.ok and report.inserted == 33


def test_reader_process_is_used_only_for_big_backlogs(
    tmp_path: Path, backups: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[bool] = []
    real = recovery._ReaderProcess

    def spy() -> recovery._ReaderProcess:
        started.append(True)
        return real()

    monkeypatch.setattr(recovery, "_ReaderProcess", spy)
    recover(tmp_path / "t.db", backups)
    assert started == []
    monkeypatch.setattr(recovery, "READER_PROCESS_MIN_BYTES", 1)
    monkeypatch.setattr(recovery.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    shutil.copytree(backups / "recovered", tmp_path / "again")
    report = recover(tmp_path / "u.db", tmp_path / "again")
    assert started == [True] and report.inserted == 33


def test_replay_file_dry_run_on_its_own(tmp_path: Path, backups: Path) -> None:
    conn = open_database(tmp_path / "t.db")
    conn.executemany(INSERT_TICKS, [tick(0), tick(1)])
    path = list_backup_files(backups)[0]
    result = replay_file(conn, path, dry_run=True)
    assert (result.status, result.inserted, result.already_present) == ("dry-run", 9, 2)
    assert path.exists()
    assert len(stored(tmp_path / "t.db")) == 2
    temp = conn.execute("SELECT name FROM temp.sqlite_master WHERE type='table'").fetchall()
    assert temp == []  # its scratch tables are gone
    conn.close()


def test_a_file_recovered_elsewhere_meanwhile_is_gone_not_failed(
    tmp_path: Path, backups: Path
) -> None:
    conn = open_database(tmp_path / "t.db")
    result = replay_file(conn, backups / "ticks-nobody-000001.jsonl")
    assert result.status == "gone" and result.error is None
    conn.close()


def test_dry_run_against_a_file_that_is_not_a_database(tmp_path: Path, backups: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="cannot open database"):
        recover(junk, backups, dry_run=True)


# -- issue 14, finding 5: a good line the database refuses is quarantined -----------------


def write_poisoned_backlog(folder: Path) -> None:
    """Two files: the first holds a checksummed line with ts_us >= 2^63 among good ones."""
    with BackupWriter(folder, RUN, max_file_bytes=1) as w:
        w.write_batch([tick(1), tick(2, ts_us=2**63 + 5), tick(3)], [reject(4)])
        w.write_batch([tick(5), tick(6)])


def test_a_line_the_database_refuses_is_quarantined_and_the_rest_goes_on(tmp_path):
    folder = tmp_path / "backups"
    write_poisoned_backlog(folder)
    report = recover(tmp_path / "t.db", folder)
    assert report.ok, report.summary()
    t = report.totals
    assert (t["recovered"], t["inserted"], t["quarantined"], t["already_present"]) == (2, 5, 1, 0)
    assert "quarantined" in report.summary()
    stored = [r[0] for r in sqlite3.connect(tmp_path / "t.db").execute("SELECT seq FROM ticks")]
    assert sorted(stored) == [1, 3, 5, 6]
    (qfile,) = (folder / recovery.QUARANTINE_DIR).glob("*.jsonl")
    (line,) = qfile.read_text().splitlines()
    record = orjson.loads(line)
    assert record["row"]["ts_us"] == str(2**63 + 5) and "64-bit" in record["reason"]
    assert report.results[0].quarantine_file == qfile
    assert list_backup_files(folder) == []  # both files recovered and moved


def test_a_dry_run_counts_refused_lines_without_writing_them(tmp_path):
    folder = tmp_path / "backups"
    write_poisoned_backlog(folder)
    report = recover(tmp_path / "t.db", folder, dry_run=True)
    assert report.totals["quarantined"] == 1 and report.inserted == 5
    assert not (folder / recovery.QUARANTINE_DIR).exists()


def test_the_automatic_replay_quarantines_too_and_the_writer_lives(tmp_path):
    """The collector's in-run replay (one file per call, raise_for_errors) over the same
    backlog: the writer neither dies nor retries the poisoned file forever."""
    from robust_collector.storage.backend import SQLiteBackend
    from robust_collector.storage.writer import Batch, StorageWriter

    folder = tmp_path / "backups"
    write_poisoned_backlog(folder)
    backend = SQLiteBackend(tmp_path / "t.db")

    def replay(conn: Any) -> tuple[int, int]:
        report = replay_backlog(backend.sink(conn), folder, max_files=1)
        report.raise_for_errors()
        return report.inserted, int(report.totals["recovered"])

    w = StorageWriter(
        backend,
        fallback=BackupWriter(tmp_path / "spill", "now"),
        replay=replay,
        backlog=lambda: backlog(folder)[0],
    )
    w.start()
    try:
        w.submit(Batch([tick(100)]))  # the first good write starts the replay
        wait_until(lambda: w.stats().replayed_rows >= 5, timeout=20.0, detail=lambda: w.stats())
        st = w.stats()
        assert st.backup_files == 0 and st.replayed_rows == 5 and st.alive, st
    finally:
        w.stop(10)
    assert len(list((folder / recovery.QUARANTINE_DIR).glob("*.jsonl"))) == 1


@pytest.mark.parametrize("planted", ["quarantine file", "quarantine folder", "recovered folder"])
def test_recovery_never_writes_or_moves_through_a_planted_symlink(tmp_path, planted):
    """A symbolic link planted at quarantine/<file>, quarantine/ or recovered/ is not
    followed: its target is untouched, the file it concerns is reported failed in one
    line and kept, and the other files go on (issue 16)."""
    folder = tmp_path / "backups"
    write_poisoned_backlog(folder)
    first = list_backup_files(folder)[0]
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("mine")
    if planted == "quarantine file":
        (folder / recovery.QUARANTINE_DIR).mkdir()
        (folder / recovery.QUARANTINE_DIR / first.name).symlink_to(victim / "precious.txt")
    elif planted == "quarantine folder":
        (folder / recovery.QUARANTINE_DIR).symlink_to(victim)
    else:
        (folder / RECOVERED_DIR).symlink_to(victim)
    report = recover(tmp_path / "t.db", folder)
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    assert (victim / "precious.txt").read_text() == "mine"
    failed = [r for r in report.results if r.status.startswith("failed")]
    assert failed and "symbolic link" in failed[0].status and "\n" not in failed[0].status
    assert first in list_backup_files(folder)  # kept for another try
    if planted != "recovered folder":  # the file without refused rows went through
        assert report.totals["recovered"] == 1
