"""Every signal that stops `robust-collector run` flushes the in-memory buffer first.

SIGHUP (the terminal closed) and SIGUSR1/SIGUSR2 used to kill the process with
their default action: every quote still in the buffer was lost. Here the flush
interval is long, the buffer large and health snapshots off (they flush too), so
the accepted quotes are only in memory when the signal arrives; afterwards the
run's accepted count must equal the ticks in the database plus the backup files.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CONFIG = """\
symbols: [SPY, QQQ, IWM]
storage: {flush_interval_seconds: 600}
realtime_data:
  collect_interval_seconds: 0.02
  buffer_size: 100000
  health_check: {enabled: false}
  backup: {backup_path: backups}
"""


def _lines(stream, out: queue.Queue[str | None]) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


def _wait_for_line(lines: queue.Queue[str | None], pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no line matching {pattern!r} within {timeout}s: {seen[-5:]}"
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        assert line is not None, f"the process ended first: {seen[-5:]}"
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m


def _backup_ticks(folder: Path, run_id: str) -> int:
    n = 0
    for f in folder.rglob("*.jsonl"):
        for line in f.read_text(errors="replace").splitlines():
            if '"kind":"tick"' in line and run_id in line:
                n += 1
    return n


@pytest.mark.parametrize(
    "sig",
    [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT],
    ids=lambda s: signal.Signals(s).name,
)
def test_stop_signal_flushes_the_in_memory_buffer(tmp_path: Path, sig: int) -> None:
    (tmp_path / "c.yaml").write_text(CONFIG)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "robust_collector.cli",
            "run",
            "--config",
            "c.yaml",
            "--status-interval",
            "0.1",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        run_id = _wait_for_line(lines, r": run (\S+),", 30).group(1)
        # quotes accepted, none stored yet: they are only in the collector's memory
        m = _wait_for_line(lines, r"accepted (\d{2,})  stored 0 ", 30)
        assert int(m.group(1)) >= 10
        os.kill(proc.pid, sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.returncode == 0, f"exit {proc.returncode}: {err[-2000:]}"
    assert "Traceback" not in err
    m = _wait_for_line(lines, r"^(\d+) quotes accepted, (\d+) rejected", 10)
    accepted = int(m.group(1))
    db = tmp_path / "data" / "market_data.db"
    conn = sqlite3.connect(db)
    try:
        stored = conn.execute("SELECT count(*) FROM ticks WHERE run_id = ?", (run_id,)).fetchone()[
            0
        ]
        (status,) = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    finally:
        conn.close()
    backed_up = _backup_ticks(tmp_path / "backups", run_id)
    assert accepted >= 10
    assert stored + backed_up == accepted, (stored, backed_up, accepted)
    assert status == "stopped"
