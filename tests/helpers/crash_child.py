"""A collector under heavy simulated load with database outages, to be killed with SIGKILL.

Usage: python crash_child.py WORKDIR
Ten symbols polled every 2 ms, the first five also for trades; a thread takes an exclusive lock on the database
for 150 ms every 300 ms, so batches go to the JSONL backup files and are
replayed, over and over. The parent kills this process at a random moment.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from pathlib import Path

from robust_collector import Collector
from robust_collector.config import config_from_dict

SYMBOLS = [f"S{i}" for i in range(10)]


def config(workdir: Path):
    return config_from_dict(
        {
            "symbols": SYMBOLS,
            "source": {
                "faults": {"bad_tick_rate": 0.02},
                "data_by_symbol": {s: ["quotes", "trades"] for s in SYMBOLS[:5]},
            },
            "storage": {
                "database": "ticks.db",
                "write_timeout_seconds": 0.05,
                "breaker_timeout_seconds": 0.05,
                "flush_interval_seconds": 0.01,
            },
            "realtime_data": {
                "collect_interval_seconds": 0.002,
                "buffer_size": 25,
                "backup": {"backup_path": "backups", "max_file_mb": 0.05},
                "health_check": {"check_interval_seconds": 0.2},
            },
        },
        base_dir=workdir,
    )


def outages(db: Path) -> None:
    while True:
        time.sleep(0.3)
        try:
            conn = sqlite3.connect(db, timeout=1, isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            time.sleep(0.15)
            conn.execute("ROLLBACK")
            conn.close()
        except sqlite3.Error:
            pass


def main() -> None:
    workdir = Path(sys.argv[1])
    c = Collector(config(workdir)).start()
    threading.Thread(target=outages, args=(c.db_path,), daemon=True).start()
    print(c.run_id, flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
