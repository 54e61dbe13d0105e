"""Finding 9 end to end: a streaming collector in a real interpreter that simply exits.

The child process starts a Collector on a local WebSocket feed (served from this
test process), waits for some quotes and returns from its script without calling
``stop()``: the collector's atexit handler stops it while the interpreter is
shutting down, when ``concurrent.futures`` refuses new work. Every quote the
collector accepted must then be in the database or in a backup file (replayed here
with ``recover``), none lost uncounted.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.ws_feed import KEY, SECRET, FakeFeed

from robust_collector.storage.recovery import recover

pytestmark = pytest.mark.integration

CHILD = textwrap.dedent(
    """
    import atexit, json, os, sys, threading, time
    from robust_collector import Collector
    from robust_collector.config import config_from_dict

    url, base, stop_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    holder = {}

    def report():  # registered first, so it runs after the collector's own atexit stop
        c = holder["c"]
        st = c.status()
        accepted = sum(s.accepted for s in st.symbols.values())
        print(json.dumps({"accepted": accepted, "db": str(c.db_path)}), flush=True)

    atexit.register(report)
    cfg = config_from_dict(
        {
            "symbols": ["SPY", "QQQ", "IWM"],
            "storage": {"database": "db/ticks.db", "flush_interval_seconds": 0.02},
            "realtime_data": {
                "buffer_size": 7,
                "backup": {"backup_path": "backups"},
                "health_check": {"check_interval_seconds": 0.05},
            },
            "source": {
                "type": "websocket",
                "preset": "alpaca",
                "base_url": url,
                "silence_floor_seconds": 5.0,
                "silence_ceiling_seconds": 30.0,
            },
        },
        base_dir=base,
    )
    c = holder["c"] = Collector(cfg).start()
    deadline = time.monotonic() + 20
    while c.stream_status()["quotes"] < stop_after and time.monotonic() < deadline:
        time.sleep(0.005)
    # no stop(): the interpreter exits with the stream flowing. A non-daemon thread still
    # finishing keeps the collector running for a while after concurrent.futures began
    # refusing new work (threading's exit hooks run before it joins such threads)
    threading.Thread(target=time.sleep, args=(0.3,)).start()
    """
)


def _count(db: str, table: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("run", range(4))
def test_quotes_accepted_before_interpreter_exit_are_stored_or_backed_up(
    tmp_path: Path, run: int
) -> None:
    feed = FakeFeed("alpaca", interval=0.002)
    try:
        _run_child(tmp_path, feed, stop_after=150 + 37 * run)
    finally:
        feed.close()


def _run_child(tmp_path: Path, feed: FakeFeed, stop_after: int) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {
        "PATH": "/usr/bin:/bin",
        "APCA_API_KEY_ID": KEY,
        "APCA_API_SECRET_KEY": SECRET,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    proc = subprocess.run(
        [sys.executable, str(script), feed.url, str(tmp_path), str(stop_after)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cannot schedule new futures" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, (proc.stdout, proc.stderr[-3000:])
    report = json.loads(lines[-1])
    assert report["accepted"] >= 150
    recover(report["db"], tmp_path / "backups")  # whatever went to backup, into the database
    assert _count(report["db"], "ticks") == report["accepted"]
