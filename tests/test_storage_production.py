"""Durability at production size: a backup file of the default ``max_file_mb``, replayed
with the default write timeout while the collector collects live (issue 14).

The unit tests use small files; a 64 MB file replayed as one long transaction, or under
the deadline of the last write, or holding the lock ``submit`` waits on, once never
finished or stalled every symbol for seconds.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from pathlib import Path

import pytest

from robust_collector import Collector
from robust_collector.config import BackupConfig, StorageConfig
from robust_collector.storage.backup import BackupWriter, encode_batch, list_backup_files

pytestmark = pytest.mark.integration

# a collect interval ten times shorter than the default 1 s (the allowed gap is two of
# them); at 0.05 s a loaded 2-core machine's scheduling alone made 0.105 s gaps
INTERVAL = 0.1


def old_run_tick(i: int) -> tuple:
    """A tick of an earlier run (its own symbol, so it never meets a live tick id)."""
    ts = 1_767_225_600_000_000 + i
    return (f"old-run:OLD:{i}", "OLD", i, ts, ts, 100.0, 100.01, 300.0, 200.0, None, "sim", "old")


def write_default_size_backup(folder: Path, max_bytes: int) -> int:
    """One backup file filled up to ``max_bytes`` (the default rotation size); its rows."""
    per_line = len(encode_batch([old_run_tick(10**6)]))
    n = max_bytes // per_line - 1_000  # stays one file: lines of smaller ids are shorter
    with BackupWriter(folder, "old-run", max_file_bytes=max_bytes, fsync="never") as bw:
        for start in range(0, n, 20_000):
            bw.write_batch([old_run_tick(i) for i in range(start, min(n, start + 20_000))])
    files = list_backup_files(folder)
    assert len(files) == 1 and files[0].stat().st_size > max_bytes * 0.95
    return n


def test_a_default_size_backup_replays_during_live_collection_without_stalling_quotes(
    make_config,
):
    cfg = make_config(realtime_data={"collect_interval_seconds": INTERVAL})
    # the production defaults, not test-sized ones
    assert cfg.realtime_data.backup.max_file_mb == BackupConfig().max_file_mb
    assert cfg.storage.write_timeout_seconds == StorageConfig().write_timeout_seconds
    max_bytes = int(cfg.realtime_data.backup.max_file_mb * 1024 * 1024)
    rows = write_default_size_backup(Path(cfg.realtime_data.backup.backup_path), max_bytes)

    c = Collector(cfg)
    t0 = time.monotonic()
    start_us = time.time_ns() // 1000
    c.start()
    try:
        c.wait_for(lambda s: s.storage.replayed_rows >= rows and s.storage.backup_files == 0, 60)
        end_us = time.time_ns() // 1000
        replay_s = time.monotonic() - t0
    finally:
        status = c.stop()
    assert status.storage.replayed_rows == rows and status.storage.lost_rows == 0
    conn = sqlite3.connect(c.db_path)
    assert conn.execute("SELECT count(*) FROM ticks WHERE symbol = 'OLD'").fetchone()[0] == rows
    worst = {}
    for sym in c.symbols:
        recv = [
            r[0]
            for r in conn.execute(
                "SELECT recv_us FROM ticks WHERE symbol = ? AND run_id = ? "
                "AND recv_us BETWEEN ? AND ? "
                "UNION ALL SELECT recv_us FROM rejects WHERE symbol = ? AND run_id = ? "
                "AND recv_us BETWEEN ? AND ? ORDER BY 1",
                (sym, c.run_id, start_us, end_us) * 2,
            )
        ]
        assert len(recv) > 10, sym
        worst[sym] = max(b - a for a, b in itertools.pairwise(recv)) / 1e6
    print(f"replayed {rows} rows in {replay_s:.1f}s ({rows / replay_s:,.0f} rows/s); gaps {worst}")
    assert max(worst.values()) <= 2 * INTERVAL, worst
