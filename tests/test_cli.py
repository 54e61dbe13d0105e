"""The command line, run as a user runs it: a real subprocess."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robust_collector.cli import build_parser

pytestmark = pytest.mark.integration

FAST = "symbols: [SPY, QQQ, IWM]\nrealtime_data: {collect_interval_seconds: 0.02}\nstorage: {flush_interval_seconds: 0.1}\n"


def cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robust_collector.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_run_with_duration_stores_ticks_and_says_where(tmp_path):
    (tmp_path / "c.yaml").write_text(FAST)
    p = cli(
        "run", "--config", "c.yaml", "--duration", "1", "--status-interval", "0.3", cwd=tmp_path
    )
    assert p.returncode == 0, p.stderr
    db = tmp_path / "data" / "market_data.db"
    assert f"data went to {db}" in p.stdout
    assert "stored" in p.stdout and "SPY" in p.stdout
    rows = dict(
        sqlite3.connect(db).execute("SELECT symbol, count(*) FROM ticks GROUP BY symbol").fetchall()
    )
    assert set(rows) == {"SPY", "QQQ", "IWM"} and min(rows.values()) > 0


def test_run_uses_the_default_config_path_and_db_override(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "spy_qqq_config.yaml").write_text(
        FAST.replace("[SPY, QQQ, IWM]", "[SPY]")
    )
    p = cli("run", "--duration", "0.5", "--db", "out.db", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (
        sqlite3.connect(tmp_path / "out.db").execute("SELECT count(*) FROM ticks").fetchone()[0] > 0
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "realtime_data:\n  retry:\n    max_retries: three\n",
            "realtime_data.retry.max_retries: expected an integer >= 0 and <= 1000, got 'three'",
        ),
        ("realtime_data:\n  retry:\n    max_retry: 3\n", "did you mean 'max_retries'?"),
        ("{{{", "invalid YAML"),
    ],
)
def test_bad_config_one_line_exit_2_no_traceback(tmp_path, text, needle):
    (tmp_path / "bad.yaml").write_text(text)
    p = cli("run", "--config", "bad.yaml", "--duration", "1", cwd=tmp_path)
    assert p.returncode == 2
    assert needle in p.stderr
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_missing_config_file_exit_2(tmp_path):
    p = cli("run", "--config", "nope.yaml", cwd=tmp_path)
    assert (
        p.returncode == 2
        and "nope.yaml: file not found" in p.stderr
        and "Traceback" not in p.stderr
    )


def test_bad_duration_is_a_usage_error(tmp_path):
    p = cli("run", "--duration", "soon", cwd=tmp_path)
    assert p.returncode == 2 and "expected a number of seconds" in p.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_flushes(tmp_path, sig):
    (tmp_path / "c.yaml").write_text(FAST)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "robust_collector.cli",
            "run",
            "--config",
            "c.yaml",
            "--status-interval",
            "0.2",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = tmp_path / "data" / "market_data.db"
    deadline = time.monotonic() + 30
    # wait until the collector has stored something (a condition, not a fixed sleep)
    while True:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if sqlite3.connect(db).execute("SELECT count(*) FROM ticks").fetchone()[0] >= 9:
                break
        except sqlite3.Error:
            pass
        assert time.monotonic() < deadline, "collector stored nothing"
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped after" in out and "Traceback" not in err
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT count(*) FROM ticks").fetchone()[0]
    # the summary's count is what the database holds: nothing buffered was lost
    assert f"({stored} ticks this run)" in out
    seqs = conn.execute(
        "SELECT symbol, min(seq), max(seq), count(*) FROM ticks GROUP BY symbol"
    ).fetchall()
    for _sym, lo, hi, n in seqs:
        assert lo == 1 and hi == n


def test_help_is_complete():
    parser = build_parser()
    text = parser.format_help()
    assert "run" in text
    sub = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, p in sub.items():
        h = p.format_help()
        assert p.description, name
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help"
        assert "usage:" in h


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["health", "--db", "garbage.db"], 3, "file is not a database"),
        (["health", "--db", "empty.db", "--mode", "errors"], 3, "no such table"),
        (["health", "--db", "empty.db", "--mode", "history"], 3, "no such table"),
        (["health", "--mode", "continuous", "--interval", "inf"], 2, "expected a finite number"),
        (["health", "--mode", "continuous", "--count", "0"], 2, "expected a number >= 1"),
        (["recover", "--db", "garbage.db", "--backup-path", "bk"], 2, "cannot open database"),
    ],
)
def test_bad_databases_and_arguments_are_one_line_errors(tmp_path, args, code, needle):
    (tmp_path / "garbage.db").write_bytes(b"this is not sqlite" * 100)
    sqlite3.connect(tmp_path / "empty.db").close()
    (tmp_path / "bk").mkdir()
    (tmp_path / "bk" / "ticks-x-000001.jsonl").write_text("")
    p = cli(*args, cwd=tmp_path)
    assert p.returncode == code, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert needle in p.stderr.strip().splitlines()[-1]  # argparse adds its usage line above


def test_run_into_a_directory_is_not_a_silent_success(tmp_path):
    (tmp_path / "adir").mkdir()
    (tmp_path / "c.yaml").write_text(FAST)
    p = cli("run", "--config", "c.yaml", "--db", "adir", "--duration", "0.5", cwd=tmp_path)
    assert p.returncode == 2  # refused before it starts (issue 16): one line naming the key
    assert "storage.database:" in p.stderr and "is a folder" in p.stderr
    assert p.stderr.count("\n") == 1 and not (tmp_path / "adir.health.json").exists()


def test_run_status_line_shows_the_level_now_not_the_last_snapshot(tmp_path):
    """With the default 60 s check interval the last stored snapshot said HEALTHY long
    after the database was locked and storage went to backup; the status line must
    show the level evaluated when it is printed."""
    (tmp_path / "c.yaml").write_text(
        "symbols: [SPY, QQQ]\n"
        "realtime_data: {collect_interval_seconds: 0.02, backup: {backup_path: bk}}\n"
        "storage: {flush_interval_seconds: 0.1, write_timeout_seconds: 0.1, "
        "breaker_timeout_seconds: 0.2}\n"
    )
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "robust_collector.cli", "run"),
            *("--config", "c.yaml", "--status-interval", "0.2"),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def next_line() -> str:
        line = proc.stdout.readline()
        assert line, "".join(lines[-5:]) + proc.stderr.read()
        lines.append(line)
        return line

    db = tmp_path / "data" / "market_data.db"
    blocker = None
    try:
        deadline = time.monotonic() + 30
        while "HEALTHY  accepted" not in next_line() or not db.exists():
            assert time.monotonic() < deadline, "never HEALTHY"
        blocker = sqlite3.connect(db, timeout=5, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # every write fails: storage goes to backup
        deadline = time.monotonic() + 30
        while "storage BACKUP" not in (line := next_line()):
            assert time.monotonic() < deadline, "storage never went to backup"
        level = line.split("]", 1)[1].split()[0]
        assert level in ("DEGRADED", "UNHEALTHY", "CRITICAL"), line
    finally:
        if blocker is not None:
            blocker.execute("ROLLBACK")
            blocker.close()
        proc.terminate()
        proc.communicate(timeout=60)
    assert proc.returncode == 0


LEVEL_WORDS = "HEALTHY|DEGRADED|UNHEALTHY|CRITICAL|STARTING"


def test_run_status_lines_start_with_a_level_and_label_the_per_symbol_figure(tmp_path):
    """Every status line, the first included, opens with a level; the per-symbol figures
    say what they count (they once read `| SPY 6 | QQQ 6`)."""
    import re

    (tmp_path / "c.yaml").write_text(FAST)
    p = cli(
        *("run", "--config", "c.yaml", "--duration", "0.9", "--status-interval", "0.3"),
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    status = [line for line in p.stdout.splitlines() if line.startswith("[")]
    assert status, p.stdout
    pattern = (
        rf"\[ +\d+\.\ds\] ({LEVEL_WORDS})  accepted \d+  stored \d+  rejects \d+  errors \d+  "
        r"\| stored per symbol: SPY \d+, QQQ \d+, IWM \d+"
    )
    for line in status:
        assert re.fullmatch(pattern, line), line


def test_a_started_collector_status_line_has_a_level_before_its_first_check(make_config):
    """Right after start() (a notebook's `c.start(); c.status().line()`) no health check
    has run yet: the line says STARTING instead of showing no level at all."""
    import dataclasses

    from robust_collector.collector import Collector

    c = Collector(make_config(symbols=["SPY", "QQQ"]))
    assert not c.status().line().startswith("STARTING")  # not started: no level claimed
    c.start()
    try:
        first = c.status()
        assert first.line().split()[0] in LEVEL_WORDS.split("|"), first.line()
        before_check = dataclasses.replace(first, health_level=None)  # the race made certain
        assert before_check.line() == (
            f"STARTING  stored {first.stored}  rejects {first.rejects}  errors {first.errors}  "
            f"| stored per symbol: SPY {first.symbols['SPY'].stored}, "
            f"QQQ {first.symbols['QQQ'].stored}"
        )
    finally:
        c.stop()


def test_run_summary_points_to_recover_and_storage_url_only_when_they_apply(tmp_path):
    """A PostgreSQL server that never answered: the rows are in backup files that remain,
    so the summary says how to replay them, and the hint names storage.url (the
    PostgreSQL setting), not storage.database."""
    (tmp_path / "c.yaml").write_text(
        "symbols: [SPY]\nrealtime_data: {collect_interval_seconds: 0.05, "
        "backup: {backup_path: bk}}\nstorage: {flush_interval_seconds: 0.1}\n"
    )
    url = "postgresql://postgres@127.0.0.1:9/none"  # nothing listens on port 9
    p = cli("run", "--config", "c.yaml", "--db", url, "--duration", "0.8", cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    files = len(list((tmp_path / "bk").glob("*.jsonl")))
    assert files >= 1
    hint = f" ticks went to backup files; {files} file(s) remain; replay them with: "
    assert any(
        line.split(" ", 1)[0].isdigit() and line.endswith(hint + "robust-collector recover")
        for line in p.stdout.splitlines()
    ), p.stdout
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("robust-collector run: nothing reached the database (")
    assert last.endswith("); check --db / storage.url / ROBUST_COLLECTOR_DATABASE_URL"), last


def test_run_summary_does_not_ask_to_recover_files_already_replayed(tmp_path):
    """The database was locked for a while (rows went to backup files), then freed: the
    writer replayed the files by itself, so the summary must not say to run recover."""
    (tmp_path / "c.yaml").write_text(
        "symbols: [SPY, QQQ]\n"
        "realtime_data: {collect_interval_seconds: 0.02, backup: {backup_path: bk}}\n"
        "storage: {flush_interval_seconds: 0.1, write_timeout_seconds: 0.1, "
        "breaker_timeout_seconds: 0.2}\n"
    )
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "robust_collector.cli", "run"),
            *("--config", "c.yaml", "--status-interval", "0.1"),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = tmp_path / "data" / "market_data.db"
    backups = tmp_path / "bk"

    def next_line() -> str:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        return line

    blocker = None
    try:
        deadline = time.monotonic() + 30
        while "HEALTHY  accepted" not in next_line() or not db.exists():
            assert time.monotonic() < deadline, "never HEALTHY"
        blocker = sqlite3.connect(db, timeout=5, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # every write fails: rows go to backup files
        deadline = time.monotonic() + 30
        while "storage BACKUP" not in next_line():
            assert time.monotonic() < deadline, "storage never went to backup"
        blocker.execute("ROLLBACK")
        blocker.close()
        blocker = None
        deadline = time.monotonic() + 30
        while "storage" in next_line() or list(backups.glob("*.jsonl")):
            assert time.monotonic() < deadline, "the backup files were never replayed"
    finally:
        if blocker is not None:
            blocker.execute("ROLLBACK")
            blocker.close()
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "went to backup files, all replayed into the database since" in out, out
    assert "robust-collector recover" not in out
