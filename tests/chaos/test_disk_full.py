"""Disk full: the database and then the backup files hit RLIMIT_FSIZE in a real process.

The child collects on the simulated feed with a file-size limit set on itself
(SIGXFSZ ignored, so a write past the limit fails with EFBIG as on a full disk).
The database fills first, the backup files take over, and when they fill too the
rows are held, then counted lost at stop. The parent checks that every quote is
accounted for: stored, in a backup file, rejected, a duplicate, or counted lost.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from robust_collector.storage.backup import list_backup_files, read_backup_file

pytestmark = pytest.mark.integration

CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys, time
    from pathlib import Path
    from robust_collector import Collector
    from robust_collector.config import config_from_dict

    work, limit, backup_mb = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full disk: EFBIG, not a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    cfg = config_from_dict(
        {
            "symbols": ["SPY", "QQQ", "IWM"],
            "storage": {"database": "ticks.db", "flush_interval_seconds": 0.02 if backup_mb < 1 else 10,
                        "write_timeout_seconds": 0.5, "breaker_timeout_seconds": 0.1},
            "realtime_data": {
                "collect_interval_seconds": 0.001,
                "buffer_size": 200,
                "backup": {"backup_path": "backups", "max_file_mb": backup_mb},
                "health_check": {"check_interval_seconds": 0.2},
            },
        },
        base_dir=work,
    )
    c = Collector(cfg).start()
    levels = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = c.status()
        levels.add(st.health_level)
        ws = st.storage
        if ws.mode == "failing" and ws.held_rows > 2000:
            break  # database and backup both failing: rows held in memory
        if ws.mode != "database" and ws.ticks_to_backup > 2000 and backup_mb * 1e6 < limit:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    levels.add(c.status().health_level)
    s = c.stop()
    print(json.dumps({
        "quotes": {k: v.quotes for k, v in s.symbols.items()},
        "duplicates": sum(v.duplicates for v in s.symbols.values()),
        "lost": sum(v.lost for v in s.symbols.values()),
        "lost_rows": s.storage.lost_rows,
        "ticks_to_backup": s.storage.ticks_to_backup,
        "db_errors": s.storage.db_errors,
        "backup_errors": s.storage.backup_errors,
        "levels": sorted(str(x) for x in levels),
    }))
    """
)


@pytest.mark.parametrize(
    ("limit", "backup_mb", "backup_fills"),
    [(400_000, 0.1, False), (20_000, 5.0, True)],
    ids=["database-full", "database-and-backup-full"],
)
def test_disk_full_loses_nothing_uncounted(
    tmp_path: Path, limit: int, backup_mb: float, backup_fills: bool
) -> None:
    p = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(limit), str(backup_mb)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["db_errors"] > 0  # the database did fill up
    conn = sqlite3.connect(tmp_path / "ticks.db")
    tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    # (at 20 KB even the schema does not fit: the database never opens)
    stored = conn.execute("SELECT count(*) FROM ticks").fetchone()[0] if "ticks" in tables else 0
    rejected = (
        conn.execute("SELECT count(*) FROM rejects").fetchone()[0] if "rejects" in tables else 0
    )
    in_backup = 0
    for f in list_backup_files(tmp_path / "backups"):
        contents = read_backup_file(f)
        in_backup += len(contents.ticks) + len(contents.rejects)
    emitted = sum(r["quotes"].values())
    accounted = stored + rejected + in_backup + r["duplicates"] + r["lost"] + r["lost_rows"]
    assert accounted == emitted, (r, stored, rejected, in_backup)
    if backup_fills:  # a 200-row batch is larger than any file may grow: nothing fits
        assert r["backup_errors"] > 0 and r["lost_rows"] > 0
        assert "CRITICAL" in r["levels"]
    else:
        assert in_backup > 0 and r["lost_rows"] == 0 and r["backup_errors"] == 0
        assert "DEGRADED" in r["levels"] or "UNHEALTHY" in r["levels"]
