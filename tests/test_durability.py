"""Database failures in a real collector: batches go to backup files, come back, nothing lost.

Each test breaks the database for real (a lock held by another connection, an
immutable file, a parent that is not a directory, a write slower than the
timeout), checks health shows it, lets the database return and then proves that
every emitted quote is stored, rejected or a dropped duplicate, exactly once.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from robust_collector import Collector
from robust_collector.health import HealthLevel

pytestmark = pytest.mark.integration


def outage_config(make_config, **over):
    base = {
        "storage": {
            "write_timeout_seconds": 0.2,
            "breaker_timeout_seconds": 0.2,
            "flush_interval_seconds": 0.05,
        },
        "source": {"faults": {"bad_tick_rate": 0.05, "duplicate_rate": 0.02}},
        "realtime_data": {"health_check": {"check_interval_seconds": 0.1}},
    }
    for k, v in over.items():
        base[k] = {**base.get(k, {}), **v}
    return make_config(**base)


def assert_reconciles(c: Collector) -> None:
    """Per symbol: emitted = stored + rejected + duplicates, each sequence number once."""
    conn = sqlite3.connect(c.db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    status = c.status()
    for sym, emitted in c.source.emitted.items():
        stored = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM ticks WHERE symbol = ? AND run_id = ?", (sym, c.run_id)
            )
        ]
        rejected = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM rejects WHERE symbol = ? AND run_id = ?", (sym, c.run_id)
            )
        ]
        seen = stored + rejected
        assert len(seen) == len(set(seen)), f"{sym}: a sequence number stored twice"
        dups = status.symbols[sym].duplicates
        assert len(seen) + dups == emitted, (sym, len(stored), len(rejected), dups, emitted)
    assert status.storage.lost_rows == 0


def wait_backup_mode(c: Collector, rows: int = 60):
    return c.wait_for(
        lambda s: s.storage.mode != "database" and s.storage.ticks_to_backup >= rows, timeout=30
    )


def wait_recovered(c: Collector):
    return c.wait_for(
        lambda s: (
            s.storage.mode == "database"
            and s.storage.backup_files == 0
            and s.storage.replayed_rows > 0
        ),
        timeout=30,
    )


def check_health_shows_backup(c: Collector) -> None:
    snap = c.health()
    storage = snap.component("storage")
    assert storage.metrics["storage_mode"] == "backup"
    assert snap.level >= HealthLevel.DEGRADED
    assert any("writing to backup files" in r for r in snap.reasons), snap.reasons


def recovered_files(c: Collector) -> list[Path]:
    return sorted((Path(c.config.realtime_data.backup.backup_path) / "recovered").glob("*.jsonl"))


def test_locked_database_goes_to_backup_and_is_replayed(make_config):
    c = Collector(outage_config(make_config)).start()
    try:
        c.wait_for(lambda s: s.stored >= 30, timeout=30)
        blocker = sqlite3.connect(c.db_path, timeout=0, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            wait_backup_mode(c)
            check_health_shows_backup(c)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        wait_recovered(c)
    finally:
        c.stop()
    assert_reconciles(c)
    assert recovered_files(c)
    conn = sqlite3.connect(c.db_path)
    assert conn.execute("SELECT count(*) FROM errors WHERE component = 'storage'").fetchone()[0] > 0


def _can_chattr(path: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0


def test_read_only_database_goes_to_backup_and_is_replayed(make_config, tmp_path):
    probe = tmp_path / "probe"
    probe.write_text("x")
    root = os.geteuid() == 0
    if root and not _can_chattr(probe):
        pytest.skip(
            "running as root on a filesystem without chattr +i: cannot make a file read-only"
        )
    if root:
        subprocess.run(["chattr", "-i", str(probe)], check=True)
    c = Collector(outage_config(make_config)).start()
    files: list[Path] = []
    try:
        c.wait_for(lambda s: s.stored >= 30, timeout=30)
        files = [p for p in (c.db_path, Path(f"{c.db_path}-wal")) if p.exists()]
        for p in files:
            if root:
                subprocess.run(["chattr", "+i", str(p)], check=True)
            else:
                p.chmod(0o444)
        try:
            wait_backup_mode(c)
            check_health_shows_backup(c)
        finally:
            for p in files:
                if root:
                    subprocess.run(["chattr", "-i", str(p)], check=True)
                else:
                    p.chmod(0o644)
        wait_recovered(c)
    finally:
        c.stop()
    assert_reconciles(c)


def test_missing_directory_at_start_then_created(make_config, tmp_path):
    blocker = tmp_path / "dbdir"
    blocker.write_text("a file where the database folder should be")
    c = Collector(
        outage_config(make_config, storage={"database": str(blocker / "ticks.db")})
    ).start()
    try:
        wait_backup_mode(c)
        check_health_shows_backup(c)
        blocker.unlink()  # the folder can now be created: the database "returns"
        wait_recovered(c)
    finally:
        c.stop()
    assert_reconciles(c)
    conn = sqlite3.connect(c.db_path)
    # the run row was queued while the database was missing and written once it returned
    assert (
        conn.execute("SELECT status FROM runs WHERE run_id = ?", (c.run_id,)).fetchone()[0]
        == "stopped"
    )


def test_write_slower_than_the_timeout_goes_to_backup(make_config):
    cfg = outage_config(
        make_config,
        storage={"write_timeout_seconds": 0.000001},
        realtime_data={"buffer_size": 400, "health_check": {"check_interval_seconds": 0.1}},
    )
    c = Collector(cfg).start()
    try:
        wait_backup_mode(c, rows=400)
        assert "took longer than" in (c.status().storage.last_error or "")
        c._writer.write_timeout = 5.0  # the disk is fast again
        wait_recovered(c)
    finally:
        c.stop()
    assert_reconciles(c)


def test_database_and_backup_both_failing_is_critical_and_nothing_is_lost(make_config, tmp_path):
    blocker = tmp_path / "dbdir"
    blocker.write_text("not a folder")
    backup_blocker = tmp_path / "bkdir"
    backup_blocker.write_text("not a folder either")
    cfg = outage_config(
        make_config,
        storage={"database": str(blocker / "ticks.db")},
        realtime_data={
            "backup": {"backup_path": str(backup_blocker / "backups")},
            "health_check": {"check_interval_seconds": 0.1},
        },
    )
    c = Collector(cfg).start()
    try:
        c.wait_for(lambda s: s.storage.mode == "failing" and s.storage.held_rows >= 50, timeout=30)
        snap = c.health()
        assert snap.level is HealthLevel.CRITICAL
        assert any("both failing" in r for r in snap.reasons)
        backup_blocker.unlink()  # the backup disk comes back first
        c.wait_for(lambda s: s.storage.held_rows == 0 and s.storage.ticks_to_backup > 0, timeout=30)
        blocker.unlink()  # then the database
        wait_recovered(c)
    finally:
        c.stop()
    assert_reconciles(c)


def test_outage_in_the_middle_of_a_run_reconciles(make_config):
    c = Collector(outage_config(make_config)).start()
    try:
        for _ in range(2):  # two outages in one run
            c.wait_for(lambda s: s.storage.mode == "database", timeout=30)
            blocker = sqlite3.connect(c.db_path, timeout=0, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            start = c.status().storage.ticks_to_backup
            c.wait_for(lambda s, start=start: s.storage.ticks_to_backup >= start + 40, timeout=30)
            blocker.execute("ROLLBACK")
            blocker.close()
            wait_recovered(c)
    finally:
        c.stop()
    assert_reconciles(c)
    assert len(recovered_files(c)) >= 2


def test_a_large_backlog_replays_while_every_symbol_keeps_polling(make_config, tmp_path):
    from robust_collector.storage.backup import BackupWriter

    backups = tmp_path / "backups"
    rows = [
        (
            f"old:SPY:{i}",
            "SPY",
            i,
            1_700_000_000_000_000 + i,
            1_700_000_000_000_000 + i,
            100.0,
            100.01,
            1.0,
            1.0,
            None,
            "simulated",
            "old",
        )
        for i in range(1, 600_001)
    ]
    with BackupWriter(backups, "old", max_file_bytes=2_000_000) as w:
        for i in range(0, len(rows), 10_000):
            w.write_batch(rows[i : i + 10_000])
    cfg = make_config(storage={"queue_max_batches": 2, "queue_full_block_ms": 10})
    c = Collector(cfg).start()
    try:
        c.wait_for(lambda s: s.storage.replayed_rows > 0 and s.storage.backup_files > 0, timeout=60)
        before = {k: v.quotes for k, v in c.status().symbols.items()}
        # while the old backlog is replayed file by file, new quotes keep coming
        st = c.wait_for(
            lambda s: all(s.symbols[k].quotes >= before[k] + 20 for k in before), timeout=30
        )
        assert st.storage.backup_files > 0, "the replay finished first: make the backlog bigger"
        c.wait_for(lambda s: s.storage.backup_files == 0, timeout=120)
    finally:
        c.stop()
    conn = sqlite3.connect(c.db_path)
    assert conn.execute("SELECT count(*) FROM ticks WHERE run_id = 'old'").fetchone()[0] == 600_000
    assert_reconciles(c)


@pytest.mark.parametrize("fault", ["file", "folder"])
def test_database_file_removed_while_running_is_reopened_and_nothing_is_lost(make_config, fault):
    """Once the connection kept writing into the unlinked file: health HEALTHY, 0 ticks
    in the database. Now the writer notices at its next write, copies what the open file
    holds back to the path, reopens, and says so."""
    c = Collector(outage_config(make_config)).start()
    try:
        c.wait_for(lambda s: s.stored >= 30, timeout=30)
        if fault == "file":
            c.db_path.unlink()
        else:
            shutil.rmtree(c.db_path.parent)
        c.wait_for(lambda s: "was removed while open" in (s.storage.last_error or ""), timeout=10)
        stored = c.status().stored
        c.wait_for(lambda s: s.stored >= stored + 30, timeout=30)
        assert c.db_path.exists()
    finally:
        c.stop()
    assert_reconciles(c)
    conn = sqlite3.connect(c.db_path)
    messages = [r[0] for r in conn.execute("SELECT message FROM errors WHERE component='storage'")]
    assert any("was removed while open" in m and "reopened" in m for m in messages)
