"""SIGKILL at random moments: nothing corrupt, nothing twice, no hole in the middle.

A real subprocess collector under heavy load, with database outages that send
batches to the backup files, is killed with SIGKILL 20 times, each at a
different moment: half while the database is being written, half while backup
files are being written. After each kill the next run starts on the same files
(the restart) and ``recover`` replays what the killed run left. Then: the
database passes ``PRAGMA integrity_check``, no tick or trade id is stored twice,
and for each run and symbol the stored and rejected sequence numbers are one
contiguous run from 1 (only the unflushed tail may be missing), for quotes and for
the trades half the symbols collect.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.waiting import wait_until

from robust_collector.storage.recovery import recover

pytestmark = pytest.mark.integration

CHILD = Path(__file__).parent / "helpers" / "crash_child.py"
KILLS = 20


def count(db: Path, sql: str, params=()) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
        try:
            return conn.execute(sql, params).fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def backup_bytes(folder: Path) -> int:
    total = 0
    for p in folder.glob("*.jsonl") if folder.exists() else ():
        with contextlib.suppress(FileNotFoundError):  # replayed and removed since the glob
            total += p.stat().st_size
    return total


def check_database(db: Path) -> dict[str, int]:
    """Integrity, no id twice, contiguous seqs per run and symbol (quotes and trades);
    returns the rows per run (trades counted under ``<run>/trades``)."""
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    per_run: dict[str, int] = {}
    for rows_table, rejects_table, key, suffix in (
        ("ticks", "rejects", "tick_id", ""),
        ("trades", "trade_rejects", "trade_id", "/trades"),
    ):
        both = conn.execute(
            f"SELECT count(*) FROM {rows_table} t JOIN {rejects_table} r ON t.{key} = r.{key}"
        ).fetchone()[0]
        assert both == 0, f"a {key} is in both {rows_table} and {rejects_table}"
        rows = conn.execute(
            f"SELECT run_id, symbol, seq FROM {rows_table} "
            f"UNION ALL SELECT run_id, symbol, seq FROM {rejects_table}"
        ).fetchall()
        seqs: dict[tuple[str, str], list[int]] = {}
        for run_id, symbol, seq in rows:
            seqs.setdefault((run_id, symbol), []).append(seq)
        for (run_id, symbol), got in seqs.items():
            got.sort()
            assert got == list(range(1, len(got) + 1)), (
                f"{run_id} {symbol} {rows_table}: hole or duplicate"
            )
            per_run[run_id + suffix] = per_run.get(run_id + suffix, 0) + len(got)
    conn.close()
    return per_run


def test_sigkill_at_random_moments_leaves_nothing_corrupt(tmp_path):
    rng = random.Random(20261129)
    db = tmp_path / "ticks.db"
    backups = tmp_path / "backups"
    runs: list[str] = []
    replayed = torn = 0
    for i in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            run_id = proc.stdout.readline().strip()
            assert run_id, proc.stderr.read()
            runs.append(run_id)
            if i % 2 == 0:  # during database writes: after a random number of new rows
                target = rng.randint(20, 400)
                wait_until(
                    lambda run_id=run_id, target=target: (
                        count(db, "SELECT count(*) FROM ticks WHERE run_id = ?", (run_id,))
                        >= target
                    ),
                    timeout=60.0,
                    what="the kill moment",
                    step=0.002,
                    proc=proc,
                )
            else:  # during backup writes: once the backup files grew by a random amount
                start = backup_bytes(backups)
                target = rng.randint(1_000, 40_000)
                wait_until(
                    lambda start=start, target=target: backup_bytes(backups) - start >= target,
                    timeout=60.0,
                    what="the kill moment",
                    step=0.002,
                    proc=proc,
                )
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stdout.close()
            proc.stderr.close()
        report = recover(db, backups)
        assert report.ok, report.summary()
        replayed += report.inserted
        torn += report.totals["torn"]
        assert not list(backups.glob("*.jsonl")), "a backup file was left behind"
        check_database(db)
    per_run = check_database(db)
    # every killed run kept data, and the second recovery pass finds nothing new
    assert set(runs) <= set(per_run) and all(per_run[r] > 0 for r in runs)
    assert sum(per_run.get(f"{r}/trades", 0) for r in runs) > 0  # trades went through too
    again = recover(db, backups)
    assert again.inserted == 0
    assert replayed > 0  # the kills did leave backup files for recovery to replay
    print(f"{KILLS} kills: {replayed} rows replayed by recover, {torn} torn lines skipped")


# A small collector that only runs until it is killed (one heartbeat file beside ticks.db).
KILLED_CHILD = """
import sys, time
from pathlib import Path
from robust_collector import Collector
from robust_collector.config import config_from_dict
cfg = config_from_dict(
    {
        "symbols": ["SPY", "QQQ"],
        "storage": {"database": "ticks.db"},
        "realtime_data": {
            "collect_interval_seconds": 0.05,
            "health_check": {"check_interval_seconds": float(sys.argv[2])},
        },
    },
    base_dir=Path(sys.argv[1]),
)
c = Collector(cfg).start()
print(c.run_id, flush=True)
while True:
    time.sleep(1)
"""


def _health(db: Path, capsys, *extra: str) -> tuple[int, str]:
    from robust_collector.cli import main

    code = main(["health", "--db", str(db), *extra])
    return code, capsys.readouterr().out


@pytest.mark.parametrize(
    ("where", "check_interval"),
    [
        # same host: the recorded pid is gone (a zombie until reaped): dead at once, even
        # with the default 60 s check interval that used to read HEALTHY for ~2 minutes
        ("same-host", 60.0),
        # another host (pid unknowable): no heartbeat for max(3 x interval, 3 s)
        ("other-host", 0.5),
    ],
)
def test_health_says_a_sigkilled_collector_is_not_running_within_5s(
    tmp_path, capsys, monkeypatch, where, check_interval
):
    import types

    from robust_collector.health import report as health_report

    if where == "other-host":  # `health` reads from a machine that cannot see the pid
        monkeypatch.setattr(
            health_report, "socket", types.SimpleNamespace(gethostname=lambda: "elsewhere")
        )
    db = tmp_path / "ticks.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(tmp_path), str(check_interval)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip(), proc.stderr.read()
        deadline = time.monotonic() + 30
        while True:  # a live collector first reads HEALTHY, exit 0
            code, out = _health(db, capsys)
            if code == 0:
                break
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, f"never HEALTHY: {out}"
            time.sleep(0.05)
        assert "Overall Status: HEALTHY" in out and " ago" in out
        os.kill(proc.pid, signal.SIGKILL)  # not reaped yet: a zombie, as under a busy parent
        killed = time.monotonic()
        while True:
            code, out = _health(db, capsys)
            elapsed = time.monotonic() - killed
            if code != 0:
                break
            assert elapsed < 10, f"still {code} {elapsed:.1f}s after SIGKILL: {out}"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    with capsys.disabled():
        print(f"\n{where}: `health` said not running {elapsed:.2f}s after SIGKILL")
    assert code == 2, out  # CRITICAL: it died without being stopped
    assert elapsed < 5.0, f"took {elapsed:.1f}s"
    assert f"collector pid {proc.pid} on host " in out and "is not running" in out, out
    assert "last heartbeat" in out and "ago" in out
    code, out = _health(db, capsys, "--json")
    data = json.loads(out)
    assert code == 2 and data["level"] == "CRITICAL" and data["running"] is False
    assert data["state"] == ("dead" if where == "same-host" else "silent")
    assert data["pid"] == proc.pid and data["age_seconds"] >= 0
    if where == "same-host":  # and from another process, as an operator runs it
        p = subprocess.run(
            [sys.executable, "-m", "robust_collector.cli", "health", "--db", str(db)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 2 and "is not running" in p.stdout, p.stdout + p.stderr
